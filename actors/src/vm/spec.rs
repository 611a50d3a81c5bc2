//! What a VM is meant to be (its spec) and what was last observed of it (its status).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::host::DomainStateName;
use crate::placement::Weigher;

/// When Troupe starts a VM, as KubeVirt's run strategies define them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunPolicy {
    /// Always running: started at creation and restarted whenever it stops, for any reason.
    Always,
    /// Started at creation and restarted when it fails (destroyed, crashed, gone); a guest
    /// that shuts itself down cleanly stays stopped.
    RerunOnFailure,
    /// Started and stopped only by startVm / stopVm; never restarted by Troupe.
    Manual,
    /// Kept stopped: defined but never running.
    Halted,
}

/// Whether the user wants the VM running now (start/stop change it; see docs/vms.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Want {
    Running,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmSpec {
    pub id: String,
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub labels: BTreeMap<String, String>,
    pub anti_affinity_group: Option<String>,
    pub run_policy: RunPolicy,
    pub want: Want,
    /// Host labels a host must carry to take this VM.
    pub host_selector: BTreeMap<String, String>,
    pub weigher: Weigher,
    /// The libvirt domain's name on whichever host holds it: `troupe-<uuid>`.
    pub domain: String,
    /// The libvirt domain's uuid (the id's uuid part).
    pub uuid: String,
    pub created_at: DateTime<Utc>,
}

/// A VM's state, as libvirt last reported it (or why nothing could be asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VmState {
    /// Accepted, no domain defined yet.
    Pending,
    Running,
    Paused,
    ShuttingDown,
    Stopped,
    Crashed,
    Suspended,
    /// Its host has no such domain (undefined behind Troupe's back, or a host rebuilt empty).
    Missing,
    /// Its host cannot be asked (unreachable or down): no claim about the guest is made.
    Unknown,
}

impl VmState {
    pub const ALL: [VmState; 9] = [
        VmState::Pending,
        VmState::Running,
        VmState::Paused,
        VmState::ShuttingDown,
        VmState::Stopped,
        VmState::Crashed,
        VmState::Suspended,
        VmState::Missing,
        VmState::Unknown,
    ];

    pub fn of(state: DomainStateName) -> Self {
        match state {
            DomainStateName::Running | DomainStateName::Blocked => Self::Running,
            DomainStateName::Paused => Self::Paused,
            DomainStateName::ShuttingDown => Self::ShuttingDown,
            DomainStateName::Shutoff => Self::Stopped,
            DomainStateName::Crashed => Self::Crashed,
            DomainStateName::PmSuspended => Self::Suspended,
            DomainStateName::NoState => Self::Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Paused => "PAUSED",
            Self::ShuttingDown => "SHUTTING_DOWN",
            Self::Stopped => "STOPPED",
            Self::Crashed => "CRASHED",
            Self::Suspended => "SUSPENDED",
            Self::Missing => "MISSING",
            Self::Unknown => "UNKNOWN",
        }
    }
}

/// CPU time and memory of a VM, sampled from libvirt at each reconcile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct VmStats {
    pub cpu_time_ns: u64,
    pub memory_kib: u64,
    /// CPU use between the last two samples, in cores (1.0 = one core busy).
    pub cpu_cores: f64,
    pub sampled_at: Option<DateTime<Utc>>,
}

/// How a VM moved between hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MigrationKind {
    /// libvirt's live migration: the guest kept running.
    Live,
    /// Troupe's move where the driver cannot migrate: defined and started on the target from
    /// the same spec, then destroyed and undefined on the source (the guest restarts).
    Orchestrated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MigrationPhase {
    Pending,
    Scheduling,
    PreparingTarget,
    Running,
    Succeeded,
    Failed,
}

impl MigrationPhase {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Scheduling => "SCHEDULING",
            Self::PreparingTarget => "PREPARING_TARGET",
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
        }
    }

    pub fn is_over(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// A VM's current or last migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Migration {
    pub id: String,
    pub source: String,
    pub target: Option<String>,
    pub phase: MigrationPhase,
    pub kind: Option<MigrationKind>,
    /// Why it was started: `migrateVm`, `drain` or `evacuation`.
    pub reason: String,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmStatus {
    /// The host holding the VM; `None` before it is placed.
    pub host: Option<String>,
    pub state: VmState,
    /// libvirt's reason for the state (`booted`, `destroyed`, `shutdown`, ...).
    pub reason: Option<String>,
    pub observed_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Times Troupe started the VM again by its run policy.
    pub restarts: u32,
    pub stats: VmStats,
    pub migration: Option<Migration>,
}

impl VmStatus {
    pub fn new(host: Option<String>) -> Self {
        Self {
            host,
            state: VmState::Pending,
            reason: None,
            observed_at: None,
            last_error: None,
            restarts: 0,
            stats: VmStats::default(),
            migration: None,
        }
    }
}

/// A VM as listed: spec and status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmView {
    pub spec: VmSpec,
    pub status: VmStatus,
}

/// A request to create a VM, as it crosses the API and the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateVmRequest {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub labels: Vec<(String, String)>,
    pub anti_affinity_group: Option<String>,
    pub run_policy: RunPolicy,
    pub host_selector: Vec<(String, String)>,
    pub weigher: Weigher,
    /// A host to put it on, instead of the placer's choice (still checked by the filters).
    pub host: Option<String>,
}

impl CreateVmRequest {
    pub fn new(name: impl Into<String>, vcpus: u32, memory_mib: u64) -> Self {
        Self {
            name: name.into(),
            vcpus,
            memory_mib,
            labels: Vec::new(),
            anti_affinity_group: None,
            run_policy: RunPolicy::Always,
            host_selector: Vec::new(),
            weigher: Weigher::Spread,
            host: None,
        }
    }

    pub fn validate(&self) -> Result<(), ApiError> {
        crate::host::check_name("name", &self.name)?;
        if !(1..=1024).contains(&self.vcpus) {
            return Err(ApiError::invalid("vcpus must be between 1 and 1024"));
        }
        if !(16..=16 * 1024 * 1024).contains(&self.memory_mib) {
            return Err(ApiError::invalid("memoryMiB must be between 16 and 16777216"));
        }
        if let Some(g) = &self.anti_affinity_group {
            crate::host::check_name("antiAffinityGroup", g)?;
        }
        crate::host::check_labels("labels", &self.labels)?;
        crate::host::check_labels("hostSelector", &self.host_selector)
    }
}

/// Which VMs a listing shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmFilter {
    pub host: Option<String>,
    pub state: Option<VmState>,
    /// Every pair must be among the VM's labels.
    pub labels: Vec<(String, String)>,
}

impl VmFilter {
    pub fn matches(&self, spec: &VmSpec, status: &VmStatus) -> bool {
        self.host.as_ref().is_none_or(|h| status.host.as_ref() == Some(h))
            && self.state.is_none_or(|s| status.state == s)
            && self.labels.iter().all(|(k, v)| spec.labels.get(k) == Some(v))
    }
}

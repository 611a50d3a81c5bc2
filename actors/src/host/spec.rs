//! What a host is meant to be (its spec, durable) and what is known of it now.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::NodeCapacity;
use crate::error::ApiError;
use crate::placement::Overcommit;

/// What the operator asked of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostMode {
    /// Takes new VMs.
    Active,
    /// Its VMs are being moved away; takes no new ones.
    Draining,
    /// Holds no VMs and takes none.
    Maintenance,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSpec {
    pub id: String,
    pub name: String,
    pub uri: String,
    /// The node whose driver holds the connection.
    pub node: String,
    pub labels: BTreeMap<String, String>,
    pub overcommit: Overcommit,
    pub reserved_memory_mib: u64,
    pub mode: HostMode,
    /// Made by the node from `simulated_hosts` (a `test:///` node file in the data dir).
    pub simulated: bool,
    pub created_at: DateTime<Utc>,
}

impl HostSpec {
    /// `name@node`, the node being the one that made the host (its id says which): unique in
    /// the cluster where names are not (every node's simulated hosts are `sim-1`…), and kept
    /// when the host's driver moves to another node, which may have a `sim-1` of its own.
    pub fn qualified_name(&self) -> String {
        let made_by = crate::ids::home(&self.id).unwrap_or(&self.node);
        format!("{}@{made_by}", self.name)
    }
}

/// The host's state: its link first (a host that cannot be reached is UNREACHABLE or DOWN
/// whatever it was asked to be), then its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HostState {
    Up,
    Draining,
    Maintenance,
    /// The connection is lost (or never opened); the driver reconnects with backoff.
    Unreachable,
    /// Unreachable for longer than `host_down_after_ms`: its VMs are evacuated.
    Down,
    /// Not reported to this node yet: the node that drives it has not answered a beat of
    /// this node's since it started (see [`HostView::seen_at`]).
    Unknown,
}

impl HostState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Up => "UP",
            Self::Draining => "DRAINING",
            Self::Maintenance => "MAINTENANCE",
            Self::Unreachable => "UNREACHABLE",
            Self::Down => "DOWN",
            Self::Unknown => "UNKNOWN",
        }
    }

    /// Why a host in this state, its capacity `known` or not, takes no new VM (`None`: it
    /// takes them), in the placer's words.
    pub fn refuses_vms(self, known: bool) -> Option<&'static str> {
        match (self, known) {
            (_, false) => Some("its capacity is not known yet (never connected)"),
            (Self::Up, _) => None,
            (Self::Draining, _) => Some("host is DRAINING"),
            (Self::Maintenance, _) => Some("host is in MAINTENANCE"),
            (Self::Unreachable, _) => Some("host is UNREACHABLE"),
            (Self::Down, _) => Some("host is DOWN"),
            (Self::Unknown, _) => Some("host is UNKNOWN"),
        }
    }
}

/// A drain's progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DrainProgress {
    pub total: u32,
    pub moved: u32,
    pub failed: u32,
    pub done: bool,
}

/// A host as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostView {
    pub spec: HostSpec,
    pub state: HostState,
    /// Since when it has been in this state.
    pub since: DateTime<Utc>,
    /// CPUs and memory as libvirt reported them at the last connect.
    pub capacity: Option<NodeCapacity>,
    /// What its VMs have been promised.
    pub allocated_vcpus: u64,
    pub allocated_memory_mib: u64,
    pub vcpu_limit: u64,
    pub memory_limit_mib: u64,
    pub vms: u32,
    pub last_error: Option<String>,
    pub drain: Option<DrainProgress>,
    pub outbound_migrations: u32,
    /// When the node that drives it reported this: now on that node, else the beat of that
    /// node's this node last heard (`None` when none has reached it yet).
    #[serde(default)]
    pub seen_at: Option<DateTime<Utc>>,
    /// The domains its driver's last reconcile sweep (or connect) listed, Troupe's or not;
    /// `None` before the driver has listed them once.
    #[serde(default)]
    pub listed: Option<super::Listed>,
}

impl HostView {
    /// A host whose node has not reported it to this node yet: its record, state UNKNOWN.
    pub fn unreported(spec: HostSpec) -> Self {
        HostView {
            since: spec.created_at,
            spec,
            state: HostState::Unknown,
            capacity: None,
            allocated_vcpus: 0,
            allocated_memory_mib: 0,
            vcpu_limit: 0,
            memory_limit_mib: 0,
            vms: 0,
            last_error: None,
            drain: None,
            outbound_migrations: 0,
            seen_at: None,
            listed: None,
        }
    }
}

/// A request to add a host, as it crosses the API and the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddHostRequest {
    pub name: String,
    pub uri: String,
    pub node: Option<String>,
    pub labels: Vec<(String, String)>,
    pub overcommit: Option<Overcommit>,
    pub reserved_memory_mib: Option<u64>,
}

impl AddHostRequest {
    pub fn validate(&self) -> Result<(), ApiError> {
        super::check_name("name", &self.name)?;
        super::check_labels("labels", &self.labels)?;
        let scheme = self.uri.split_once(':').map(|(s, _)| s).unwrap_or("");
        let known = [
            "test",
            "qemu",
            "qemu+ssh",
            "qemu+tcp",
            "qemu+tls",
            "qemu+unix",
            "xen",
            "lxc",
            "ch",
        ];
        if !known.contains(&scheme) || self.uri.len() > 1024 || self.uri.contains(char::is_whitespace) {
            return Err(ApiError::invalid(format!(
                "uri {:?}: a libvirt URI such as test:///default, qemu:///system or qemu+ssh://user@host/system",
                self.uri
            )));
        }
        if self.uri.starts_with("test:///") && self.uri != "test:///default" && !self.uri.ends_with(".xml") {
            return Err(ApiError::invalid(
                "uri: a test:/// host is test:///default or test:///<absolute path to a node XML file>",
            ));
        }
        if let Some(o) = self.overcommit {
            if !(0.1..=64.0).contains(&o.cpu) || !(0.1..=8.0).contains(&o.memory) {
                return Err(ApiError::invalid(
                    "overcommit: cpu must be within 0.1..64 and memory within 0.1..8",
                ));
            }
        }
        if self.reserved_memory_mib.is_some_and(|m| m > 1 << 30) {
            return Err(ApiError::invalid("reservedMemoryMiB is too large"));
        }
        Ok(())
    }
}

//! What an experiment is made of, as its callers see it: the input, the faults and their
//! targets, the injections with their expected and observed effects, the report.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use troupe_runtime::events::Event;

use super::select::Selector;

/// What a fault does to its target; each has a documented revert (docs/faults.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultAction {
    /// The child fails as if it panicked: its supervisor restarts it (and the siblings its
    /// strategy takes along). Any child of the tree. Nothing to revert.
    Crash,
    /// An actor's loop is held (an agent, a supervisor, the scheduler, a swarm coordinator,
    /// a host driver, the cluster link or the services endpoint with their service actors,
    /// or a VM picked by `ids` with `kinds: ["VM"]`): it takes no message (its mailbox fills,
    /// calls time out) until the revert releases it.
    Hang,
    /// SIGKILL of an agent's process groups behind Troupe's back. Nothing to revert.
    ProcessKill,
    /// SIGSTOP of an agent's process groups behind Troupe's back; the revert sends SIGCONT.
    ProcessPause,
    /// A host's connection broken (every libvirt call fails, as on a lost link; its domains
    /// keep running); the revert reconnects it.
    HostDisconnect,
    /// Every libvirt call to a host blocks, as on a black-holed link (calls time out); the
    /// revert reconnects it.
    HostHang,
    /// The target nodes send nothing to the nodes of `to` (every other member by default),
    /// and, both ways unless `params.oneWay`, they nothing back: beats, Raft messages and
    /// calls alike, re-dials included. The revert heals the cut; recovered when every node of
    /// both sides is UP again.
    Partition,
    /// The target node's store rejects every batch that writes to `params.tables` (any table
    /// when not given), as a database that refuses a batch; the revert lifts it.
    StoreReject,
    /// Each commit of the target node's store waits `params.delayMs` (default 500) first, as
    /// behind a slow disk; the revert lifts it.
    StoreSlowCommit,
    /// The target node's store refuses every write that adds data (values, events) as a full
    /// disk would, UNAVAILABLE to the callers; deletes go through and the node stays up. The
    /// revert frees the disk.
    DiskFull,
    /// Each message delivered to the target agent (from `params.from`, any sender by default)
    /// waits `params.delayMs` (default 500) ± `params.jitterMs` first, with
    /// `params.probability` (default 1); the revert lifts it.
    MessageDelay,
    /// Each message to the target agent (from `params.from`, any sender by default) is lost
    /// in transit with `params.probability` (default 1): its sender hears nothing until its
    /// timeout, and it goes to the dead-letter queue; the revert lifts it.
    MessageDrop,
    /// The target VM's domain is destroyed behind Troupe's back (VMs picked by `ids`);
    /// nothing to revert: its run policy decides what Troupe does.
    DomainDestroy,
    /// The target VM's domain is destroyed and undefined behind Troupe's back.
    DomainUndefine,
}

impl FaultAction {
    /// Whether it hits VMs (picked by id; they are not children of the tree).
    pub fn reaches_vms(self) -> bool {
        matches!(self, Self::DomainDestroy | Self::DomainUndefine)
    }

    /// Whether it hits nodes (picked by `nodes`) rather than children of the tree.
    pub fn reaches_nodes(self) -> bool {
        matches!(
            self,
            Self::Partition | Self::StoreReject | Self::StoreSlowCommit | Self::DiskFull
        )
    }

    /// Whether it is a fault of a node's store.
    pub fn reaches_store(self) -> bool {
        matches!(self, Self::StoreReject | Self::StoreSlowCommit | Self::DiskFull)
    }

    /// Whether it is a fault of the messages to an agent.
    pub fn reaches_messages(self) -> bool {
        matches!(self, Self::MessageDelay | Self::MessageDrop)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultSpec {
    pub action: FaultAction,
    pub target: Selector,
    /// The far side of a PARTITION.
    pub to: Option<Selector>,
    /// The action's settings (see each action), a JSON object or null.
    pub params: serde_json::Value,
}

impl FaultSpec {
    /// Whether it hits VMs, named by id (they are their host driver's children, not the
    /// tree's): a domain fault, or a HANG whose selector's kinds are VM.
    pub fn hits_vms(&self) -> bool {
        self.action.reaches_vms()
            || (self.action == FaultAction::Hang
                && !self.target.kinds.is_empty()
                && self.target.kinds.iter().all(|k| k == "VM"))
    }

    /// Whether it runs on one node, the one `target.nodes` names: a fault of a tree, or a
    /// VM's HANG (its actor is held where its host is driven). Node faults and domain
    /// faults are carried out from wherever the experiment runs.
    pub fn runs_on_its_node(&self) -> bool {
        !self.action.reaches_nodes() && (!self.hits_vms() || self.action == FaultAction::Hang)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExperimentInput {
    pub name: String,
    pub faults: Vec<FaultSpec>,
    /// How long armed faults stay armed (capped by `fault_max_duration_ms`); without it, until
    /// stopped, halted or the lease lapses.
    pub duration: Option<Duration>,
    /// The time between rounds, when `count` is above 1.
    pub every: Option<Duration>,
    /// How many rounds: each picks its targets again and injects them.
    pub count: u32,
    pub seed: Option<u64>,
    /// How long after its injection each target has to recover.
    pub recover_within: Duration,
    /// Invariants to check at the end (all of [`INVARIANTS`] when empty).
    pub invariants: Vec<String>,
    pub allow_escalation: bool,
    /// Everything reverts unless `renewExperiment` comes within this.
    pub lease: Option<Duration>,
    pub dry_run: bool,
}

impl ExperimentInput {
    /// One fault, held until stopped, recovering within 30 s, escalation refused.
    pub fn one(name: impl Into<String>, fault: FaultSpec) -> Self {
        Self {
            name: name.into(),
            faults: vec![fault],
            duration: None,
            every: None,
            count: 1,
            seed: None,
            recover_within: Duration::from_secs(30),
            invariants: Vec::new(),
            allow_escalation: false,
            lease: None,
            dry_run: false,
        }
    }
}

/// The invariants an experiment can check.
pub const INVARIANTS: [&str; 6] = [
    "TREE_RESTORED",
    "RESTARTS_MATCH_STRATEGY",
    "NO_ESCALATION",
    "PEERS_UP",
    "TASKS_KEPT",
    "VMS_SINGLE",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExperimentState {
    Pending,
    Active,
    Recovering,
    Passed,
    Failed,
    Aborted,
}

impl ExperimentState {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Passed | Self::Failed | Self::Aborted)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expected {
    pub id: String,
    /// RESTART, ESCALATE, GIVE_UP, HELD, PROCESS_REPLACED, PAUSED_THEN_CONTINUED,
    /// UNREACHABLE_THEN_UP, CUT_OFF_THEN_UP, WRITES_REJECTED, COMMITS_SLOWED, WRITES_REFUSED,
    /// MESSAGES_DELAYED, MESSAGES_DROPPED, DOMAIN_RECREATED, LEFT_STOPPED.
    pub effect: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Injection {
    pub id: String,
    pub action: FaultAction,
    pub target: String,
    pub kind: String,
    pub injected_at: DateTime<Utc>,
    /// When the fault was at full effect (the failure seen, the loop held, the signal sent).
    pub effective_at: Option<DateTime<Utc>>,
    pub reverted_at: Option<DateTime<Utc>>,
    pub recovered_at: Option<DateTime<Utc>>,
    pub time_to_detect_ms: Option<i64>,
    pub time_to_recover_ms: Option<i64>,
    /// PENDING, ARMED, RECOVERED, NOT_RECOVERED, DRY_RUN.
    pub outcome: String,
    pub expected: Vec<Expected>,
    #[serde(with = "shared_events")]
    pub observed: Vec<Arc<Event>>,
    /// The supervisor that owns the target.
    pub supervisor: String,
    /// Process groups hit (PROCESS_*).
    pub(crate) groups: Vec<u32>,
    /// Nodes its node faults were armed on (PARTITION: both sides).
    pub(crate) nodes: Vec<String>,
    /// The first event after the injection with this seq or later is its.
    pub(crate) after_seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvariantResult {
    pub name: String,
    pub ok: bool,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoveryReport {
    /// PASS or FAIL.
    pub verdict: String,
    /// Why, in a sentence.
    pub reason: String,
    pub injected: usize,
    pub recovered: usize,
    pub max_time_to_recover_ms: Option<i64>,
    pub invariants: Vec<InvariantResult>,
    #[serde(with = "shared_events")]
    pub unexpected: Vec<Arc<Event>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Experiment {
    pub id: String,
    pub name: String,
    pub state: ExperimentState,
    pub seed: u64,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub injections: Vec<Injection>,
    pub report: Option<RecoveryReport>,
}

#[cfg(test)]
impl Experiment {
    /// One with no injection and no report, in `state`.
    pub(crate) fn bare(id: &str, state: ExperimentState) -> Self {
        Self {
            id: id.into(),
            name: "x".into(),
            state,
            seed: 7,
            started_at: Utc::now(),
            finished_at: state.is_final().then(Utc::now),
            injections: Vec::new(),
            report: None,
        }
    }
}

/// A fault armed now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultGate {
    pub experiment: String,
    pub injection: String,
    pub action: FaultAction,
    pub target: String,
    pub since: DateTime<Utc>,
}

/// Events shared with the run's observer, sent to a peer as plain events.
mod shared_events {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use troupe_runtime::events::Event;

    pub fn serialize<S: Serializer>(events: &[Arc<Event>], s: S) -> Result<S::Ok, S::Error> {
        let plain: Vec<&Event> = events.iter().map(|e| e.as_ref()).collect();
        plain.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Arc<Event>>, D::Error> {
        Ok(Vec::<Event>::deserialize(d)?.into_iter().map(Arc::new).collect())
    }
}

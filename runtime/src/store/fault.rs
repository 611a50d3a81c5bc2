//! Fault injection: a hook the writer asks about every batch before committing it.
//!
//! A [`Fault::Reject`] fails that batch alone, as a batch the database refuses would (a
//! value too large); a [`Fault::Full`] fails it as a full disk would (the node stays up and
//! refuses writes); a [`Fault::Delay`] holds the group's commit; a [`Fault::Fail`] fails the
//! commit as a broken disk would, which is fatal to the store. With the `fault-injection`
//! feature, [`file_gates`] turns files in a directory into faults, so a test can break a
//! running node's store from outside. [`ArmedFaults`] are the faults a fault experiment arms
//! in memory (a node started with `--fault-injection`): the store's, and the cuts between
//! nodes that the cluster's calls check.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::Batch;

/// The table fault experiments keep their records in (id → record, written by the node
/// each runs on, so every member reads every experiment): the one table whose writes pass
/// the faults experiments arm, as their events do.
pub const EXPERIMENTS: super::Table = super::Table::new("experiments");

/// What a fault hook makes of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Refuse this batch; the others of its group commit.
    Reject,
    /// Fail the commit as an I/O error would: the store stops.
    Fail,
    /// Refuse this batch as a full disk would: the store stays up.
    Full,
    /// Commit it, after holding the group's commit this long.
    Delay(Duration),
}

pub type FaultHook = Arc<dyn Fn(&Batch) -> Option<Fault> + Send + Sync>;

/// Faults from files in `dir`: `commit-fail` fails the next commit; `reject-<table>` rejects
/// every batch that writes to that table; `hold-<table>` holds the writer before a batch that
/// writes to that table (at most a minute), with `holding-<table>` present while it does, so
/// a test can line up two requests at the moment one of them writes. Checked at every commit.
#[cfg(feature = "fault-injection")]
pub fn file_gates(dir: std::path::PathBuf) -> FaultHook {
    Arc::new(move |batch: &Batch| {
        if dir.join("commit-fail").exists() {
            return Some(Fault::Fail);
        }
        hold(&dir, batch);
        let rejected = batch.ops.iter().any(|op| match op {
            super::Op::Put { table, .. } | super::Op::Delete { table, .. } => {
                dir.join(format!("reject-{}", table.name())).exists()
            }
            super::Op::Event(_) | super::Op::Require { .. } => false,
        });
        rejected.then_some(Fault::Reject)
    })
}

#[cfg(feature = "fault-injection")]
fn hold(dir: &std::path::Path, batch: &Batch) {
    let gate = |table: &str| dir.join(format!("hold-{table}"));
    let held = batch.ops.iter().find_map(|op| match op {
        super::Op::Put { table, .. } | super::Op::Delete { table, .. } if gate(table.name()).exists() => {
            Some(table.name())
        }
        _ => None,
    });
    if let Some(table) = held {
        hold_while(dir, table);
    }
}

/// Holds this thread while the gate `hold-<name>` is set in `dir` (at most a minute), with
/// `holding-<name>` present while it does, so a test can tell it is held.
fn hold_while(dir: &std::path::Path, name: &str) {
    let (gate, marker) = (dir.join(format!("hold-{name}")), dir.join(format!("holding-{name}")));
    let _ = std::fs::write(&marker, b"");
    let until = Instant::now() + Duration::from_secs(60);
    while gate.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_file(&marker);
}

/// The file gates of [`file_gates`] in `dir` when the `fault-injection` feature is on and
/// the directory exists when the store opens; nothing otherwise, so a release node (and any
/// node not set up for fault tests) has no fault hook at all.
pub fn gates_in(dir: std::path::PathBuf) -> Option<FaultHook> {
    #[cfg(feature = "fault-injection")]
    return dir.is_dir().then(|| file_gates(dir));
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = dir;
        None
    }
}

/// Gates by name in a directory: a gate is set while the file of its name exists. Made
/// only when the `fault-injection` feature is on and the directory exists when the node
/// starts (see [`gates_in`]); used for faults outside the store, such as a partition
/// between nodes (`partition-<peer>`).
#[derive(Debug, Clone)]
pub struct NamedGates(std::path::PathBuf);

impl NamedGates {
    pub fn is_set(&self, name: &str) -> bool {
        self.0.join(name).exists()
    }
}

/// The node's named gates, for the faults of parts that hold no handle to them (the state
/// machine's `hold-apply`, the lease keeper's `hold-work`, the scheduler's `lose-enqueue`).
static GATES: std::sync::OnceLock<NamedGates> = std::sync::OnceLock::new();

/// Sets the gates [`gate_is_set`] reads (once per process: the node's start, with those of
/// [`named_gates_in`]).
pub fn set_gates(gates: Option<NamedGates>) {
    if let Some(gates) = gates {
        let _ = GATES.set(gates);
    }
}

/// Whether the node's gate `name` is set (never without the `fault-injection` feature).
pub fn gate_is_set(name: &str) -> bool {
    GATES.get().is_some_and(|gates| gates.is_set(name))
}

/// Holds the state machine before it applies entries or installs a snapshot while the gate
/// `hold-apply` is set (at most a minute), with `holding-apply` present while it does: its
/// log takes entries, its tables do not, as on a member that has a long log to apply or a
/// large snapshot to install.
pub(super) async fn hold_apply() {
    hold_at("apply").await;
}

/// Holds the caller while the node's gate `hold-<name>` is set (at most a minute), with
/// `holding-<name>` present while it does (never without the `fault-injection` feature):
/// for a test to stop a task at one point, such as the leader's judgement of its members
/// between its confirmation and its reading of their silence (`hold-judge`).
pub async fn hold_at(name: &'static str) {
    let Some(gates) = GATES.get().filter(|gates| gates.is_set(&format!("hold-{name}"))) else {
        return;
    };
    let dir = gates.0.clone();
    let _ = tokio::task::spawn_blocking(move || hold_while(&dir, name)).await;
}

/// The [`NamedGates`] of `dir`, as [`gates_in`] decides for the store's.
pub fn named_gates_in(dir: std::path::PathBuf) -> Option<NamedGates> {
    #[cfg(feature = "fault-injection")]
    return dir.is_dir().then_some(NamedGates(dir));
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = dir;
        None
    }
}

/// What an experiment arms on a node.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum NodeFault {
    /// Batches that write to one of these tables (any table when empty) are rejected.
    Reject { tables: Vec<String> },
    /// Every commit waits this long first.
    SlowCommit { delay: Duration },
    /// Batches that put anything (a value, an event) are refused as on a full disk; those
    /// that only delete go through.
    DiskFull,
    /// Nothing is sent to these nodes: beats, Raft messages and calls alike.
    Cut { peers: Vec<String> },
}

struct Armed {
    id: String,
    fault: NodeFault,
    /// It disarms itself then, even if whoever armed it is gone.
    until: Instant,
    since: DateTime<Utc>,
    hits: u64,
    first_hit: Option<DateTime<Utc>>,
}

/// How often an armed fault was met, and first when.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Hits {
    pub hits: u64,
    pub first: Option<DateTime<Utc>>,
}

/// The faults armed in this node's memory (see the module). Each has an expiry, so a node
/// whose experiment's owner died or was cut off heals on its own; a restart clears them all.
#[derive(Clone, Default)]
pub struct ArmedFaults(Arc<Mutex<Vec<Armed>>>);

impl std::fmt::Debug for ArmedFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ArmedFaults").field(&self.armed().len()).finish()
    }
}

impl ArmedFaults {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Armed>> {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        all.retain(|a| a.until > now);
        all
    }

    /// Arms `fault` as `id` (replacing one armed as `id` before) until `until`.
    pub fn arm(&self, id: &str, fault: NodeFault, until: Instant) {
        let mut all = self.lock();
        all.retain(|a| a.id != id);
        all.push(Armed {
            id: id.to_owned(),
            fault,
            until,
            since: Utc::now(),
            hits: 0,
            first_hit: None,
        });
    }

    /// Disarms `id`; how often it was met (nothing when it was not armed, or expired).
    pub fn disarm(&self, id: &str) -> Option<Hits> {
        let mut all = self.lock();
        let at = all.iter().position(|a| a.id == id)?;
        let a = all.remove(at);
        Some(Hits {
            hits: a.hits,
            first: a.first_hit,
        })
    }

    /// How often `id` was met so far.
    pub fn hits(&self, id: &str) -> Option<Hits> {
        self.lock().iter().find(|a| a.id == id).map(|a| Hits {
            hits: a.hits,
            first: a.first_hit,
        })
    }

    /// What is armed now: each fault's id, the fault, and since when.
    pub fn armed(&self) -> Vec<(String, NodeFault, DateTime<Utc>)> {
        self.lock()
            .iter()
            .map(|a| (a.id.clone(), a.fault.clone(), a.since))
            .collect()
    }

    /// Whether nothing may be sent to `peer` now (and counts the refusal).
    pub fn cut_off(&self, peer: &str) -> bool {
        let mut all = self.lock();
        let mut cut = false;
        for a in all.iter_mut() {
            if let NodeFault::Cut { peers } = &a.fault {
                if peers.iter().any(|p| p == peer) {
                    hit(a);
                    cut = true;
                }
            }
        }
        cut
    }

    /// The store's faults for `batch`: a refusal first, else the longest delay. A batch of
    /// an experiment's own records alone (its events, its record in [`EXPERIMENTS`])
    /// passes, so its history and report stay whole.
    pub fn check(&self, batch: &Batch) -> Option<Fault> {
        let own = |kind: &str| {
            ["EXPERIMENT_", "FAULT_", "RECOVERY_", "INVARIANT_"]
                .iter()
                .any(|p| kind.starts_with(p))
        };
        let own_op = |op: &super::Op| match op {
            super::Op::Event(e) => own(&e.kind),
            super::Op::Put { table, .. } | super::Op::Delete { table, .. } | super::Op::Require { table, .. } => {
                *table == EXPERIMENTS
            }
        };
        if !batch.ops.is_empty() && batch.ops.iter().all(own_op) {
            return None;
        }
        let mut all = self.lock();
        let mut delay: Option<Duration> = None;
        for a in all.iter_mut() {
            let fault = match &a.fault {
                NodeFault::Reject { tables } => batch
                    .ops
                    .iter()
                    .any(|op| match op {
                        super::Op::Put { table, .. } | super::Op::Delete { table, .. } => {
                            tables.is_empty() || tables.iter().any(|t| t == table.name())
                        }
                        super::Op::Event(_) | super::Op::Require { .. } => false,
                    })
                    .then_some(Fault::Reject),
                NodeFault::DiskFull => batch
                    .ops
                    .iter()
                    .any(|op| matches!(op, super::Op::Put { .. } | super::Op::Event(_)))
                    .then_some(Fault::Full),
                NodeFault::SlowCommit { delay: d } => (!batch.is_empty()).then_some(Fault::Delay(*d)),
                NodeFault::Cut { .. } => None,
            };
            match fault {
                Some(Fault::Delay(d)) => {
                    hit(a);
                    delay = Some(delay.map_or(d, |x| x.max(d)));
                }
                Some(refused) => {
                    hit(a);
                    return Some(refused);
                }
                None => {}
            }
        }
        delay.map(Fault::Delay)
    }

    /// A store hook of these faults, after `other`'s (the file gates) when there is one.
    pub fn hook(&self, other: Option<FaultHook>) -> FaultHook {
        let armed = self.clone();
        Arc::new(move |batch: &Batch| {
            if let Some(f) = other.as_ref().and_then(|o| o(batch)) {
                return Some(f);
            }
            armed.check(batch)
        })
    }
}

fn hit(a: &mut Armed) {
    a.hits += 1;
    a.first_hit.get_or_insert_with(Utc::now);
}

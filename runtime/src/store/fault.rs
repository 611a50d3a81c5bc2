//! Fault injection for tests: a hook the writer asks about every batch before committing it.
//!
//! A [`Fault::Reject`] fails that batch alone, as a batch the database refuses would (a
//! value too large); a [`Fault::Fail`] fails the commit as a broken disk would, which is
//! fatal to the store. With the `fault-injection` feature, [`file_gates`] turns files in a
//! directory into faults, so a test can break a running node's store from outside.

use std::sync::Arc;

use super::Batch;

/// What a fault hook makes of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Refuse this batch; the others of its group commit.
    Reject,
    /// Fail the commit as an I/O error would: the store stops.
    Fail,
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
    let Some(table) = held else { return };
    let marker = dir.join(format!("holding-{table}"));
    let _ = std::fs::write(&marker, b"");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while gate(table).exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(10));
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

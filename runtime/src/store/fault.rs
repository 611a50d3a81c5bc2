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
/// every batch that writes to that table. Checked at every commit.
#[cfg(feature = "fault-injection")]
pub fn file_gates(dir: std::path::PathBuf) -> FaultHook {
    Arc::new(move |batch: &Batch| {
        if dir.join("commit-fail").exists() {
            return Some(Fault::Fail);
        }
        let rejected = batch.ops.iter().any(|op| match op {
            super::Op::Put { table, .. } | super::Op::Delete { table, .. } => {
                dir.join(format!("reject-{}", table.name())).exists()
            }
            super::Op::Event(_) => false,
        });
        rejected.then_some(Fault::Reject)
    })
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

//! The log's writer: writes what the log store hands it (appends, truncations, purges, the
//! vote) to the log's files in the order it was handed, each followed by a flush that the
//! files' own thread makes durable (writing and syncing in one go whatever waits for it),
//! and says how far the files got.
//!
//! openraft 0.9 waits inside its core for an append to be flushed before it sends the
//! entries to the followers, so a leader's fsync and its followers' ran one after the other
//! on every write's path. The log store now tells openraft an append is done once its entries
//! are readable (in the files' memory, their flush under way), and the leader's fsync runs
//! while the entries travel. Raft's safety then rests on what leaves a node, which waits here
//! until the entries it speaks for are durable ([`Durable::covering`]):
//!
//! - a follower's answer that it holds entries up to an index, before it is sent
//!   (`network::serve`);
//! - on the leader, a follower's answer that it holds entries up to an index, before openraft
//!   counts it: an entry then commits only once the leader holds it durably as well as the
//!   majority that answered (`network::Client`);
//! - a commit index sent to the followers (`network::Client`), and every apply (`machine`):
//!   where the leader alone makes a majority, nothing it has not made durable is applied,
//!   here or elsewhere.
//!
//! A crash loses only entries nobody was told about: a member that restarts without them is
//! like one that crashed before appending them.
//!
//! The writes are made on the caller's thread (the Raft core's) and cost it no more than a
//! copy into the files' memory; their flushes are answered on the files' thread. An earlier
//! build had a thread of its own between the two, which cost every append two more hand-offs
//! between threads on every member.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use openraft::{LogId, Vote};
use tokio::sync::watch;

use super::files::{self, Done, Wal};
use crate::store::raft::NodeId;
use crate::store::StoreError;

/// What one job writes.
pub(super) enum Work {
    /// Entries by log id, encoded, and the committed log id openraft saved last.
    Append {
        entries: Vec<(LogId<NodeId>, Vec<u8>)>,
        committed: Option<LogId<NodeId>>,
    },
    /// Entries from this index on are gone.
    Truncate(u64),
    /// Entries up to this log id are gone (the tables must be durable first: the log store
    /// makes them so).
    Purge(LogId<NodeId>),
    /// The vote.
    Vote(Vote<NodeId>),
}

impl Work {
    fn bytes(&self) -> usize {
        match self {
            Self::Append { entries, .. } => entries.iter().map(|(_, e)| e.len()).sum(),
            Self::Vote(_) | Self::Truncate(_) | Self::Purge(_) => 0,
        }
    }
}

/// How far the files got: every job up to this number is durable, or their writes failed.
#[derive(Debug, Clone, PartialEq)]
enum Flushed {
    Through(u64),
    Failed(String),
}

/// An append waits until it is durable when more than this many bytes wait for the files.
const WAITING_BYTES: usize = 64 << 20;

struct Queue {
    /// The number the next job gets; 0 is "nothing yet".
    next: u64,
    /// The entries handed and not yet durable: index → the job that writes it.
    pending: BTreeMap<u64, u64>,
    /// The bytes of the jobs handed and not yet durable.
    waiting: usize,
}

/// The handle on the log's writer: cheap to clone, shared by the log store, the state
/// machine and the network.
#[derive(Clone)]
pub(crate) struct Durable {
    queue: Arc<Mutex<Queue>>,
    flushed: watch::Receiver<Flushed>,
    /// Told by each flush, on the files' thread.
    tell: Arc<watch::Sender<Flushed>>,
    /// The log's files, which the writer writes and the log store reads. Locked before the
    /// queue where both are: a job's number and its place in the files go together.
    wal: Wal,
    /// The jobs held out of the files while a test holds the log ([`Durable::hold`]).
    #[cfg(test)]
    held: Arc<Mutex<Option<HeldJobs>>>,
}

impl Durable {
    /// The writer of the log in `wal`.
    pub(super) fn new(wal: Wal) -> Self {
        let (tell, flushed) = watch::channel(Flushed::Through(0));
        Self {
            queue: Arc::new(Mutex::new(Queue {
                next: 1,
                pending: BTreeMap::new(),
                waiting: 0,
            })),
            flushed,
            tell: Arc::new(tell),
            wal,
            #[cfg(test)]
            held: Arc::default(),
        }
    }

    /// The log's files, locked: for reading what the writer wrote.
    pub(in crate::store) fn wal(&self) -> std::sync::MutexGuard<'_, files::Log> {
        self.wal.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        lock(&self.queue)
    }

    fn failed(&self) -> Option<String> {
        match &*self.flushed.borrow() {
            Flushed::Failed(why) => Some(why.clone()),
            Flushed::Through(_) => None,
        }
    }

    /// Writes `work` to the files and hands its flush to their thread; returns its number,
    /// and whether more bytes than [`WAITING_BYTES`] now wait to be durable.
    pub(super) fn hand(&self, work: Work) -> Result<(u64, bool), StoreError> {
        if let Some(why) = self.failed() {
            return Err(StoreError::Failed(format!("the Raft log's writes failed: {why}")));
        }
        let mut wal = self.wal();
        let (seq, heavy) = {
            let mut queue = self.queue();
            let seq = queue.next;
            queue.next += 1;
            match &work {
                Work::Append { entries, .. } => {
                    for (id, _) in entries {
                        queue.pending.insert(id.index, seq);
                    }
                }
                // Gone entries wait for nothing; the ones appended again are handed after.
                Work::Truncate(index) => {
                    queue.pending.split_off(index);
                }
                Work::Purge(_) | Work::Vote(_) => {}
            }
            queue.waiting += work.bytes();
            (seq, queue.waiting > WAITING_BYTES)
        };
        #[cfg(test)]
        if let Some(held) = lock(&self.held).as_mut() {
            held.push((seq, work));
            return Ok((seq, heavy));
        }
        self.write(&mut wal, seq, work)?;
        Ok((seq, heavy))
    }

    /// Writes job `seq` to the files, then hands its flush to their thread.
    fn write(&self, wal: &mut files::Log, seq: u64, work: Work) -> Result<(), StoreError> {
        let bytes = work.bytes();
        let (queue, tell) = (Arc::downgrade(&self.queue), self.tell.clone());
        let flushed = move |res: std::io::Result<()>| match res {
            Ok(()) => flushed_through(&queue, &tell, seq, bytes),
            Err(e) => {
                tracing::error!(error = %e, "the Raft log's writes failed: this node acknowledges no entry from now on");
                tell.send_replace(Flushed::Failed(e.to_string()));
            }
        };
        let written = wal.write(work).and_then(|()| wal.flush(Done::new(flushed)));
        if let Err(e) = &written {
            tracing::error!(error = %e, "the Raft log's writes failed: this node acknowledges no entry from now on");
            self.tell.send_replace(Flushed::Failed(e.to_string()));
        }
        written
    }

    /// Waits until job `seq` (and every one before it) is durable.
    pub(super) async fn through(&self, seq: u64) -> Result<(), StoreError> {
        let mut flushed = self.flushed.clone();
        let reached = flushed
            .wait_for(|f| match f {
                Flushed::Through(done) => *done >= seq,
                Flushed::Failed(_) => true,
            })
            .await
            .map_err(|_| StoreError::Failed("the Raft log's writer stopped".into()))?;
        match &*reached {
            Flushed::Through(_) => Ok(()),
            Flushed::Failed(why) => Err(StoreError::Failed(format!("the Raft log's writes failed: {why}"))),
        }
    }

    /// Waits until the entries up to `index` this node holds are durable.
    pub(crate) async fn covering(&self, index: u64) -> Result<(), StoreError> {
        let needed = self.queue().pending.range(..=index).map(|(_, seq)| *seq).max();
        match needed {
            Some(seq) => self.through(seq).await,
            None => self.failed().map_or(Ok(()), |why| {
                Err(StoreError::Failed(format!("the Raft log's writes failed: {why}")))
            }),
        }
    }

    /// Waits until everything handed so far is durable.
    pub(crate) async fn everything(&self) -> Result<(), StoreError> {
        let last = self.queue().next - 1;
        self.through(last).await
    }

    /// Keeps what is handed from now on out of the files until the guard is dropped, which
    /// writes it: a test sees what a member does while its entries are not durable.
    #[cfg(test)]
    pub(crate) fn hold(&self) -> Held {
        *lock(&self.held) = Some(Vec::new());
        Held(self.clone())
    }
}

/// Flushes end in the order they were handed, on one thread: what the files now hold
/// durably runs through job `seq`.
fn flushed_through(queue: &Weak<Mutex<Queue>>, tell: &watch::Sender<Flushed>, seq: u64, bytes: usize) {
    if let Some(queue) = queue.upgrade() {
        let mut queue = lock(&queue);
        queue.pending.retain(|_, s| *s > seq);
        queue.waiting -= bytes;
    }
    tell.send_if_modified(|f| match f {
        Flushed::Through(done) if *done < seq => {
            *f = Flushed::Through(seq);
            true
        }
        _ => false,
    });
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The jobs a test holds out of the files, by number.
#[cfg(test)]
type HeldJobs = Vec<(u64, Work)>;

/// A test's hold on a log's writes ([`Durable::hold`]).
#[cfg(test)]
pub(crate) struct Held(Durable);

#[cfg(test)]
impl Drop for Held {
    fn drop(&mut self) {
        let durable = &self.0;
        let mut wal = durable.wal();
        let held = lock(&durable.held).take().unwrap_or_default();
        for (seq, work) in held {
            if durable.write(&mut wal, seq, work).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;
    use openraft::{CommittedLeaderId, Entry, EntryPayload};
    use redb::Database;

    use super::*;
    use crate::store::raft::Troupe;

    fn append(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Work {
        let entry = |index| {
            let log_id = LogId::new(CommittedLeaderId::new(term, 1), index);
            let entry: Entry<Troupe> = Entry {
                log_id,
                payload: EntryPayload::Blank,
            };
            (log_id, crate::codec::encode(&entry).unwrap())
        };
        Work::Append {
            entries: indexes.map(entry).collect(),
            committed: None,
        }
    }

    #[tokio::test]
    async fn an_index_waits_for_the_job_that_wrote_it_last_and_a_truncation_forgets_the_gone_ones() {
        let dir = tempfile::tempdir().unwrap();
        let tables_db = Arc::new(Database::create(dir.path().join("db")).unwrap());
        let wal = files::open(&dir.path().join("db"), &tables_db).unwrap();
        let durable = Durable::new(wal);
        // Nothing handed is durable while the log is held.
        let held = durable.hold();
        let (first, _) = durable.hand(append(1, 1..=3)).unwrap();
        durable.hand(Work::Truncate(2)).unwrap();
        let (again, _) = durable.hand(append(2, 2..=2)).unwrap();
        assert_eq!(durable.queue().pending, BTreeMap::from([(1, first), (2, again)]));
        assert!(
            durable.covering(1).now_or_never().is_none(),
            "index 1 is not written yet"
        );
        assert!(
            durable.covering(3).now_or_never().is_none(),
            "index 2 is not written again yet"
        );
        assert!(durable.everything().now_or_never().is_none());
        drop(held);
        durable.covering(3).await.unwrap();
        assert!(durable.queue().pending.is_empty());
        assert_eq!(durable.queue().waiting, 0);
        let held: Vec<(u64, u64)> = durable
            .wal()
            .read(0, 10)
            .unwrap()
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect();
        assert_eq!(held, vec![(1, 1), (2, 2)], "3 was truncated, 2 written again");
    }
}

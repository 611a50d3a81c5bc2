//! The log's writer: a thread of its own that writes what the log store hands it (appends,
//! truncations, purges, the vote) to the log's files in the order it was handed, as many
//! jobs as are waiting in one flush (one fsync), and says how far it got.
//!
//! openraft 0.9 waits inside its core for an append to be flushed before it sends the
//! entries to the followers, so a leader's fsync and its followers' ran one after the other
//! on every write's path. The log store now tells openraft an append is done once its entries
//! are readable (in memory, handed to this writer), and the leader's fsync runs while the
//! entries travel. Raft's safety then rests on what leaves a node, which waits here until
//! the entries it speaks for are durable ([`Durable::covering`]):
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

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use openraft::{LogId, Vote};
use tokio::sync::watch;

use super::files::{self, Wal};
use crate::store::apply::Tables;
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
    /// Entries up to this log id are gone; the tables are made durable first.
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

struct Job {
    seq: u64,
    work: Work,
}

/// How far the writer got: every job up to this number is durable, or the writer failed.
#[derive(Debug, Clone, PartialEq)]
enum Flushed {
    Through(u64),
    Failed(String),
}

/// Jobs of at most about this many bytes go in one flush.
const GROUP_BYTES: usize = 64 << 20;
/// An append waits until it is durable when more than this many bytes wait for the writer.
const WAITING_BYTES: usize = 64 << 20;

struct Queue {
    /// The number the next job gets; 0 is "nothing yet".
    next: u64,
    tx: std::sync::mpsc::Sender<Job>,
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
    /// The log's files, which the writer writes and the log store reads.
    wal: Wal,
    /// Held by the writer while it writes a group: a test holds it to keep entries from the
    /// files.
    #[cfg(test)]
    pub(crate) gate: Arc<tokio::sync::Mutex<()>>,
}

impl Durable {
    /// Starts the writer of the log in `wal`; `tables` are made durable before a purge.
    pub(super) fn start(wal: Wal, tables: Arc<Tables>) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let (flushed_tx, flushed) = watch::channel(Flushed::Through(0));
        let queue = Arc::new(Mutex::new(Queue {
            next: 1,
            tx,
            pending: BTreeMap::new(),
            waiting: 0,
        }));
        // Not kept by the thread: once every handle is gone the channel closes, the thread
        // writes what is left and ends, and the log's files are closed.
        let kept = Arc::downgrade(&queue);
        #[cfg(test)]
        let gate = Arc::new(tokio::sync::Mutex::new(()));
        let writer = Writer {
            wal: wal.clone(),
            tables,
            #[cfg(test)]
            gate: gate.clone(),
        };
        std::thread::Builder::new()
            .name("troupe-raft-log".into())
            .spawn(move || run(&writer, &rx, &kept, &flushed_tx))
            .expect("the log's writer thread starts");
        Self {
            queue,
            flushed,
            wal,
            #[cfg(test)]
            gate,
        }
    }

    /// The log's files, locked: for reading what the writer wrote.
    pub(in crate::store) fn wal(&self) -> std::sync::MutexGuard<'_, files::Log> {
        self.wal.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn failed(&self) -> Option<String> {
        match &*self.flushed.borrow() {
            Flushed::Failed(why) => Some(why.clone()),
            Flushed::Through(_) => None,
        }
    }

    /// Hands `work` to the writer; returns its number, and whether more bytes than
    /// [`WAITING_BYTES`] now wait for it.
    pub(super) fn hand(&self, work: Work) -> Result<(u64, bool), StoreError> {
        if let Some(why) = self.failed() {
            return Err(StoreError::Failed(format!("the Raft log's writes failed: {why}")));
        }
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
        let heavy = queue.waiting > WAITING_BYTES;
        queue
            .tx
            .send(Job { seq, work })
            .map_err(|_| StoreError::Failed("the Raft log's writer stopped".into()))?;
        Ok((seq, heavy))
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
}

/// What the writer thread holds.
struct Writer {
    wal: Wal,
    tables: Arc<Tables>,
    #[cfg(test)]
    gate: Arc<tokio::sync::Mutex<()>>,
}

fn run(
    writer: &Writer,
    rx: &std::sync::mpsc::Receiver<Job>,
    queue: &std::sync::Weak<Mutex<Queue>>,
    flushed: &watch::Sender<Flushed>,
) {
    while let Ok(first) = rx.recv() {
        let mut bytes = first.work.bytes();
        let mut jobs = vec![first];
        while bytes < GROUP_BYTES {
            match rx.try_recv() {
                Ok(job) => {
                    bytes += job.work.bytes();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let last = jobs.last().map_or(0, |j| j.seq);
        match writer.write(jobs) {
            Ok(()) => {
                if let Some(queue) = queue.upgrade() {
                    let mut queue = queue.lock().unwrap_or_else(|p| p.into_inner());
                    queue.pending.retain(|_, seq| *seq > last);
                    queue.waiting -= bytes;
                }
                flushed.send_replace(Flushed::Through(last));
            }
            Err(e) => {
                tracing::error!(error = %e, "the Raft log's writes failed: this node acknowledges no entry from now on");
                flushed.send_replace(Flushed::Failed(e.to_string()));
                return;
            }
        }
    }
}

impl Writer {
    /// Writes `jobs` in order and makes them durable with one flush.
    fn write(&self, jobs: Vec<Job>) -> Result<(), StoreError> {
        #[cfg(test)]
        let _held = self.gate.blocking_lock();
        if jobs.iter().any(|j| matches!(j.work, Work::Purge(_))) {
            // The entries purged must not be needed again: the tables' applies of them are
            // made durable first (openraft purges only entries applied here).
            crate::store::apply::persist(&self.tables.db)?;
        }
        let flushing = {
            let mut wal = self.wal.lock().unwrap_or_else(|p| p.into_inner());
            for job in jobs {
                wal.write(job.work)?;
            }
            wal.flushing()?
        };
        // The files' own thread writes and syncs them; the lock is free meanwhile, for reads.
        files::durable(flushing)
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
        let (live, _) = tokio::sync::broadcast::channel(16);
        let tables_db = Arc::new(Database::create(dir.path().join("db")).unwrap());
        let wal = files::open(&dir.path().join("db"), &tables_db).unwrap();
        let durable = Durable::start(wal, Arc::new(Tables::open(tables_db, live, 0).unwrap()));
        // The writer waits for this gate: nothing handed is durable while it is held.
        let held = durable.gate.try_lock().unwrap();
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

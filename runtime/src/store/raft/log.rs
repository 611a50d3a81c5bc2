//! The Raft log: one entry per index, and the vote, committed and purged log ids, in the
//! log's own files (see [`files`]). The log's writer writes what it is handed, in order, and
//! the files' own thread syncs it; an append is done for openraft once its entries are
//! readable, and what leaves the node waits until the entries it speaks for are durable (see
//! [`writer`]). The committed log id has no flush of its own: the next append writes it.
//!
//! The log has files of its own, beside the tables'. The state machine's commits are cheap
//! ones, made durable only now and then (see `machine`). Before entries are purged, the
//! tables are made durable, so the entries past the tables' durable state are always still
//! in the log.
//!
//! The newest entries appended are also kept in memory: openraft reads each entry back to
//! apply it and to send it to followers, and from memory that costs neither a read of the
//! files nor decoding every batch and event again.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, LogId, LogState, RaftLogId, RaftLogReader, StorageError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable};

use super::snapshots::Seen;
use super::{blocking, read_error, read_state, write_error, NodeId, Troupe, RAFT_LOG, RAFT_STATE};
use crate::codec;
use crate::store::apply::Tables;
use crate::store::StoreError;

pub(crate) mod files;
mod writer;
pub(crate) use files::Wal;
pub(crate) use writer::Durable;
#[cfg(test)]
pub(crate) use writer::Held;
use writer::Work;

pub(super) const VOTE: &str = "vote";
pub(super) const COMMITTED: &str = "committed";
pub(super) const PURGED: &str = "purged";
pub(super) const ID: &str = "id";

/// Moves the log of a store that kept it in the tables' file (as earlier builds did) into
/// the log's own file: copied, made durable, then dropped from the tables' file. A crash in
/// between leaves a copy in each; the next start finds the log's file holding it and only
/// drops the old one.
pub fn adopt(tables: &Database, log: &Database) -> Result<(), StoreError> {
    let had_none = read_state::<NodeId>(log, RAFT_STATE, ID)?.is_none();
    let old = tables.begin_read().map_err(StoreError::db)?;
    let state = match old.open_table(RAFT_STATE) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(StoreError::db(e)),
    };
    if had_none {
        let txn = log.begin_write().map_err(StoreError::db)?;
        {
            let mut into = txn.open_table(RAFT_STATE).map_err(StoreError::db)?;
            for row in state.iter().map_err(StoreError::db)? {
                let (k, v) = row.map_err(StoreError::db)?;
                into.insert(k.value(), v.value()).map_err(StoreError::db)?;
            }
            let mut into = txn.open_table(RAFT_LOG).map_err(StoreError::db)?;
            match old.open_table(RAFT_LOG) {
                Ok(entries) => {
                    for row in entries.iter().map_err(StoreError::db)? {
                        let (k, v) = row.map_err(StoreError::db)?;
                        into.insert(k.value(), v.value()).map_err(StoreError::db)?;
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(StoreError::db(e)),
            }
        }
        txn.commit().map_err(StoreError::db)?;
        tracing::info!("moved the Raft log into a file of its own");
    }
    drop((state, old));
    let txn = tables.begin_write().map_err(StoreError::db)?;
    txn.delete_table(RAFT_LOG).map_err(StoreError::db)?;
    txn.delete_table(RAFT_STATE).map_err(StoreError::db)?;
    txn.commit().map_err(StoreError::db)
}

/// Entries kept in memory after their append (each a whole group commit), at most this
/// many...
const RECENT: usize = 1024;
/// ...and at most this many bytes of them: an entry may take up to 12 MiB, and 1,024 of them
/// held a node's memory at gigabytes (2.1 GB on each node after 4,000 writes of 255 KB).
const RECENT_BYTES: usize = 64 << 20;

/// The entries appended last, for the apply and the replication that read them next: the
/// newest ones, within [`RECENT`] entries and [`RECENT_BYTES`] bytes.
#[derive(Default)]
struct RecentEntries {
    entries: std::collections::BTreeMap<u64, (Entry<Troupe>, usize)>,
    bytes: usize,
}

impl RecentEntries {
    fn insert(&mut self, index: u64, entry: Entry<Troupe>, bytes: usize) {
        if let Some((_, old)) = self.entries.insert(index, (entry, bytes)) {
            self.bytes -= old;
        }
        self.bytes += bytes;
        while self.entries.len() > RECENT || (self.bytes > RECENT_BYTES && self.entries.len() > 1) {
            if let Some((_, (_, b))) = self.entries.pop_first() {
                self.bytes -= b;
            }
        }
    }

    /// Keeps the entries from `index` on (`from`), or those before it.
    fn keep(&mut self, index: u64, from: bool) {
        let after = self.entries.split_off(&index);
        if from {
            self.entries = after;
        }
        self.bytes = self.entries.values().map(|(_, b)| b).sum();
    }
}

type Recent = Arc<std::sync::Mutex<RecentEntries>>;

#[derive(Clone)]
pub(super) struct LogStore {
    /// The log's writer.
    durable: Durable,
    /// The tables, made durable before entries are purged.
    tables: Arc<Tables>,
    recent: Recent,
    /// The committed log id openraft saved last, until an append writes it.
    committed: Arc<std::sync::Mutex<Option<LogId<NodeId>>>>,
    /// Told of each purge at once: a snapshot the log moved past is not sent.
    seen: Arc<Seen>,
}

impl LogStore {
    pub fn new(wal: Wal, tables: Arc<Tables>, seen: Arc<Seen>) -> Self {
        Self {
            durable: Durable::new(wal),
            tables,
            recent: Recent::default(),
            committed: Arc::default(),
            seen,
        }
    }

    /// The handle on the log's writer, for what must wait until entries are durable.
    pub fn durable(&self) -> Durable {
        self.durable.clone()
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, RecentEntries> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entries of `first..=last` when memory holds every one of them.
    fn remembered(&self, first: u64, last: u64) -> Option<Vec<Entry<Troupe>>> {
        let recent = self.recent();
        let held: Vec<_> = recent
            .entries
            .range(first..=last)
            .map(|(_, (e, _))| e.clone())
            .collect();
        (held.len() as u64 == last - first + 1).then_some(held)
    }

    /// Reads the log's state once the writer wrote all it was handed.
    async fn state<T>(&self, read: impl FnOnce(&files::Log) -> T) -> Result<T, StorageError<NodeId>> {
        self.durable.everything().await.map_err(read_error)?;
        Ok(read(&self.durable.wal()))
    }

    /// Hands `work` to the writer and waits until it is durable.
    async fn written(&self, work: Work) -> Result<(), StorageError<NodeId>> {
        let (seq, _) = self.durable.hand(work).map_err(write_error)?;
        self.durable.through(seq).await.map_err(write_error)
    }
}

impl RaftLogReader<Troupe> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<Troupe>>, StorageError<NodeId>> {
        // `start..end`, `end` unbounded when `None`.
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Some(i.saturating_add(1)),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        if let Some(end) = end {
            if start >= end {
                return Ok(Vec::new());
            }
            if let Some(held) = self.remembered(start, end - 1) {
                return Ok(held);
            }
        }
        // Entries no longer in memory may still be on their way to the files.
        self.durable.everything().await.map_err(read_error)?;
        let durable = self.durable.clone();
        blocking(move || {
            let wal = durable.wal();
            let end = end.unwrap_or_else(|| wal.last().map_or(0, |l| l.index + 1));
            wal.read(start, end)
        })
        .await
        .map_err(read_error)
    }
}

impl RaftLogStorage<Troupe> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<Troupe>, StorageError<NodeId>> {
        // Read once the writer wrote all it was handed (`state` waits for it).
        let (purged, last) = self.state(|wal| (wal.purged(), wal.last())).await?;
        // The files' last is never behind what they purged.
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.written(Work::Vote(*vote)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.state(files::Log::vote).await
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError<NodeId>> {
        // Kept until the next append, which writes it with its entries: a flush of its own
        // per group commit, on the way from append to apply, cost a fifth of the write rate.
        // Lost in a crash, it reads older; the entries past it are in the log and are applied
        // once a leader confirms them again.
        *self.committed.lock().unwrap_or_else(|p| p.into_inner()) = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        self.state(files::Log::committed).await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<Troupe>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<Troupe>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry<Troupe>> = entries.into_iter().collect();
        let encoded = entries
            .iter()
            .map(|e| Ok((*e.get_log_id(), codec::encode(e)?)))
            .collect::<Result<Vec<_>, StoreError>>()
            .map_err(write_error)?;
        let committed = self.committed.lock().unwrap_or_else(|p| p.into_inner()).take();
        let sizes: Vec<usize> = encoded.iter().map(|(_, bytes)| bytes.len()).collect();
        self.seen
            .appended(encoded.iter().map(|(id, bytes)| (id.index, bytes.len() as u64)));
        {
            let mut recent = self.recent();
            for (e, bytes) in entries.into_iter().zip(sizes) {
                recent.insert(e.get_log_id().index, e, bytes);
            }
        }
        // Readable now, durable once the writer got to them: openraft goes on (the leader
        // sends them to the followers) while the writer commits them.
        let handed = self.durable.hand(Work::Append {
            entries: encoded,
            committed,
        });
        match handed {
            Ok((seq, heavy)) => {
                callback.log_io_completed(Ok(()));
                if heavy {
                    // Bounds what waits for the writer in memory.
                    self.durable.through(seq).await.map_err(write_error)?;
                }
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_error(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Entries from `log_id` on are gone.
        self.recent().keep(log_id.index, false);
        self.seen.truncated(log_id.index);
        self.written(Work::Truncate(log_id.index)).await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.seen.purged_through(log_id.index);
        self.recent().keep(log_id.index + 1, true);
        // The entries purged must not be needed again: the tables' applies of them are made
        // durable first (openraft purges only entries applied here).
        let db = self.tables.db.clone();
        blocking(move || crate::store::apply::persist(&db))
            .await
            .map_err(write_error)?;
        self.written(Work::Purge(log_id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64) -> Entry<Troupe> {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 0), index),
            payload: openraft::EntryPayload::Blank,
        }
    }

    #[test]
    fn the_entries_kept_in_memory_are_bounded_in_bytes_as_well_as_in_number() {
        let mut recent = RecentEntries::default();
        for i in 0..40 {
            recent.insert(i, entry(i), 8 << 20);
        }
        assert!(recent.bytes <= RECENT_BYTES, "{} bytes held", recent.bytes);
        assert_eq!(recent.entries.len(), RECENT_BYTES / (8 << 20));
        assert_eq!(recent.entries.keys().next_back(), Some(&39), "the newest stay");
        // One entry larger than the bound is still kept, alone.
        recent.insert(40, entry(40), RECENT_BYTES * 2);
        assert_eq!(recent.entries.keys().collect::<Vec<_>>(), vec![&40]);
        for i in 41..41 + RECENT as u64 + 10 {
            recent.insert(i, entry(i), 1);
        }
        assert_eq!(recent.entries.len(), RECENT);
        recent.keep(RECENT as u64, false);
        assert!(recent.entries.keys().all(|i| *i < RECENT as u64));
        assert_eq!(recent.bytes, recent.entries.len());
    }
}

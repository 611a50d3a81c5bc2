//! The log's files: a directory of append-only chunks (`raft-log`, made for a Raft log by
//! openraft's author), each record checksummed, a torn last record dropped at the next
//! open. An append is one record per entry and a flush one `fdatasync`; a purge drops whole
//! chunks. The log holds the vote, the committed and purged log ids and this node's Raft id
//! besides the entries, each written as a record of its own.
//!
//! Earlier builds kept the log in a redb file (`troupe.log.redb`), and before that in the
//! tables' file: [`open`] moves it here once, whole, before the store starts.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::{CommittedLeaderId, Entry, LogId, RaftLogId, Vote};
use raft_log::api::raft_log_writer::RaftLogWriter;
use raft_log::codeq::{Decode, Encode};
use raft_log::RaftLog;
use redb::{Database, ReadableDatabase, ReadableTable};

use super::writer::Work;
use super::{COMMITTED, ID, PURGED, VOTE};
use crate::codec;
use crate::store::raft::{read_state, NodeId, Troupe, RAFT_LOG, RAFT_STATE};
use crate::store::StoreError;

/// The types of the log's records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Records;

impl raft_log::Types for Records {
    /// `((term, leader), index)`: ordered as openraft orders log ids.
    type LogId = ((u64, u64), u64);
    /// An entry, encoded as the network sends it.
    type LogPayload = Vec<u8>;
    type Vote = Voted;
    type Callback = Done;
    /// This node's Raft id.
    type UserData = u64;

    fn log_index(id: &Self::LogId) -> u64 {
        id.1
    }

    fn payload_size(payload: &Self::LogPayload) -> u64 {
        payload.len() as u64
    }
}

/// openraft's vote as a record: ordered as openraft orders votes (the log refuses one that
/// goes back).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd)]
pub(crate) struct Voted(Vote<NodeId>);

impl Encode for Voted {
    fn encode<W: io::Write>(&self, w: W) -> io::Result<usize> {
        codec::encode(&self.0).map_err(io::Error::other)?.encode(w)
    }
}

impl Decode for Voted {
    fn decode<R: io::Read>(r: R) -> io::Result<Self> {
        let bytes = Vec::<u8>::decode(r)?;
        codec::decode(&bytes).map(Voted).map_err(io::Error::other)
    }
}

type Id = <Records as raft_log::Types>::LogId;

fn id(log_id: &LogId<NodeId>) -> Id {
    ((log_id.leader_id.term, log_id.leader_id.node_id), log_id.index)
}

fn log_id(&((term, node), index): &Id) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

/// A failure of the log's files as the store reports it.
pub(super) fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(format!("the Raft log's files: {e}"))
}

/// The log's files, open.
pub(crate) struct Log(RaftLog<Records>);

/// What a flush does once the files' own thread wrote and synced it (or failed to): called
/// on that thread, once. A flush the files never got to (their thread stopped) is answered
/// with an error when it is dropped, so nothing waits for it for ever.
pub(crate) struct Done(Option<Box<dyn FnOnce(io::Result<()>) + Send>>);

impl Done {
    pub(super) fn new(then: impl FnOnce(io::Result<()>) + Send + 'static) -> Self {
        Self(Some(Box::new(then)))
    }
}

impl raft_log::Callback for Done {
    fn send(mut self, res: io::Result<()>) {
        if let Some(then) = self.0.take() {
            then(res);
        }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        if let Some(then) = self.0.take() {
            then(Err(io::Error::other("the Raft log's files closed before the flush")));
        }
    }
}

/// The log's files, shared by its writer and its readers.
pub(crate) type Wal = Arc<Mutex<Log>>;

impl Log {
    /// Writes `work` (buffered until the next flush).
    pub(super) fn write(&mut self, work: Work) -> Result<(), StoreError> {
        match work {
            Work::Append { entries, committed } => {
                // Entries appended again from an index the log holds replace it and what
                // follows, as a truncation there would (openraft truncates first itself).
                if let Some((first, _)) = entries.first() {
                    if self.last().is_some_and(|l| l.index >= first.index) {
                        self.write(Work::Truncate(first.index))?;
                    }
                }
                let log = &mut self.0;
                log.append(entries.into_iter().map(|(l, bytes)| (id(&l), bytes)))
                    .map_err(failed)?;
                // Optional (openraft applies again what a leader confirms), so written only
                // where the files take it: within the log, and never going back.
                if let Some(c) = committed.as_ref().map(id) {
                    let state = log.log_state();
                    if Some(&c) <= state.last() && Some(&c) > state.committed() {
                        log.commit(c).map_err(failed)?;
                    }
                }
            }
            Work::Truncate(index) => {
                if let Some((first, _)) = self.held().filter(|(_, last)| *last >= index) {
                    // From the first entry held on, all go: the log says so by truncating
                    // right after what it purged.
                    let at = if index <= first {
                        self.purged().map_or(0, |p| p.index + 1)
                    } else {
                        index
                    };
                    self.0.truncate(at).map_err(failed)?;
                }
            }
            Work::Purge(upto) => {
                self.0.purge(id(&upto)).map_err(failed)?;
            }
            Work::Vote(vote) => {
                self.0.save_vote(Voted(vote)).map_err(failed)?;
            }
        }
        Ok(())
    }

    /// Hands what was written to the files' own thread to write and sync; `done` is called
    /// there once they are durable.
    pub(super) fn flush(&mut self, done: Done) -> Result<(), StoreError> {
        self.0.flush(true, Some(done)).map_err(failed)
    }

    /// Writes and syncs everything written, waiting for it.
    fn synced(&mut self) -> Result<(), StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.flush(Done::new(move |res| {
            let _ = tx.send(res);
        }))?;
        rx.recv()
            .map_err(|_| StoreError::Failed("the Raft log's files closed".into()))?
            .map_err(failed)
    }

    pub(in crate::store) fn vote(&self) -> Option<Vote<NodeId>> {
        self.0.log_state().vote().map(|v| v.0)
    }

    pub(in crate::store) fn committed(&self) -> Option<LogId<NodeId>> {
        self.0.log_state().committed().map(log_id)
    }

    pub(in crate::store) fn purged(&self) -> Option<LogId<NodeId>> {
        self.0.log_state().purged().map(log_id)
    }

    /// The id of the last entry this member holds: the log's last, or the last purged when
    /// the log is empty after a snapshot.
    pub(in crate::store) fn last(&self) -> Option<LogId<NodeId>> {
        self.0.log_state().last().map(log_id)
    }

    /// The indexes of the first and the last entry in the log, `None` when it holds none.
    pub(in crate::store) fn held(&self) -> Option<(u64, u64)> {
        let last = self.last()?.index;
        let first = self.0.read(0, last.saturating_add(1)).next()?.ok()?.0;
        Some((first.1, last))
    }

    /// The bytes of the log's files.
    pub(in crate::store) fn bytes(&self) -> u64 {
        self.0.on_disk_size()
    }

    /// The entries of `from..to` the log holds, decoded.
    pub(in crate::store) fn read(&self, from: u64, to: u64) -> Result<Vec<Entry<Troupe>>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        self.0
            .read(from, to)
            .map(|item| {
                let (_, bytes) = item.map_err(failed)?;
                codec::decode(&bytes)
            })
            .collect()
    }

    /// Makes `id` this node's Raft id.
    pub(in crate::store) fn belongs_to(&mut self, id: NodeId) -> Result<(), StoreError> {
        self.0.save_user_data(Some(id)).map_err(failed).map(|_| ())
    }

    /// This node's Raft id, `None` before its first start.
    pub(in crate::store) fn id(&self) -> Option<NodeId> {
        self.0.log_state().user_data
    }

    /// This node's Raft id: made once, at the store's first start, and kept, so a node keeps
    /// its place in the group when its name or address changes.
    pub(in crate::store) fn node_id(&mut self) -> Result<NodeId, StoreError> {
        if let Some(id) = self.id() {
            return Ok(id);
        }
        // Never 0: some tools read 0 as "no node".
        let id = rand::random::<u64>().max(1);
        self.belongs_to(id)?;
        self.synced()?;
        Ok(id)
    }
}

/// The directory of the log of the store at `path` (`troupe.raftlog` beside `troupe.redb`).
pub fn dir(path: &Path) -> PathBuf {
    path.with_extension("raftlog")
}

/// Where an earlier build kept the log: a redb file beside the tables.
pub fn redb_path(path: &Path) -> PathBuf {
    path.with_extension("log.redb")
}

/// A log being moved into place, and one moved out of it.
fn aside(path: &Path, what: &str) -> PathBuf {
    path.with_extension(format!("raftlog.{what}"))
}

fn config(dir: &Path) -> raft_log::Config {
    raft_log::Config {
        wal: raft_log::chunked_wal::Config {
            // A purge drops whole chunks: smaller ones leave less purged log on disk.
            chunk_max_size: Some(64 << 20),
            // An entry's flush waits for no others: the files' thread writes what waits
            // already in one go.
            flush_batch_wait: Some(std::time::Duration::ZERO),
            // Above the log's own bound on what waits to be durable (64 MiB and an append):
            // a full queue would block the Raft core's thread, which hands the writes.
            flush_queue_max_bytes: Some(256 << 20),
            read_buffer_size: Some(8 << 20),
            // A record a crash tore is one whose flush never ended: no one was told of it.
            truncate_incomplete_record: Some(true),
            ..raft_log::chunked_wal::Config::new(dir.display())
        },
        // The entries read back come from the log store's own memory (decoded); the files'
        // cache holds what a lagging member is sent, bounded in bytes.
        log_cache_capacity: Some(16 << 20),
        log_cache_max_items: Some(4096),
    }
}

fn open_dir(dir: &Path) -> Result<Log, StoreError> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(failed)?;
    }
    match RaftLog::open(Arc::new(config(dir))) {
        Ok(log) => Ok(Log(log)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(StoreError::Locked),
        Err(e) => Err(failed(format!("opening {}: {e}", dir.display()))),
    }
}

/// Opens the log of the store at `path` (whose tables are `tables`), moving the log an
/// earlier build kept into it first.
pub fn open(path: &Path, tables: &Database) -> Result<Wal, StoreError> {
    let dir = dir(path);
    let (new, old) = (aside(path, "new"), aside(path, "old"));
    // A replacement cut short (see `replace`): `new` is whole once the log it replaces was
    // moved aside, and otherwise perhaps not, so it goes.
    if !dir.exists() && new.exists() && old.exists() {
        std::fs::rename(&new, &dir).map_err(failed)?;
    }
    for aside in [new, old] {
        if aside.exists() {
            std::fs::remove_dir_all(&aside).map_err(failed)?;
        }
    }
    let redb = redb_path(path);
    if dir.exists() {
        // Moved here before a crash that left the earlier file.
        if redb.exists() {
            std::fs::remove_file(&redb).map_err(failed)?;
        }
    } else if redb.exists() || held_in_tables(tables)? {
        let earlier = crate::store::create(&redb, crate::store::DEFAULT_CACHE_BYTES / 4)?;
        super::adopt(tables, &earlier)?;
        replace(path, |log| copy(&earlier, log))?;
        drop(earlier);
        std::fs::remove_file(&redb).map_err(failed)?;
        tracing::info!("moved the Raft log into {}", dir.display());
    }
    Ok(Arc::new(Mutex::new(open_dir(&dir)?)))
}

fn held_in_tables(tables: &Database) -> Result<bool, StoreError> {
    let txn = tables.begin_read().map_err(StoreError::db)?;
    match txn.open_table(RAFT_STATE) {
        Ok(_) => Ok(true),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
        Err(e) => Err(StoreError::db(e)),
    }
}

/// Replaces the log of the store at `path` with one `fill` writes, whole or not at all: it
/// is written beside, synced, then renamed into place.
pub fn replace(path: &Path, fill: impl FnOnce(&mut Log) -> Result<(), StoreError>) -> Result<(), StoreError> {
    let (dir, new, old) = (dir(path), aside(path, "new"), aside(path, "old"));
    if new.exists() {
        std::fs::remove_dir_all(&new).map_err(failed)?;
    }
    {
        let mut log = open_dir(&new)?;
        fill(&mut log)?;
        log.synced()?;
    }
    if dir.exists() {
        std::fs::rename(&dir, &old).map_err(failed)?;
    }
    std::fs::rename(&new, &dir).map_err(failed)?;
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(failed)?;
    }
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(failed)?;
    }
    Ok(())
}

/// What the copy of an earlier build's log writes before it waits for the files: the
/// files hold what is written in memory until a flush.
const COPIED_BYTES: usize = 64 << 20;

/// Copies the log an earlier build kept in `earlier` (redb) into `log`.
fn copy(earlier: &Database, log: &mut Log) -> Result<(), StoreError> {
    if let Some(node) = read_state::<NodeId>(earlier, RAFT_STATE, ID)? {
        log.belongs_to(node)?;
    }
    if let Some(purged) = read_state::<LogId<NodeId>>(earlier, RAFT_STATE, PURGED)? {
        log.write(Work::Purge(purged))?;
    }
    if let Some(vote) = read_state::<Vote<NodeId>>(earlier, RAFT_STATE, VOTE)? {
        log.write(Work::Vote(vote))?;
    }
    let txn = earlier.begin_read().map_err(StoreError::db)?;
    match txn.open_table(RAFT_LOG) {
        Ok(entries) => {
            let mut unflushed = 0;
            for row in entries.iter().map_err(StoreError::db)? {
                let (_, bytes) = row.map_err(StoreError::db)?;
                let entry: Entry<Troupe> = codec::decode(bytes.value())?;
                unflushed += bytes.value().len();
                log.write(Work::Append {
                    entries: vec![(*entry.get_log_id(), bytes.value().to_vec())],
                    committed: None,
                })?;
                if unflushed >= COPIED_BYTES {
                    log.synced()?;
                    unflushed = 0;
                }
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(StoreError::db(e)),
    }
    let committed = read_state::<Option<LogId<NodeId>>>(earlier, RAFT_STATE, COMMITTED)?.flatten();
    log.write(Work::Append {
        entries: Vec::new(),
        committed,
    })
}

#[cfg(test)]
mod tests {
    use openraft::EntryPayload;

    use super::*;

    fn entry(index: u64) -> (LogId<NodeId>, Vec<u8>) {
        let log_id = LogId::new(CommittedLeaderId::new(1, 1), index);
        let entry: Entry<Troupe> = Entry {
            log_id,
            payload: EntryPayload::Blank,
        };
        (log_id, codec::encode(&entry).unwrap())
    }

    #[test]
    fn a_flush_the_files_never_answered_is_answered_with_an_error_when_dropped() {
        // What the log's writer hands: a closure that tells waiters, holding no channel whose
        // closing would tell them instead.
        let told = Arc::new(Mutex::new(None));
        let done = |told: &Arc<Mutex<Option<bool>>>| {
            let told = told.clone();
            Done::new(move |res| *told.lock().unwrap() = Some(res.is_ok()))
        };
        drop(done(&told));
        assert_eq!(*told.lock().unwrap(), Some(false), "a waiter would wait for ever");
        raft_log::Callback::send(done(&told), Ok(()));
        assert_eq!(*told.lock().unwrap(), Some(true));
    }

    #[test]
    fn a_record_torn_by_a_crash_is_dropped_at_the_next_open_and_the_entries_before_it_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("db");
        let tables = Database::create(&path).unwrap();
        {
            let wal = open(&path, &tables).unwrap();
            let mut log = wal.lock().unwrap();
            log.node_id().unwrap();
            log.write(Work::Append {
                entries: (0..5).map(entry).collect(),
                committed: None,
            })
            .unwrap();
            log.synced().unwrap();
        }
        // A crash in the middle of the next record: its first bytes are in the file.
        let chunk = std::fs::read_dir(dir(&path))
            .unwrap()
            .map(|f| f.unwrap().path())
            .filter(|p| p.file_name().is_some_and(|n| n != "LOCK"))
            .max()
            .unwrap();
        let whole = std::fs::metadata(&chunk).unwrap().len();
        let mut file = std::fs::OpenOptions::new().append(true).open(&chunk).unwrap();
        std::io::Write::write_all(&mut file, &[0, 0, 0, 1, 9, 9, 9]).unwrap();
        drop(file);
        let wal = open(&path, &tables).unwrap();
        let mut log = wal.lock().unwrap();
        assert_eq!(log.held(), Some((0, 4)));
        assert_eq!(log.read(0, 5).unwrap().len(), 5);
        assert_eq!(
            std::fs::metadata(&chunk).unwrap().len(),
            whole,
            "the torn record is cut off"
        );
        // And the log goes on from there.
        log.write(Work::Append {
            entries: vec![entry(5)],
            committed: Some(entry(5).0),
        })
        .unwrap();
        log.synced().unwrap();
        assert_eq!(log.held(), Some((0, 5)));
        assert_eq!(log.committed().map(|c| c.index), Some(5));
        // An empty or backward range reads nothing (the files' own read panics on one).
        assert!(log.read(3, 3).unwrap().is_empty());
        assert!(log.read(5, 3).unwrap().is_empty());
    }
}

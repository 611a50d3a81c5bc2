//! The state machine: the store's own tables. Applying an entry writes its batches and
//! numbers their events in one transaction with the applied log id, then fans the events
//! out to this node's subscribers. That commit needs no fsync of its own: the entry is on
//! disk in the log already (a file of its own), and after a crash the entries past the
//! durable applied id are applied again, alike. Every [`DURABLE_EVERY`] entries an apply is
//! made durable, which bounds what a start applies again and lets the file reuse the pages
//! freed since; the log is purged only behind a durable apply (see `log`).
//!
//! A snapshot is a copy of every replicated table (the log's own tables aside), for a node
//! that joins or fell behind the purged log. It is written to a file in the snapshots
//! directory beside the tables' file ([`super::snapshot_dir`]), row by row, and read back
//! the same way: neither building, sending, receiving nor installing one holds the whole
//! state in memory. The directory keeps the newest snapshot only, with its meta beside it,
//! and a start holds it again (see [`Snapshots::hold`]).

use std::io::{BufReader, BufWriter, Seek};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StoredMembership,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::{Deserialize, Serialize};
use serde_bytes::{ByteBuf, Bytes};
use tokio::io::AsyncWriteExt;

use super::{blocking, is_raft_table, read_error, write_error, Applied, NodeId, Troupe, RAFT_APPLIED};
use crate::codec;
use crate::events::Event;
use crate::store::apply::Tables;
use crate::store::index::{is_index, Indexes};
use crate::store::{StoreError, EVENTS};

const APPLIED: &str = "applied";
/// Entries applied between two durable applies.
const DURABLE_EVERY: u64 = 1024;
/// Entries of at most this many bytes (their batches') are applied on the Raft runtime's
/// own thread, between its other work: on a thread of the blocking pool, each apply cost
/// two thread hand-offs (there and back), more than a small apply itself. Bigger ones, and
/// those made durable, go to the pool, so the core's heartbeats never wait long behind one.
const APPLIED_IN_PLACE_AT_MOST: usize = 64 << 10;
pub(super) const MEMBERSHIP: &str = "membership";

type Meta = SnapshotMeta<NodeId, BasicNode>;
type Membership = StoredMembership<NodeId, BasicNode>;
/// What the state machine has applied: the last log id and the membership it holds.
pub(super) type AppliedState = (Option<LogId<NodeId>>, Membership);

/// The snapshot this node holds now, and its file.
struct Held {
    meta: Meta,
    path: PathBuf,
}

pub(super) struct Machine {
    tables: Arc<Tables>,
    snapshots: Arc<Snapshots>,
    /// The file a snapshot being received is written to.
    receiving: Option<PathBuf>,
    /// Entries applied since the last durable apply.
    undurable: u64,
    /// The log's writer: an entry is applied once the log holds it durably (see
    /// `log::writer`). None for a state machine tested without a log.
    log: Option<super::log::Durable>,
}

impl Machine {
    /// The state machine on `tables`, keeping its snapshots in `dir` (created owner-only).
    /// The snapshot an earlier run held is held again when its file is whole and the tables
    /// have applied what it holds; every other file is removed (see [`Snapshots::kept`]).
    pub fn new(tables: Arc<Tables>, dir: PathBuf) -> Result<Self, StoreError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(StoreError::db)?;
        let applied = applied(&tables.db)?.0.map(|l| l.index);
        let snapshots = Snapshots {
            dir,
            held: Mutex::default(),
        };
        let kept = snapshots.kept(applied)?;
        if let Some(held) = &kept {
            tracing::info!(last = ?held.meta.last_log_id, "holding the snapshot an earlier run built: none is built at this start");
        }
        *snapshots.held.lock().unwrap_or_else(|p| p.into_inner()) = kept;
        Ok(Self {
            tables,
            snapshots: Arc::new(snapshots),
            receiving: None,
            undurable: 0,
            log: None,
        })
    }

    /// Applies an entry only once `log` holds it durably.
    pub fn gated_by(self, log: super::log::Durable) -> Self {
        Self { log: Some(log), ..self }
    }
}

/// What is written beside a snapshot's file once it is whole: its meta, which openraft
/// needs to send it, and its length, so a file cut short by a crash is not held again.
#[derive(Serialize, Deserialize)]
struct Beside {
    meta: Meta,
    bytes: u64,
}

fn beside_path(path: &Path) -> PathBuf {
    path.with_extension("snapshot.meta")
}

/// Makes `held`'s file durable, then writes its meta beside it (through a file renamed into
/// place, so a crash leaves the whole meta or none; the file left then goes at the start).
fn keep_beside(held: &Held) -> Result<(), StoreError> {
    let file = std::fs::File::open(&held.path).map_err(StoreError::db)?;
    file.sync_all().map_err(StoreError::db)?;
    let beside = Beside {
        meta: held.meta.clone(),
        bytes: file.metadata().map_err(StoreError::db)?.len(),
    };
    crate::auth::files::write_private_bytes(&beside_path(&held.path), &codec::encode(&beside)?).map_err(StoreError::db)
}

/// The snapshots directory and the snapshot held now.
struct Snapshots {
    dir: PathBuf,
    held: Mutex<Option<Held>>,
}

impl Snapshots {
    /// A new file's path in the directory.
    fn new_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.snapshot"))
    }

    /// Holds `held` from now on and removes the file of the one it replaces (a copy being
    /// sent keeps reading its open file). Its meta is written beside it, so the next start
    /// holds it again: openraft 0.9 builds a snapshot at a start that holds none once the
    /// log was purged, a copy of the whole state written before the node could serve (a
    /// gigabyte of it took a new-user trial's members minutes, debug build, and each was
    /// declared DOWN meanwhile and lost its work).
    fn hold(&self, held: Held) {
        if let Err(e) = keep_beside(&held) {
            tracing::warn!(path = %held.path.display(), error = %e, "could not keep a snapshot for the next start");
        }
        let before = self.held.lock().unwrap_or_else(|p| p.into_inner()).replace(held);
        if let Some(before) = before {
            let _ = std::fs::remove_file(beside_path(&before.path));
            if let Err(e) = std::fs::remove_file(&before.path) {
                tracing::warn!(path = %before.path.display(), error = %e, "could not remove an older snapshot");
            }
        }
    }

    /// At a start: the snapshot an earlier run held, if its file is whole and holds no more
    /// than the tables applied (`applied`, the index; after a crash the tables may have
    /// lost applies the snapshot was built from, and openraft would then take it for one it
    /// must install). Every other file goes (a snapshot being received, older ones).
    fn kept(&self, applied: Option<u64>) -> Result<Option<Held>, StoreError> {
        let mut found: Option<Held> = None;
        let mut files = Vec::new();
        for file in std::fs::read_dir(&self.dir).map_err(StoreError::db)? {
            files.push(file.map_err(StoreError::db)?.path());
        }
        for path in &files {
            if path.extension().is_none_or(|e| e != "snapshot") {
                continue;
            }
            let Ok(bytes) = std::fs::read(beside_path(path)) else {
                continue;
            };
            let Ok(beside) = codec::decode::<Beside>(&bytes) else {
                continue;
            };
            let whole = std::fs::metadata(path).is_ok_and(|m| m.len() == beside.bytes);
            let index = beside.meta.last_log_id.map(|l| l.index);
            let applied_here = index <= applied;
            let newer = found
                .as_ref()
                .is_none_or(|f| f.meta.last_log_id.map(|l| l.index) < index);
            if whole && applied_here && newer {
                found = Some(Held {
                    meta: beside.meta,
                    path: path.clone(),
                });
            }
        }
        for path in files {
            let is_kept = found
                .as_ref()
                .is_some_and(|f| path == f.path || path == beside_path(&f.path));
            if !is_kept {
                std::fs::remove_file(&path).map_err(StoreError::db)?;
            }
        }
        Ok(found)
    }

    /// The snapshot held now, with its file opened under the lock: a snapshot built
    /// meanwhile (on a task of its own) cannot remove the file between the two.
    fn open_held(&self) -> Result<Option<(Meta, std::fs::File)>, StoreError> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let Some(held) = held.as_ref() else {
            return Ok(None);
        };
        let file = std::fs::File::open(&held.path).map_err(StoreError::db)?;
        Ok(Some((held.meta.clone(), file)))
    }
}

/// One record of a snapshot's file. A file is a sequence of them, each rmp-serde: written
/// from borrowed rows ([`Written`]), read into owned ones ([`Read`]).
#[derive(Debug, Serialize, Deserialize)]
enum Record<S, B> {
    /// The rows that follow belong to this table.
    Table(S),
    Row(S, B),
    Event(u64, B),
    /// The last record: a file cut short has none.
    End,
}

type Written<'a> = Record<&'a str, &'a Bytes>;
type Read = Record<String, ByteBuf>;

/// A new file, readable by its owner only.
fn create_private(path: &Path) -> Result<std::fs::File, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(StoreError::db)
}

/// Writes every replicated table's rows to a new file at `path`, from one read transaction,
/// and answers what that transaction had applied. Blocks.
fn write_snapshot(db: &Database, path: &Path) -> Result<AppliedState, StoreError> {
    let txn = db.begin_read().map_err(StoreError::db)?;
    let mut out = BufWriter::new(create_private(path)?);
    let mut put = |record: &Written<'_>| {
        rmp_serde::encode::write(&mut out, record).map_err(|e| StoreError::Encoding(e.to_string()))
    };
    let names: Vec<String> = txn
        .list_tables()
        .map_err(StoreError::db)?
        .map(|t| t.name().to_owned())
        .collect();
    for name in names {
        if is_raft_table(&name) || is_index(&name) {
            continue;
        }
        if name == EVENTS.name() {
            let events = txn.open_table(EVENTS).map_err(StoreError::db)?;
            for row in events.iter().map_err(StoreError::db)? {
                let (k, v) = row.map_err(StoreError::db)?;
                put(&Record::Event(k.value(), Bytes::new(v.value())))?;
            }
            continue;
        }
        let table = txn
            .open_table(TableDefinition::<&str, &[u8]>::new(&name))
            .map_err(StoreError::db)?;
        put(&Record::Table(&name))?;
        for row in table.iter().map_err(StoreError::db)? {
            let (k, v) = row.map_err(StoreError::db)?;
            put(&Record::Row(k.value(), Bytes::new(v.value())))?;
        }
    }
    put(&Record::End)?;
    out.into_inner().map_err(|e| StoreError::db(e.into_error()))?;
    applied_in(&txn)
}

/// Replaces every replicated table with the rows of the snapshot file `file`, in one
/// durable transaction. Blocks.
fn install_snapshot(file: std::fs::File, db: &Database, meta: &Meta) -> Result<(), StoreError> {
    let mut input = BufReader::new(file);
    let txn = db.begin_write().map_err(StoreError::db)?;
    let names: Vec<String> = txn
        .list_tables()
        .map_err(StoreError::db)?
        .map(|t| t.name().to_owned())
        .filter(|name| !is_raft_table(name))
        .collect();
    for name in names {
        if name == EVENTS.name() {
            txn.delete_table(EVENTS).map_err(StoreError::db)?;
        } else if is_index(&name) {
            txn.delete_table(TableDefinition::<(&str, u64), ()>::new(&name))
                .map_err(StoreError::db)?;
        } else {
            txn.delete_table(TableDefinition::<&str, &[u8]>::new(&name))
                .map_err(StoreError::db)?;
        }
    }
    {
        let mut events = txn.open_table(EVENTS).map_err(StoreError::db)?;
        let mut indexes = Indexes::open(&txn)?;
        let mut table = None;
        loop {
            let record: Read = rmp_serde::decode::from_read(&mut input)
                .map_err(|e| StoreError::Encoding(format!("a snapshot's file cannot be read: {e}")))?;
            match record {
                Record::Table(name) => {
                    table = Some(
                        txn.open_table(TableDefinition::<&str, &[u8]>::new(&name))
                            .map_err(StoreError::db)?,
                    );
                }
                Record::Row(key, value) => {
                    let into = table
                        .as_mut()
                        .ok_or_else(|| StoreError::Encoding("a snapshot's row comes before its table".into()))?;
                    into.insert(key.as_str(), value.as_slice()).map_err(StoreError::db)?;
                }
                Record::Event(seq, body) => {
                    events.insert(seq, body.as_slice()).map_err(StoreError::db)?;
                    indexes.add(&Event::stored(seq, &body)?)?;
                }
                Record::End => break,
            }
        }
    }
    {
        let mut applied = txn.open_table(RAFT_APPLIED).map_err(StoreError::db)?;
        applied
            .insert(APPLIED, codec::encode(&meta.last_log_id)?.as_slice())
            .map_err(StoreError::db)?;
        applied
            .insert(MEMBERSHIP, codec::encode(&meta.last_membership)?.as_slice())
            .map_err(StoreError::db)?;
    }
    txn.commit().map_err(StoreError::db)
}

fn applied_in(txn: &redb::ReadTransaction) -> Result<AppliedState, StoreError> {
    let table = match txn.open_table(RAFT_APPLIED) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok((None, StoredMembership::default())),
        Err(e) => return Err(StoreError::db(e)),
    };
    let read = |key: &str| -> Result<Option<Vec<u8>>, StoreError> {
        Ok(table.get(key).map_err(StoreError::db)?.map(|v| v.value().to_vec()))
    };
    let applied = match read(APPLIED)? {
        Some(bytes) => codec::decode(&bytes)?,
        None => None,
    };
    let membership = match read(MEMBERSHIP)? {
        Some(bytes) => codec::decode(&bytes)?,
        None => StoredMembership::default(),
    };
    Ok((applied, membership))
}

/// Applies `entries` to `tables` in one transaction committed with `durability`, and records
/// the last one's id (and the last membership among them) as applied. Blocks.
pub(super) fn apply_entries(
    tables: &Tables,
    entries: &[Entry<Troupe>],
    durability: redb::Durability,
) -> Result<Vec<Applied>, StoreError> {
    tables.write(durability, |open| {
        let mut results = Vec::with_capacity(entries.len());
        let mut membership = None;
        for entry in entries {
            open.enter_term(entry.log_id.leader_id.term)?;
            match &entry.payload {
                EntryPayload::Blank => results.push(Applied::default()),
                EntryPayload::Normal(proposal) => results.push(open.apply_proposal(proposal)?),
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m.clone()));
                    results.push(Applied::default());
                }
            }
        }
        let mut applied = open.txn().open_table(RAFT_APPLIED).map_err(StoreError::db)?;
        let last = entries.last().map(|e| e.log_id);
        applied
            .insert(APPLIED, codec::encode(&last)?.as_slice())
            .map_err(StoreError::db)?;
        if let Some(m) = membership {
            applied
                .insert(MEMBERSHIP, codec::encode(&m)?.as_slice())
                .map_err(StoreError::db)?;
        }
        Ok(results)
    })
}

/// About how many bytes `entries` hold: their batches' (see [`crate::store::Batch::wire_bytes`]).
fn bytes(entries: &[Entry<Troupe>]) -> usize {
    let batches = entries.iter().filter_map(|e| match &e.payload {
        EntryPayload::Normal(proposal) => Some(proposal.batches.iter()),
        _ => None,
    });
    batches.flatten().map(crate::store::Batch::wire_bytes).sum()
}

/// What the tables in `db` have applied: the last log id and the membership among them.
pub(super) fn applied(db: &Database) -> Result<AppliedState, StoreError> {
    applied_in(&db.begin_read().map_err(StoreError::db)?)
}

impl RaftStateMachine<Troupe> for Machine {
    type SnapshotBuilder = Builder;

    async fn applied_state(&mut self) -> Result<AppliedState, StorageError<NodeId>> {
        let db = self.tables.db.clone();
        blocking(move || applied(&db)).await.map_err(read_error)
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<Troupe>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        if entries.is_empty() {
            // Nothing to record: an empty apply must not reset the applied log id.
            return Ok(Vec::new());
        }
        let last = entries.last().map_or(0, |e| e.log_id.index);
        // Committed by a majority that may be the leader alone, whose append may still be on
        // its way to the file.
        if let Some(log) = &self.log {
            log.covering(last).await.map_err(write_error)?;
        }
        super::super::fault::hold_apply().await;
        let tables = self.tables.clone();
        self.undurable += entries.len() as u64;
        // No fsync of its own but now and then: the entries are durable in the log already.
        let durability = match self.undurable >= DURABLE_EVERY {
            true => {
                self.undurable = 0;
                redb::Durability::Immediate
            }
            false => redb::Durability::None,
        };
        let in_place = matches!(durability, redb::Durability::None) && bytes(&entries) <= APPLIED_IN_PLACE_AT_MOST;
        let apply = move || {
            let results = apply_entries(&tables, &entries, durability)?;
            // The groups this node forwarded learn how they applied, before the leader says.
            tables.forwarded.applied(&entries, &results);
            Ok(results)
        };
        match in_place {
            true => apply(),
            false => blocking(apply).await,
        }
        .map_err(write_error)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Builder {
            db: self.tables.db.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError<NodeId>> {
        if let Some(abandoned) = self.receiving.take() {
            // A transfer that started over: its first file is of no use.
            let _ = std::fs::remove_file(abandoned);
        }
        let path = self
            .snapshots
            .new_path(&format!("receiving-{}", uuid::Uuid::new_v4().simple()));
        let file = blocking({
            let path = path.clone();
            move || create_private(&path)
        })
        .await
        .map_err(write_error)?;
        self.receiving = Some(path);
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut file = *snapshot;
        file.flush().await.map_err(write_error)?;
        super::super::fault::hold_apply().await;
        let mut file = file.into_std().await;
        let received = self.receiving.take();
        let (tables, owned) = (self.tables.clone(), meta.clone());
        let installed = blocking(move || {
            let bytes = file.seek(std::io::SeekFrom::End(0)).map_err(StoreError::db)?;
            file.rewind().map_err(StoreError::db)?;
            // Counted first: a writer settling a doubt must not miss it.
            tables.forwarded.installed();
            tables.replace(|db| install_snapshot(file, db, &owned))?;
            Ok(bytes)
        })
        .await;
        let bytes = match installed {
            Ok(bytes) => bytes,
            Err(e) => {
                if let Some(received) = received {
                    let _ = std::fs::remove_file(received);
                }
                return Err(write_error(e));
            }
        };
        tracing::info!(last = ?meta.last_log_id, bytes, "installed a snapshot of the cluster's state");
        metrics::counter!(super::snapshots::COUNTED, "event" => "installed").increment(1);
        // Kept, to send on to a member that needs it in turn.
        if let Some(received) = received {
            let path = self.snapshots.new_path(&uuid::Uuid::new_v4().simple().to_string());
            match std::fs::rename(&received, &path) {
                Ok(()) => {
                    let (snapshots, meta) = (self.snapshots.clone(), meta.clone());
                    // Off the Raft runtime's thread: holding it syncs its file.
                    let _ = blocking(move || {
                        snapshots.hold(Held { meta, path });
                        Ok(())
                    })
                    .await;
                }
                Err(e) => tracing::warn!(error = %e, "could not keep the snapshot installed"),
            }
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<Troupe>>, StorageError<NodeId>> {
        let held = self.snapshots.open_held().map_err(read_error)?;
        Ok(held.map(|(meta, file)| Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}

pub(super) struct Builder {
    db: Arc<Database>,
    snapshots: Arc<Snapshots>,
}

impl RaftSnapshotBuilder<Troupe> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<Troupe>, StorageError<NodeId>> {
        let (db, name) = (self.db.clone(), uuid::Uuid::new_v4().simple().to_string());
        let path = self.snapshots.new_path(&name);
        let (written, (applied, membership)) = {
            let path = path.clone();
            blocking(move || {
                let state = write_snapshot(&db, &path)?;
                let file = std::fs::File::open(&path).map_err(StoreError::db)?;
                Ok((file, state))
            })
            .await
            .map_err(read_error)?
        };
        let meta = Meta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id: format!("{}-{name}", applied.map_or(0, |id| id.index)),
        };
        tracing::debug!(last = ?applied, path = %path.display(), "built a snapshot");
        metrics::counter!(super::snapshots::COUNTED, "event" => "built").increment(1);
        let (snapshots, kept) = (self.snapshots.clone(), meta.clone());
        // Off the Raft runtime's thread: holding it syncs its file.
        let _ = blocking(move || {
            snapshots.hold(Held { meta: kept, path });
            Ok(())
        })
        .await;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(written)),
        })
    }
}

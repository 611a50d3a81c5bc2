//! The state machine: the store's own tables. Applying an entry writes its batches and
//! numbers their events in one transaction with the applied log id, then fans the events
//! out to this node's subscribers. That commit needs no fsync of its own: the entry is on
//! disk in the log already (a file of its own), and after a crash the entries past the
//! durable applied id are applied again, alike. Every [`DURABLE_EVERY`] entries an apply is
//! made durable, which bounds what a start applies again and lets the file reuse the pages
//! freed since; the log is purged only behind a durable apply (see `log`).
//!
//! A snapshot is a copy of every replicated table (the log's own tables aside), for a node
//! that joins or fell behind the purged log. It is held in memory until the next one.

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StoredMembership,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::{blocking, is_raft_table, read_error, write_error, Applied, NodeId, Troupe, RAFT_APPLIED};
use crate::codec;
use crate::events::Event;
use crate::store::apply::Tables;
use crate::store::{StoreError, EVENTS, EVENT_KINDS};

const APPLIED: &str = "applied";
/// Entries applied between two durable applies.
const DURABLE_EVERY: u64 = 1024;
pub(super) const MEMBERSHIP: &str = "membership";

type Meta = SnapshotMeta<NodeId, BasicNode>;
type Membership = StoredMembership<NodeId, BasicNode>;
/// What the state machine has applied: the last log id and the membership it holds.
pub(super) type AppliedState = (Option<LogId<NodeId>>, Membership);

/// The snapshot this node holds now.
#[derive(Clone)]
struct Held {
    meta: Meta,
    data: Arc<Vec<u8>>,
}

pub(super) struct Machine {
    tables: Arc<Tables>,
    held: Arc<Mutex<Option<Held>>>,
    /// Entries applied since the last durable apply.
    undurable: u64,
}

impl Machine {
    pub fn new(tables: Arc<Tables>) -> Self {
        Self {
            tables,
            held: Arc::default(),
            undurable: 0,
        }
    }
}

/// Every replicated table's rows: what a snapshot carries.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Dump {
    tables: Vec<(String, Vec<(String, ByteBuf)>)>,
    events: Vec<(u64, ByteBuf)>,
}

impl Dump {
    fn read(db: &Database) -> Result<(AppliedState, Self), StoreError> {
        let txn = db.begin_read().map_err(StoreError::db)?;
        let mut dump = Dump::default();
        let names: Vec<String> = txn
            .list_tables()
            .map_err(StoreError::db)?
            .map(|t| t.name().to_owned())
            .collect();
        for name in names {
            if is_raft_table(&name) || name == EVENT_KINDS.name() {
                continue;
            }
            if name == EVENTS.name() {
                let events = txn.open_table(EVENTS).map_err(StoreError::db)?;
                for row in events.iter().map_err(StoreError::db)? {
                    let (k, v) = row.map_err(StoreError::db)?;
                    dump.events.push((k.value(), ByteBuf::from(v.value())));
                }
                continue;
            }
            let table = txn
                .open_table(TableDefinition::<&str, &[u8]>::new(&name))
                .map_err(StoreError::db)?;
            let mut rows = Vec::new();
            for row in table.iter().map_err(StoreError::db)? {
                let (k, v) = row.map_err(StoreError::db)?;
                rows.push((k.value().to_owned(), ByteBuf::from(v.value())));
            }
            dump.tables.push((name, rows));
        }
        Ok((applied_in(&txn)?, dump))
    }

    /// Replaces every replicated table with the dump's, in one durable transaction.
    fn install(self, db: &Database, meta: &Meta) -> Result<(), StoreError> {
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
            } else if name == EVENT_KINDS.name() {
                txn.delete_table(EVENT_KINDS).map_err(StoreError::db)?;
            } else {
                txn.delete_table(TableDefinition::<&str, &[u8]>::new(&name))
                    .map_err(StoreError::db)?;
            }
        }
        for (name, rows) in &self.tables {
            let mut table = txn
                .open_table(TableDefinition::<&str, &[u8]>::new(name))
                .map_err(StoreError::db)?;
            for (k, v) in rows {
                table.insert(k.as_str(), v.as_slice()).map_err(StoreError::db)?;
            }
        }
        {
            let mut events = txn.open_table(EVENTS).map_err(StoreError::db)?;
            let mut kinds = txn.open_table(EVENT_KINDS).map_err(StoreError::db)?;
            for (seq, body) in &self.events {
                events.insert(*seq, body.as_slice()).map_err(StoreError::db)?;
                let kind = Event::stored(*seq, body)?.kind;
                kinds.insert((kind.as_str(), *seq), ()).map_err(StoreError::db)?;
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
        blocking(move || apply_entries(&tables, &entries, durability))
            .await
            .map_err(write_error)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Builder {
            db: self.tables.db.clone(),
            held: self.held.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let dump: Dump = codec::decode(&data).map_err(write_error)?;
        let (tables, owned) = (self.tables.clone(), meta.clone());
        blocking(move || tables.replace(|db| dump.install(db, &owned)))
            .await
            .map_err(write_error)?;
        tracing::info!(last = ?meta.last_log_id, bytes = data.len(), "installed a snapshot of the cluster's state");
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = Some(Held {
            meta: meta.clone(),
            data: Arc::new(data),
        });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<Troupe>>, StorageError<NodeId>> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(held.map(|h| Snapshot {
            meta: h.meta,
            snapshot: Box::new(Cursor::new(h.data.as_ref().clone())),
        }))
    }
}

pub(super) struct Builder {
    db: Arc<Database>,
    held: Arc<Mutex<Option<Held>>>,
}

impl RaftSnapshotBuilder<Troupe> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<Troupe>, StorageError<NodeId>> {
        let db = self.db.clone();
        let (applied, membership, data) = blocking(move || {
            let ((applied, membership), dump) = Dump::read(&db)?;
            Ok((applied, membership, codec::encode(&dump)?))
        })
        .await
        .map_err(read_error)?;
        let meta = Meta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id: format!("{}-{}", applied.map_or(0, |id| id.index), uuid::Uuid::new_v4().simple()),
        };
        tracing::debug!(last = ?applied, bytes = data.len(), "built a snapshot");
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = Some(Held {
            meta: meta.clone(),
            data: Arc::new(data.clone()),
        });
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

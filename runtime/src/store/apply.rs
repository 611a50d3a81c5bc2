//! Applying committed batches to the node's tables: what the replicated state machine does
//! with each log entry, the same on every node, so every node's tables and event sequence
//! numbers come out alike.

use std::sync::{Arc, Mutex};

use redb::{Database, Durability, ReadableTable, WriteTransaction};
use tokio::sync::broadcast;

use super::index::Indexes;
use super::project::{Change, Projection, Projections};
use super::raft::{session, Applied, Proposal};
use super::{Batch, Op, StoreError, Table, View, EVENTS};
use crate::events::Event;

/// Makes every commit to `db` so far durable (those made with `Durability::None` included).
pub(super) fn persist(db: &Database) -> Result<(), StoreError> {
    let mut txn = db.begin_write().map_err(StoreError::db)?;
    txn.set_durability(Durability::Immediate).map_err(StoreError::db)?;
    txn.commit().map_err(StoreError::db)
}

/// [`persist`], in a commit that also records the file's allocator state (redb's quick
/// repair), for the last commit before the node stops. A file whose last commit did not
/// record it is repaired when it is opened again: every page read and its checksum
/// verified, seconds for a file of hundreds of megabytes, during which a restarted member is
/// silent and may be declared DOWN. redb records it as the database closes, but the node's
/// process ends with its databases still open (many handles share them).
pub(super) fn persist_for_restart(db: &Database) -> Result<(), StoreError> {
    let mut txn = db.begin_write().map_err(StoreError::db)?;
    txn.set_durability(Durability::Immediate).map_err(StoreError::db)?;
    txn.set_quick_repair(true);
    txn.commit().map_err(StoreError::db)
}

/// The node's tables as one writer at a time changes them: the state machine, applying
/// what the log committed, and on a cluster of one member the store's writer, whose groups
/// need no log (see [`super::raft`]). Each write numbers its events from where the last
/// one stopped, fans them out once committed, and trims the event log.
pub(super) struct Tables {
    pub db: Arc<Database>,
    live: broadcast::Sender<Arc<Event>>,
    log: Mutex<Log>,
    /// What the node keeps in memory from the tables, following each write.
    projections: Projections,
    /// The groups this node forwarded to the leader, answered as their entries apply here.
    pub forwarded: Arc<super::raft::forwarded::Forwarded>,
}

impl Tables {
    pub fn open(db: Arc<Database>, live: broadcast::Sender<Arc<Event>>, retention: u64) -> Result<Self, StoreError> {
        let log = Mutex::new(Log::read(&db, retention)?);
        Ok(Self {
            db,
            live,
            log,
            projections: Projections::default(),
            forwarded: Arc::default(),
        })
    }

    /// Registers `projection`: it is built from the tables as they are now, and from then on
    /// follows every write and every replacement (see [`super::project`]). Blocks.
    pub fn project(&self, projection: Arc<dyn Projection>) -> Result<(), StoreError> {
        use redb::ReadableDatabase;
        // Held while it is built: no write applies between the read and the registration.
        let _log = self.log();
        let txn = self.db.begin_read().map_err(StoreError::db)?;
        projection.rebuild(&View::new(&txn))?;
        self.projections.add(projection);
        Ok(())
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `body` in one write transaction committed with `durability`, then fans out the
    /// events it applied. Blocks: call it where blocking is allowed.
    pub fn write<T>(
        &self,
        durability: Durability,
        body: impl FnOnce(&mut Open<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut log = self.log();
        let mut txn = self.db.begin_write().map_err(StoreError::db)?;
        txn.set_durability(durability).map_err(StoreError::db)?;
        let (out, next_seq, events, keys, term) = {
            let mut open = Open::new(&txn, log.next_seq, self.projections.followed(), log.term)?;
            let out = body(&mut open)?;
            (out, open.seq, open.events, open.keys, open.term)
        };
        txn.commit().map_err(StoreError::db)?;
        (log.next_seq, log.term) = (next_seq, term);
        let events: Vec<Arc<Event>> = events.into_iter().map(Arc::new).collect();
        let something = !events.is_empty() || !keys.is_empty();
        if something && !self.projections.is_empty() {
            self.follow(&events, &keys);
        }
        for e in events {
            let _ = self.live.send(e);
        }
        if let Some(cut) = log.cut() {
            match trim(&self.db, log.oldest, cut) {
                Ok(()) => {
                    tracing::debug!(from = log.oldest, to = cut, "trimmed the event log");
                    log.oldest = cut;
                }
                Err(e) => tracing::error!(error = %e, "trimming the event log failed"),
            }
        }
        Ok(out)
    }

    /// Replaces the tables with what `install` writes (a snapshot), and reads the event
    /// log's bounds again.
    pub fn replace(&self, install: impl FnOnce(&Database) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let mut log = self.log();
        install(&self.db)?;
        *log = Log::read(&self.db, log.retention)?;
        // Rebuilt while the log is still held: no write applies between the install and the
        // projections' reading of it.
        use redb::ReadableDatabase;
        let txn = self.db.begin_read().map_err(StoreError::db)?;
        self.projections.rebuild(&View::new(&txn));
        Ok(())
    }

    /// Tells the projections of a write just committed.
    fn follow(&self, events: &[Arc<Event>], keys: &[(Table, String)]) {
        self.projections.apply(&Change::new(&self.db, events, keys));
    }
}

/// The event log as the state machine sees it: what it holds and how much it may keep.
#[derive(Debug, Clone, Copy)]
pub struct Log {
    pub oldest: u64,
    pub next_seq: u64,
    pub retention: u64,
    /// The term [`super::batch::TERM_KEY`] holds, once a write has read or written it: the
    /// entries of one term read nothing more (see [`Open::enter_term`]).
    pub(super) term: Option<u64>,
}

impl Log {
    /// Where to cut so the newest `retention` events stay, once the log has grown a tenth
    /// past the limit (trimming in steps keeps the deletes rare and batched).
    pub fn cut(&self) -> Option<u64> {
        if self.retention == 0 {
            return None;
        }
        let held = self.next_seq - self.oldest;
        (held > self.retention + self.retention / 10).then(|| self.next_seq - self.retention)
    }

    /// The log's bounds as the database holds them.
    pub(super) fn read(db: &Database, retention: u64) -> Result<Self, StoreError> {
        use redb::ReadableDatabase;
        let read = db.begin_read().map_err(StoreError::db)?;
        let events = match read.open_table(EVENTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                return Ok(Self {
                    oldest: 1,
                    next_seq: 1,
                    retention,
                    term: None,
                })
            }
            Err(e) => return Err(StoreError::db(e)),
        };
        let next_seq = events
            .last()
            .map_err(StoreError::db)?
            .map(|(k, _)| k.value() + 1)
            .unwrap_or(1);
        let oldest = events
            .first()
            .map_err(StoreError::db)?
            .map(|(k, _)| k.value())
            .unwrap_or(next_seq);
        Ok(Self {
            oldest,
            next_seq,
            retention,
            term: None,
        })
    }
}

/// The tables of one write transaction, each opened once: a group can hold tens of
/// thousands of ops.
pub(super) struct Open<'t> {
    txn: &'t WriteTransaction,
    log: redb::Table<'t, u64, &'static [u8]>,
    indexes: Indexes<'t>,
    tables: Vec<(Table, redb::Table<'t, &'static str, &'static [u8]>)>,
    seq: u64,
    /// The events applied so far, to fan out once the transaction commits.
    events: Vec<Event>,
    /// The tables whose changed keys the projections follow, and those keys so far.
    followed: Vec<Table>,
    keys: Vec<(Table, String)>,
    /// The term [`super::batch::TERM_KEY`] holds, when known (see [`Open::enter_term`]).
    term: Option<u64>,
}

impl<'t> Open<'t> {
    fn new(txn: &'t WriteTransaction, seq: u64, followed: Vec<Table>, term: Option<u64>) -> Result<Self, StoreError> {
        Ok(Self {
            txn,
            log: txn.open_table(EVENTS).map_err(StoreError::db)?,
            indexes: Indexes::open(txn)?,
            tables: Vec::new(),
            seq,
            events: Vec::new(),
            followed,
            keys: Vec::new(),
            term,
        })
    }

    /// Records that the entries applied next belong to `term` (see [`Batch::led_in`]):
    /// written when the term changes, so once per term and member, and read only at the
    /// first write after a start or a snapshot's install.
    pub fn enter_term(&mut self, term: u64) -> Result<(), StoreError> {
        if self.term == Some(term) {
            return Ok(());
        }
        let value = super::batch::term_value(term);
        let meta = self.table(super::META)?;
        let held = meta
            .get(super::batch::TERM_KEY)
            .map_err(StoreError::db)?
            .map(|v| v.value().to_vec());
        if held.as_deref() != Some(value.as_slice()) {
            meta.insert(super::batch::TERM_KEY, value.as_slice())
                .map_err(StoreError::db)?;
            self.changed(super::META, super::batch::TERM_KEY);
        }
        self.term = Some(term);
        Ok(())
    }

    /// The transaction, for what the caller writes beside the batches.
    pub fn txn(&self) -> &'t WriteTransaction {
        self.txn
    }

    /// Applies a log entry's group, when it comes next from its writer (see
    /// [`session`]); nothing of it when it does not.
    pub fn apply_proposal(&mut self, proposal: &Proposal) -> Result<Applied, StoreError> {
        if let Some(origin) = proposal.origin {
            let mut sessions = self.txn.open_table(session::SESSIONS).map_err(StoreError::db)?;
            if let Some(held) = session::admit(&mut sessions, origin)? {
                return Ok(Applied {
                    out_of_order: Some(held),
                    ..Applied::default()
                });
            }
        }
        self.apply_group(&proposal.batches)
    }

    /// Applies the batches of one group in order: per batch, the sequence numbers its events
    /// got, or that it was stale.
    pub fn apply_group(&mut self, batches: &[Batch]) -> Result<Applied, StoreError> {
        let mut applied = Applied::default();
        for (i, batch) in batches.iter().enumerate() {
            match self.apply(batch)? {
                Some(seqs) => applied.seqs.push(seqs),
                None => {
                    applied.seqs.push(Vec::new());
                    applied.stale.push(i as u32);
                }
            }
        }
        Ok(applied)
    }

    /// Applies one batch; the sequence numbers its events got, or `None` when a condition
    /// of the batch ([`Op::Require`]) does not hold, and nothing of it is applied.
    fn apply(&mut self, batch: &Batch) -> Result<Option<Vec<u64>>, StoreError> {
        for op in &batch.ops {
            if let Op::Require { table, key, value } = op {
                let held = self
                    .table(*table)?
                    .get(key.as_str())
                    .map_err(StoreError::db)?
                    .map(|v| v.value().to_vec());
                if held != *value {
                    return Ok(None);
                }
            }
        }
        let mut seqs = Vec::new();
        let mut bodies = batch.bodies.iter();
        for op in &batch.ops {
            match op {
                Op::Put { table, key, value } => {
                    self.table(*table)?
                        .insert(key.as_str(), value.as_slice())
                        .map_err(StoreError::db)?;
                    self.changed(*table, key);
                }
                Op::Delete { table, key } => {
                    self.table(*table)?.remove(key.as_str()).map_err(StoreError::db)?;
                    self.changed(*table, key);
                }
                Op::Require { .. } => {}
                Op::Event(new) => {
                    let encoded;
                    let bytes = match bodies.next() {
                        Some(body) if !body.is_empty() => body.as_slice(),
                        _ => {
                            encoded = new.body()?;
                            encoded.as_slice()
                        }
                    };
                    self.log.insert(self.seq, bytes).map_err(StoreError::db)?;
                    let event = new.clone().sequenced(self.seq);
                    self.indexes.add(&event)?;
                    seqs.push(self.seq);
                    self.events.push(event);
                    self.seq += 1;
                }
            }
        }
        Ok(Some(seqs))
    }

    fn changed(&mut self, table: Table, key: &str) {
        if self.followed.contains(&table) {
            self.keys.push((table, key.to_owned()));
        }
    }

    fn table(&mut self, table: Table) -> Result<&mut redb::Table<'t, &'static str, &'static [u8]>, StoreError> {
        let pos = match self.tables.iter().position(|(t, _)| *t == table) {
            Some(pos) => pos,
            None => {
                let opened = self.txn.open_table(table.definition()).map_err(StoreError::db)?;
                self.tables.push((table, opened));
                self.tables.len() - 1
            }
        };
        Ok(&mut self.tables[pos].1)
    }
}

/// Deletes the events in `from..to`, and their entries in the indexes.
pub(super) fn trim(db: &Database, from: u64, to: u64) -> Result<(), StoreError> {
    let mut txn = db.begin_write().map_err(StoreError::db)?;
    // Trimming is this node's own housekeeping: the next durable commit carries it.
    let _ = txn.set_durability(redb::Durability::None);
    {
        let mut log = txn.open_table(EVENTS).map_err(StoreError::db)?;
        let mut indexes = Indexes::open(&txn)?;
        let mut gone = Vec::new();
        for entry in log.range(from..to).map_err(StoreError::db)? {
            let (k, v) = entry.map_err(StoreError::db)?;
            gone.push(Event::stored(k.value(), v.value())?);
        }
        log.retain_in(from..to, |_, _| false).map_err(StoreError::db)?;
        for event in &gone {
            indexes.remove(event)?;
        }
    }
    txn.commit().map_err(StoreError::db)
}

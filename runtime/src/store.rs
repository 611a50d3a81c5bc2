//! The node's durable store: one redb file, written by a single writer thread that commits
//! every batch it has received since the last commit in one transaction (group commit).
//!
//! ```text
//!  callers ──Batch──▶ mpsc ──▶ writer thread: drain ▶ one write txn ▶ fsync ▶ reply + fan out events
//!  readers ──────────────────▶ read txns (MVCC, never blocked by the writer)
//! ```
//!
//! A batch's events get their sequence numbers inside the commit, so the log order is the
//! commit order, and an event is fanned out only after it is durable.

mod batch;
mod writer;

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, mpsc, oneshot};

pub use batch::{Batch, Op, Table};
#[cfg(test)]
use writer::Log;

use crate::events::Event;

pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

/// Why the store could not do what was asked. Every variant means the node's disk or database
/// is broken, not that the request was wrong.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    #[error("encoding error: {0}")]
    Encoding(String),
    #[error("the store writer has stopped")]
    Closed,
    #[error("the database is open in another process")]
    Locked,
    #[error(
        "events after {after} are no longer kept (the oldest kept is {oldest}): read the current state, then resume from node.lastSeq"
    )]
    Compacted { after: u64, oldest: u64 },
}

impl StoreError {
    pub(crate) fn db(e: impl std::fmt::Display) -> Self {
        Self::Database(e.to_string())
    }
}

/// How the store is run.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// How many of the newest events the log keeps; 0 keeps all. Older ones are trimmed in
    /// the background, a tenth of the limit at a time.
    pub event_retention: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            event_retention: 1_000_000,
        }
    }
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    tx: mpsc::UnboundedSender<writer::Request>,
    live: broadcast::Sender<Arc<Event>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// A commit that was handed to the writer; await it to know the batch is durable.
#[derive(Debug)]
pub struct Ticket(oneshot::Receiver<Result<Vec<u64>, Arc<StoreError>>>);

impl Ticket {
    /// Waits until the batch is committed and returns the sequence numbers its events got.
    pub async fn durable(self) -> Result<Vec<u64>, StoreError> {
        match self.0.await {
            Ok(Ok(seqs)) => Ok(seqs),
            Ok(Err(e)) => Err(StoreError::Database(e.to_string())),
            Err(_) => Err(StoreError::Closed),
        }
    }
}

impl Store {
    /// Opens (or creates) the database at `path` with default options.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, StoreOptions::default())
    }

    /// Opens (or creates) the database at `path` and starts its writer thread.
    pub fn open_with(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let db = match Database::create(path) {
            Ok(db) => Arc::new(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::Locked),
            Err(e) => return Err(StoreError::db(e)),
        };
        let txn = db.begin_write().map_err(StoreError::db)?;
        for table in Table::ALL {
            txn.open_table(table.definition()).map_err(StoreError::db)?;
        }
        txn.open_table(EVENTS).map_err(StoreError::db)?;
        txn.commit().map_err(StoreError::db)?;
        let (oldest, next_seq) = {
            let read = db.begin_read().map_err(StoreError::db)?;
            let events = read.open_table(EVENTS).map_err(StoreError::db)?;
            let next = events
                .last()
                .map_err(StoreError::db)?
                .map(|(k, _)| k.value() + 1)
                .unwrap_or(1);
            let oldest = events
                .first()
                .map_err(StoreError::db)?
                .map(|(k, _)| k.value())
                .unwrap_or(next);
            (oldest, next)
        };
        let (live, _) = broadcast::channel(4096);
        let (tx, rx) = mpsc::unbounded_channel();
        let log = writer::Log {
            oldest,
            next_seq,
            retention: options.event_retention,
        };
        writer::spawn(db.clone(), rx, live.clone(), log).map_err(StoreError::db)?;
        Ok(Self {
            inner: Arc::new(Inner { db, tx, live }),
        })
    }

    /// Hands a batch to the writer without waiting; the returned ticket resolves once it is
    /// durable. Batches are committed in the order they were handed over.
    pub fn submit(&self, batch: Batch) -> Ticket {
        let (done, rx) = oneshot::channel();
        // A closed writer drops `done`, and the ticket then reports `Closed`.
        let _ = self.inner.tx.send(writer::Request::Write { batch, done });
        Ticket(rx)
    }

    /// Writes a batch and waits until it is durable.
    pub async fn write(&self, batch: Batch) -> Result<Vec<u64>, StoreError> {
        self.submit(batch).durable().await
    }

    /// Waits until everything handed over so far is durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.write(Batch::default()).await.map(|_| ())
    }

    /// Live events, each sent after its commit. Use [`crate::events::EventLog`] for a stream
    /// that also replays the log.
    pub fn live(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.live.subscribe()
    }

    /// Reads one value.
    pub async fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_owned();
        self.read(move |db| {
            let txn = db.begin_read().map_err(StoreError::db)?;
            let t = txn.open_table(table.definition()).map_err(StoreError::db)?;
            let v = t.get(key.as_str()).map_err(StoreError::db)?;
            Ok(v.map(|v| v.value().to_vec()))
        })
        .await
    }

    /// Reads up to `limit` entries with keys after `after` (all when `None`), in key order,
    /// keeping those `keep` accepts.
    pub async fn scan<F>(
        &self,
        table: Table,
        after: Option<String>,
        limit: usize,
        keep: F,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>
    where
        F: Fn(&[u8]) -> bool + Send + 'static,
    {
        self.read(move |db| {
            let txn = db.begin_read().map_err(StoreError::db)?;
            let t = txn.open_table(table.definition()).map_err(StoreError::db)?;
            let range = match &after {
                Some(a) => t.range::<&str>((std::ops::Bound::Excluded(a.as_str()), std::ops::Bound::Unbounded)),
                None => t.range::<&str>(..),
            }
            .map_err(StoreError::db)?;
            let mut out = Vec::new();
            for entry in range {
                let (k, v) = entry.map_err(StoreError::db)?;
                if keep(v.value()) {
                    out.push((k.value().to_owned(), v.value().to_vec()));
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// How many entries of `table` `keep` accepts.
    pub async fn count<F>(&self, table: Table, keep: F) -> Result<u64, StoreError>
    where
        F: Fn(&[u8]) -> bool + Send + 'static,
    {
        self.read(move |db| {
            let txn = db.begin_read().map_err(StoreError::db)?;
            let t = txn.open_table(table.definition()).map_err(StoreError::db)?;
            let mut n = 0;
            for entry in t.iter().map_err(StoreError::db)? {
                let (_, v) = entry.map_err(StoreError::db)?;
                if keep(v.value()) {
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
    }

    /// Events with a sequence number above `after`, oldest first, at most `limit`. Fails with
    /// [`StoreError::Compacted`] when some of them were trimmed: a gap is never silent.
    pub async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.read(move |db| {
            let txn = db.begin_read().map_err(StoreError::db)?;
            let t = txn.open_table(EVENTS).map_err(StoreError::db)?;
            // Sequence numbers are dense from 1, so anything below the first kept one existed.
            let oldest = t.first().map_err(StoreError::db)?.map(|(k, _)| k.value());
            if let Some(oldest) = oldest.filter(|o| after.saturating_add(1) < *o) {
                return Err(StoreError::Compacted { after, oldest });
            }
            let mut out = Vec::new();
            for entry in t.range(after.saturating_add(1)..).map_err(StoreError::db)? {
                let (_, v) = entry.map_err(StoreError::db)?;
                out.push(Event::decode(v.value())?);
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    /// The sequence number of the newest committed event (0 when there is none).
    pub async fn last_seq(&self) -> Result<u64, StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(StoreError::db)?;
            let t = txn.open_table(EVENTS).map_err(StoreError::db)?;
            let last = t.last().map_err(StoreError::db)?.map_or(0, |(k, _)| k.value());
            Ok(last)
        })
        .await
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.inner.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Database(format!("read task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests;

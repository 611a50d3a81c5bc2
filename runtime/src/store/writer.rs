//! The single writer thread. It blocks on the first request, then drains everything queued
//! behind it into the same transaction: while one fsync runs, the next group accumulates.
//!
//! A group whose commit fails is committed again batch by batch, so a batch the database
//! refuses fails alone and the others of its group still commit. Any other failure (I/O,
//! corruption) is fatal: the writer answers every waiting batch, marks the store failed and
//! stops, and the node fail-stops so that recovery replays from what is on disk.

use std::sync::Arc;

use redb::{Database, ReadableTable, WriteTransaction};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::fault::{Fault, FaultHook};
use super::{Batch, Op, StoreError, Table, EVENTS, EVENT_KINDS};
use crate::events::Event;

/// Upper bound on the batches folded into one commit, so one commit's latency stays bounded.
const MAX_GROUP: usize = 8192;

pub(super) struct Request {
    pub batch: Batch,
    pub done: Done,
}

/// Who learns how a batch fared.
pub(super) enum Done {
    /// A waiting caller ([`super::Ticket`]).
    Reply(oneshot::Sender<Result<Vec<u64>, StoreError>>),
    /// A writer that does not wait, called on the writer thread only if the batch failed:
    /// no task and no channel per write.
    OnFailure(Box<dyn FnOnce(StoreError) + Send>),
}

impl Done {
    pub(super) fn send(self, outcome: Result<Vec<u64>, StoreError>) {
        match (self, outcome) {
            (Done::Reply(tx), outcome) => {
                let _ = tx.send(outcome);
            }
            (Done::OnFailure(f), Err(e)) => f(e),
            (Done::OnFailure(_), Ok(_)) => {}
        }
    }
}

/// The writer's view of the event log: what it holds and how much it may keep.
#[derive(Debug, Clone, Copy)]
pub struct Log {
    pub oldest: u64,
    pub next_seq: u64,
    pub retention: u64,
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
}

pub(super) struct Writer {
    pub db: Arc<Database>,
    pub rx: mpsc::UnboundedReceiver<Request>,
    pub live: broadcast::Sender<Arc<Event>>,
    pub log: Log,
    pub health: watch::Sender<Option<String>>,
    pub fault: Option<FaultHook>,
}

/// Marks the store failed if the writer thread ends any way but a clean close (a panic).
struct Sentinel {
    health: watch::Sender<Option<String>>,
    clean: bool,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if !self.clean && self.health.borrow().is_none() {
            let _ = self
                .health
                .send(Some("the store writer thread stopped unexpectedly".into()));
        }
    }
}

/// Why one commit failed.
enum CommitError {
    /// The database refused this content; other batches are fine.
    Rejected(String),
    /// The store is broken.
    Fatal(String),
}

impl Writer {
    pub fn spawn(self) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("troupe-store-writer".into())
            .spawn(move || self.run())
            .map(|_| ())
    }

    fn run(mut self) {
        let mut sentinel = Sentinel {
            health: self.health.clone(),
            clean: false,
        };
        let mut group = Vec::new();
        while let Some(first) = self.rx.blocking_recv() {
            group.push(first);
            while group.len() < MAX_GROUP {
                match self.rx.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            if let Err(reason) = self.commit_group(&mut group) {
                tracing::error!(%reason, "the store failed; no further writes are accepted");
                let _ = self.health.send(Some(reason.clone()));
                self.rx.close();
                while let Ok(r) = self.rx.try_recv() {
                    group.push(r);
                }
                for r in group.drain(..) {
                    r.done.send(Err(StoreError::Failed(reason.clone())));
                }
                sentinel.clean = true;
                return;
            }
        }
        sentinel.clean = true;
    }

    /// Commits a group, answering every batch in it; `Err` when the store is broken.
    fn commit_group(&mut self, group: &mut Vec<Request>) -> Result<(), String> {
        let started = std::time::Instant::now();
        let outcome = self.commit(group.iter().map(|r| &r.batch));
        metrics::histogram!("troupe_store_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("troupe_store_commits_total").increment(1);
        match outcome {
            Ok((events, seqs)) => {
                self.applied(events);
                for (req, seqs) in group.drain(..).zip(seqs) {
                    req.done.send(Ok(seqs));
                }
                Ok(())
            }
            Err(CommitError::Fatal(reason)) => Err(reason),
            Err(CommitError::Rejected(reason)) if group.len() == 1 => {
                tracing::warn!(%reason, "a batch was rejected");
                for req in group.drain(..) {
                    req.done.send(Err(StoreError::Rejected(reason.clone())));
                }
                Ok(())
            }
            Err(CommitError::Rejected(_)) => {
                // Find the bad batches: one commit each, in the original order.
                for req in std::mem::take(group) {
                    let mut alone = vec![req];
                    self.commit_group(&mut alone)?;
                }
                Ok(())
            }
        }
    }

    /// After a commit: fan out its events, then trim the log if it grew past its limit.
    fn applied(&mut self, events: Vec<Event>) {
        self.log.next_seq += events.len() as u64;
        for e in events {
            let _ = self.live.send(Arc::new(e));
        }
        if let Some(cut) = self.log.cut() {
            match trim(&self.db, self.log.oldest, cut) {
                Ok(()) => {
                    tracing::debug!(from = self.log.oldest, to = cut, "trimmed the event log");
                    self.log.oldest = cut;
                }
                Err(e) => tracing::error!(error = %e, "trimming the event log failed"),
            }
        }
    }

    /// Applies the batches in one transaction. Returns the committed events and, per batch,
    /// the sequence numbers its events got.
    fn commit<'a>(&self, batches: impl Iterator<Item = &'a Batch>) -> Result<(Vec<Event>, Vec<Vec<u64>>), CommitError> {
        let txn = self.db.begin_write().map_err(fatal_of)?;
        let mut events = Vec::new();
        let mut per_batch = Vec::new();
        {
            let mut open = Open {
                txn: &txn,
                log: txn.open_table(EVENTS).map_err(fatal_of)?,
                kinds: txn.open_table(EVENT_KINDS).map_err(fatal_of)?,
                tables: Vec::new(),
                seq: self.log.next_seq,
            };
            for batch in batches {
                match self.fault.as_ref().and_then(|hook| hook(batch)) {
                    Some(Fault::Reject) => return Err(CommitError::Rejected("injected fault: batch rejected".into())),
                    Some(Fault::Fail) => return Err(CommitError::Fatal("injected fault: commit failed".into())),
                    None => {}
                }
                per_batch.push(open.apply(batch, &mut events)?);
            }
        }
        txn.commit().map_err(fatal_of)?;
        Ok((events, per_batch))
    }
}

/// The tables of one write transaction, each opened once: a group can hold tens of
/// thousands of ops.
struct Open<'t> {
    txn: &'t WriteTransaction,
    log: redb::Table<'t, u64, &'static [u8]>,
    kinds: redb::Table<'t, (&'static str, u64), ()>,
    tables: Vec<(Table, redb::Table<'t, &'static str, &'static [u8]>)>,
    seq: u64,
}

impl<'t> Open<'t> {
    /// Applies one batch; the sequence numbers its events got.
    fn apply(&mut self, batch: &Batch, events: &mut Vec<Event>) -> Result<Vec<u64>, CommitError> {
        let mut seqs = Vec::new();
        let mut bodies = batch.bodies.iter();
        for op in &batch.ops {
            match op {
                Op::Put { table, key, value } => {
                    self.table(*table)?
                        .insert(key.as_str(), value.as_slice())
                        .map_err(storage)?;
                }
                Op::Delete { table, key } => {
                    self.table(*table)?.remove(key.as_str()).map_err(storage)?;
                }
                Op::Event(new) => {
                    let encoded;
                    let bytes = match bodies.next() {
                        Some(body) if !body.is_empty() => body.as_slice(),
                        _ => {
                            encoded = new.body().map_err(|e| CommitError::Rejected(e.to_string()))?;
                            encoded.as_slice()
                        }
                    };
                    self.log.insert(self.seq, bytes).map_err(storage)?;
                    let event = new.clone().sequenced(self.seq);
                    self.kinds
                        .insert((event.kind.as_str(), self.seq), ())
                        .map_err(storage)?;
                    seqs.push(self.seq);
                    events.push(event);
                    self.seq += 1;
                }
            }
        }
        Ok(seqs)
    }

    fn table(&mut self, table: Table) -> Result<&mut redb::Table<'t, &'static str, &'static [u8]>, CommitError> {
        let pos = match self.tables.iter().position(|(t, _)| *t == table) {
            Some(pos) => pos,
            None => {
                let opened = self.txn.open_table(table.definition()).map_err(fatal_of)?;
                self.tables.push((table, opened));
                self.tables.len() - 1
            }
        };
        Ok(&mut self.tables[pos].1)
    }
}

fn fatal_of(e: impl std::fmt::Display) -> CommitError {
    CommitError::Fatal(e.to_string())
}

/// A value the database cannot hold is this batch's fault; anything else is the store's.
fn storage(e: redb::StorageError) -> CommitError {
    match e {
        redb::StorageError::ValueTooLarge(n) => CommitError::Rejected(format!("a value of {n} bytes is too large")),
        other => CommitError::Fatal(other.to_string()),
    }
}

/// Deletes the events in `from..to`, and their entries in the kind index.
fn trim(db: &Database, from: u64, to: u64) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(StoreError::db)?;
    {
        let mut log = txn.open_table(EVENTS).map_err(StoreError::db)?;
        let mut kinds = txn.open_table(EVENT_KINDS).map_err(StoreError::db)?;
        let mut gone = Vec::new();
        for entry in log.range(from..to).map_err(StoreError::db)? {
            let (k, v) = entry.map_err(StoreError::db)?;
            gone.push((Event::stored(k.value(), v.value())?.kind, k.value()));
        }
        log.retain_in(from..to, |_, _| false).map_err(StoreError::db)?;
        for (kind, seq) in gone {
            kinds.remove((kind.as_str(), seq)).map_err(StoreError::db)?;
        }
    }
    txn.commit().map_err(StoreError::db)
}

//! The single writer thread. It blocks on the first request, then drains everything queued
//! behind it into the same transaction: while one fsync runs, the next group accumulates.

use std::sync::Arc;

use redb::Database;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{Batch, Op, StoreError, Table, EVENTS};
use crate::events::Event;

/// Upper bound on the batches folded into one commit, so one commit's latency stays bounded.
const MAX_GROUP: usize = 8192;

pub(super) enum Request {
    Write {
        batch: Batch,
        done: oneshot::Sender<Result<Vec<u64>, Arc<StoreError>>>,
    },
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

pub(super) fn spawn(
    db: Arc<Database>,
    mut rx: mpsc::UnboundedReceiver<Request>,
    live: broadcast::Sender<Arc<Event>>,
    mut log: Log,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("troupe-store-writer".into())
        .spawn(move || {
            let mut group = Vec::new();
            while let Some(first) = rx.blocking_recv() {
                group.push(first);
                while group.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(r) => group.push(r),
                        Err(_) => break,
                    }
                }
                let started = std::time::Instant::now();
                let outcome = commit(&db, &group, log.next_seq);
                metrics::histogram!("troupe_store_commit_seconds").record(started.elapsed().as_secs_f64());
                metrics::counter!("troupe_store_commits_total").increment(1);
                match outcome {
                    Ok((events, seqs)) => {
                        log.next_seq += events.len() as u64;
                        for (req, seqs) in group.drain(..).zip(seqs) {
                            let Request::Write { done, .. } = req;
                            let _ = done.send(Ok(seqs));
                        }
                        for e in events {
                            let _ = live.send(Arc::new(e));
                        }
                        if let Some(cut) = log.cut() {
                            match trim(&db, log.oldest, cut) {
                                Ok(()) => {
                                    tracing::debug!(from = log.oldest, to = cut, "trimmed the event log");
                                    log.oldest = cut;
                                }
                                Err(e) => tracing::error!(error = %e, "trimming the event log failed"),
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "store commit failed");
                        let e = Arc::new(e);
                        for req in group.drain(..) {
                            let Request::Write { done, .. } = req;
                            let _ = done.send(Err(e.clone()));
                        }
                    }
                }
            }
        })
        .map(|_| ())
}

/// Applies every batch of the group in one transaction. Returns the committed events and,
/// per batch, the sequence numbers its events got.
fn commit(db: &Database, group: &[Request], first_seq: u64) -> Result<(Vec<Event>, Vec<Vec<u64>>), StoreError> {
    let txn = db.begin_write().map_err(StoreError::db)?;
    let mut events = Vec::new();
    let mut per_batch = Vec::with_capacity(group.len());
    {
        let mut log = txn.open_table(EVENTS).map_err(StoreError::db)?;
        // Opened once per commit: a group can hold tens of thousands of ops.
        let mut tables = Vec::with_capacity(Table::ALL.len());
        for table in Table::ALL {
            tables.push(txn.open_table(table.definition()).map_err(StoreError::db)?);
        }
        let index = |t: &Table| Table::ALL.iter().position(|x| x == t).unwrap_or(0);
        let mut seq = first_seq;
        for Request::Write { batch, .. } in group {
            let mut seqs = Vec::new();
            for op in &batch.ops {
                match op {
                    Op::Put { table, key, value } => {
                        tables[index(table)]
                            .insert(key.as_str(), value.as_slice())
                            .map_err(StoreError::db)?;
                    }
                    Op::Delete { table, key } => {
                        tables[index(table)].remove(key.as_str()).map_err(StoreError::db)?;
                    }
                    Op::Event(new) => {
                        let event = new.clone().sequenced(seq);
                        log.insert(seq, event.encode()?.as_slice()).map_err(StoreError::db)?;
                        seqs.push(seq);
                        events.push(event);
                        seq += 1;
                    }
                }
            }
            per_batch.push(seqs);
        }
    }
    txn.commit().map_err(StoreError::db)?;
    Ok((events, per_batch))
}

/// Deletes the events in `from..to`.
fn trim(db: &Database, from: u64, to: u64) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(StoreError::db)?;
    {
        let mut log = txn.open_table(EVENTS).map_err(StoreError::db)?;
        log.retain_in(from..to, |_, _| false).map_err(StoreError::db)?;
    }
    txn.commit().map_err(StoreError::db)
}

//! The single writer thread. It waits for the first request, then drains what is queued
//! behind it (up to [`MAX_GROUP`] batches or [`GROUP_BYTES`]) into one group: one Raft log
//! entry, so one fsync covers the whole group while the next group accumulates behind it. Up to a few groups are in the log at once
//! ([`flight`]), answered in the order they were taken; on a cluster of one member a group
//! goes straight to the tables instead. On a cluster of several, batches nobody waits for
//! are held a moment for one somebody waits for, whose entry they share.
//!
//! Each batch is checked before it is proposed (fault hooks, events encoded, value sizes),
//! so a batch that cannot be written fails alone and the rest of its group goes on, and
//! applying a committed entry never meets a bad batch. A failure of the log itself (I/O,
//! corruption: openraft stops its core on any storage error) is fatal: the writer answers
//! every waiting batch, marks the store failed and stops, and the node fail-stops so that
//! recovery replays from what is on disk.

mod flight;
mod send;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use openraft::ServerState;
use tokio::sync::{mpsc, oneshot, watch};

use super::apply::Tables;
use super::fault::{Fault, FaultHook};
use super::raft::{Applied, Raft, TransportSlot};
use super::{Batch, Op, StoreError};
use flight::Flight;

/// Upper bound on the batches folded into one commit, so one commit's latency stays bounded.
const MAX_GROUP: usize = 8192;
/// A group takes no batch that would take it past this many bytes (`Batch::wire_bytes`):
/// that batch starts the next group. So a log entry stays below this (or is one batch, at
/// most [`super::batch::MAX_BATCH_BYTES`]), under the 16 MiB frame of the smaller transport.
/// Unbounded, 320 clients sending 255 KB payloads through a follower made entries of
/// hundreds of MB, whose forwarding and appends outlasted every timeout (elections, a
/// follower that never caught up). It is a little under 4 MiB on purpose: redb gives a
/// value a run of pages rounded up to a power of two, so an entry just over 4 MiB took
/// 8 MiB of the log's file, all written (a log of 1.9 GB on disk for about 1 GB of
/// entries); the margin covers an entry's own framing around its batches.
pub(super) const GROUP_BYTES: usize = (4 << 20) - (64 << 10);

pub(super) struct Request {
    pub batch: Batch,
    /// The condition the node's writes carried when this one was handed over.
    pub fence: Option<Op>,
    pub done: Done,
    /// When it was handed over: its wait for a leader counts from then.
    pub at: tokio::time::Instant,
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
    /// Whether a caller waits for this batch's answer now.
    fn awaited(&self) -> bool {
        matches!(self, Done::Reply(tx) if !tx.is_closed())
    }

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

pub(super) struct Writer {
    pub rx: mpsc::UnboundedReceiver<Request>,
    pub raft: Raft,
    pub transport: TransportSlot,
    pub health: watch::Sender<Option<String>>,
    pub fault: Option<FaultHook>,
    pub tables: Arc<Tables>,
    pub shared: Arc<Shared>,
    /// How long records nobody waits for are held (`raft::Timing::hold_unawaited`).
    pub hold: std::time::Duration,
    /// How long a forwarded write waits with nothing moving (`raft::Timing::forward_within`).
    pub forward_within: std::time::Duration,
}

/// What the store's handles and its writer thread share about writing without the log.
#[derive(Default)]
pub(super) struct Shared {
    /// Set when a member is about to be admitted: from then on every group goes through the
    /// log, even while this node is still the only member.
    pub logged: AtomicBool,
    /// Held while a member is admitted; true once what was written without the log is in a
    /// snapshot that members receive.
    pub handed_over: tokio::sync::Mutex<bool>,
    /// Set when the node stops its Raft member on purpose ([`super::Store::stop_raft`]):
    /// writes from then on are answered `Closed` without reaching the stopped log, and the
    /// store does not count it as failed.
    pub stopped: AtomicBool,
    /// Set when this node left the cluster ([`super::Store::left_the_cluster`]): writes from
    /// then on are answered `Left` at once instead of waiting for a leader that will never
    /// take them.
    pub left: AtomicBool,
    /// Set when this node stops with no majority of the cluster up to take its writes
    /// ([`super::Store::stop_unwritten`]): writes from then on are answered `Alone` at once,
    /// and so are those still waiting for a majority.
    pub alone: tokio::sync::watch::Sender<bool>,
    /// Whether this voter has heard from no leader for longer than an election takes (see
    /// `raft::prevote`): the leader its metrics still name is not written to.
    pub leader_silent: tokio::sync::watch::Sender<bool>,
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

impl Writer {
    /// Runs until every handle of the store is gone (or the log fails), then stops Raft.
    /// `rt` is the runtime the Raft core runs on; the writer thread owns it.
    pub fn run(mut self, rt: tokio::runtime::Runtime) {
        let mut sentinel = Sentinel {
            health: self.health.clone(),
            clean: false,
        };
        let outcome = rt.block_on(self.work());
        if outcome.is_err() && self.shared.stopped.load(Ordering::SeqCst) {
            // A write raced the node's own stop of its Raft member: not a failure.
            self.rx.close();
            while let Ok(r) = self.rx.try_recv() {
                r.done.send(Err(StoreError::Closed));
            }
        } else if let Err(reason) = outcome {
            tracing::error!(%reason, "the store failed; no further writes are accepted");
            let _ = self.health.send(Some(reason.clone()));
            self.rx.close();
            while let Ok(r) = self.rx.try_recv() {
                r.done.send(Err(StoreError::Failed(reason.clone())));
            }
        }
        if !self.shared.stopped.load(Ordering::SeqCst) {
            let _ = rt.block_on(self.raft.shutdown());
        }
        sentinel.clean = true;
    }

    /// Takes the queued batches group by group, while earlier groups are in flight, and
    /// answers each group in order once it landed; `Err` when the store is broken (every
    /// batch taken so far is answered then).
    async fn work(&mut self) -> Result<(), String> {
        let mut flight = Flight::new(self.raft.metrics().borrow().id, self.hold);
        // A batch that would have taken the last group past its bytes: the next one's first.
        let mut carried: Option<Request> = None;
        let outcome = loop {
            if let Some(first) = carried.take_if(|_| flight.has_room()) {
                let (group, over) = gather(first, || self.rx.try_recv().ok());
                carried = over;
                if let Err(reason) = self.take(&mut flight, group).await {
                    break Err(reason);
                }
                continue;
            }
            let held_until = flight.held_until();
            let (holds, room) = (flight.holds(), flight.has_room());
            tokio::select! {
                biased;
                landed = flight.next(), if flight.busy() => {
                    if let Err(reason) = self.land(&mut flight, landed).await {
                        break Err(reason);
                    }
                }
                _ = tokio::time::sleep_until(held_until), if holds && room => {
                    let held = flight.release();
                    if let Err(reason) = self.route(&mut flight, held).await {
                        break Err(reason);
                    }
                }
                first = self.rx.recv(), if carried.is_none() && flight.has_room() => {
                    let Some(first) = first else { break Ok(()) };
                    let (group, over) = gather(first, || self.rx.try_recv().ok());
                    carried = over;
                    if let Err(reason) = self.take(&mut flight, group).await {
                        break Err(reason);
                    }
                }
            }
        };
        let outcome = match outcome {
            Ok(()) if flight.holds() => {
                let held = flight.release();
                match self.route(&mut flight, held).await {
                    Ok(()) => self.settle(&mut flight).await,
                    Err(reason) => Err(reason),
                }
            }
            Ok(()) => self.settle(&mut flight).await,
            Err(reason) => Err(reason),
        };
        if let Err(reason) = &outcome {
            flight.fail(reason);
        }
        outcome
    }

    /// Checks a group's batches and sends it on its way.
    async fn take(&mut self, flight: &mut Flight, group: Vec<Request>) -> Result<(), String> {
        let Some(checked) = self.check(group)? else {
            return Ok(());
        };
        // On a cluster of several members, records nobody waits for wait a moment for a
        // write somebody waits for, and go in its entry (see `raft::Timing::hold_unawaited`),
        // unless the two together would make the entry too large: then they go first, alone.
        if flight.holds() && flight.held_bytes() + checked.bytes() > GROUP_BYTES {
            let held = flight.release();
            self.route(flight, held).await?;
        }
        let checked = match self.alone() {
            true => flight.with_held(checked),
            false => match flight.hold(checked) {
                Some(group) => group,
                None => return Ok(()),
            },
        };
        self.route(flight, checked).await
    }

    /// Sends a checked group on its way: straight to the tables when this node is the
    /// cluster alone, else into the log, behind the groups in flight.
    async fn route(&mut self, flight: &mut Flight, checked: Checked) -> Result<(), String> {
        let Checked {
            batches,
            waiting,
            delay,
            since,
        } = checked;
        if batches.iter().all(Batch::is_empty) && !flight.in_doubt() {
            // Only flushes: answered once every group taken before them is (through the
            // log when one of those may still be applied: see `Flight::in_doubt`).
            flight.flush(waiting);
            return Ok(());
        }
        if self.shared.stopped.load(Ordering::SeqCst) {
            answer(waiting, Err(StoreError::Closed));
            return Ok(());
        }
        if let Some(d) = delay {
            // An injected slow disk: the whole group waits, as behind a slow fsync.
            std::thread::sleep(d);
        }
        if self.alone() {
            // The node became the cluster alone (or still is): what was sent through the
            // log lands first, so the tables take the groups in order.
            self.settle(flight).await?;
            let started = std::time::Instant::now();
            let outcome = self.write_alone(&batches)?;
            committed(started);
            answer(waiting, Ok(outcome));
            return Ok(());
        }
        flight.send(self, batches, waiting, since);
        Ok(())
    }

    /// Runs each batch of `group` through the fault hooks and seals it; `Err` for an injected
    /// failure of the store (the group is answered then). `None` when no batch is left.
    fn check(&self, group: Vec<Request>) -> Result<Option<Checked>, String> {
        let mut checked = Checked {
            batches: Vec::with_capacity(group.len()),
            waiting: Vec::with_capacity(group.len()),
            delay: None,
            since: None,
        };
        let mut requests = group.into_iter();
        while let Some(Request {
            mut batch,
            fence,
            done,
            at,
        }) = requests.next()
        {
            let mut fault = self.fault.as_ref().and_then(|hook| hook(&batch));
            if let Some(Fault::Delay(d)) = fault {
                checked.delay = Some(checked.delay.map_or(d, |x: std::time::Duration| x.max(d)));
                fault = None;
            }
            match fault {
                Some(Fault::Fail) => {
                    let reason = "injected fault: commit failed".to_owned();
                    let failed = || StoreError::Failed(reason.clone());
                    done.send(Err(failed()));
                    for done in checked.waiting.into_iter().chain(requests.map(|r| r.done)) {
                        done.send(Err(failed()));
                    }
                    return Err(reason);
                }
                Some(Fault::Reject) => done.send(Err(StoreError::Rejected("injected fault: batch rejected".into()))),
                Some(Fault::Full) => done.send(Err(StoreError::Unavailable(
                    "injected fault: no space left on device".into(),
                ))),
                Some(Fault::Delay(_)) | None => match batch.seal() {
                    Ok(()) => {
                        batch.ops.extend(fence);
                        checked.batches.push(batch);
                        checked.waiting.push(done);
                        checked.since = Some(checked.since.map_or(at, |since| since.min(at)));
                    }
                    Err(e) => {
                        tracing::warn!(reason = %e, "a batch was rejected");
                        done.send(Err(StoreError::Rejected(e.to_string())));
                    }
                },
            }
        }
        Ok((!checked.waiting.is_empty()).then_some(checked))
    }

    /// Whether this node is the cluster's only member, and leads it: no other member will
    /// ever read the log's entries (one that joins receives a snapshot, see
    /// [`super::Store::admit`]), so a group needs no entry.
    fn alone(&self) -> bool {
        if self.shared.logged.load(Ordering::SeqCst) {
            return false;
        }
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let mut members = m.membership_config.membership().nodes();
        m.state == ServerState::Leader && members.next().is_some_and(|(id, _)| *id == m.id) && members.next().is_none()
    }

    /// Writes a group straight to the tables in one durable transaction, as the state
    /// machine would apply its entry: on one member, a majority is this node's disk, and an
    /// entry would cost a second transaction and a round trip through the Raft core.
    fn write_alone(&self, batches: &[Batch]) -> Result<Applied, String> {
        self.tables
            .write(redb::Durability::Immediate, |open| open.apply_group(batches))
            .map_err(|e| format!("writing to the tables failed: {e}"))
    }
}

/// A group: `first`, then what `queued` gives while the group has room for it, in batches
/// ([`MAX_GROUP`]) and bytes ([`GROUP_BYTES`]); the batch that did not fit is given back,
/// to start the next group.
fn gather(first: Request, queued: impl FnMut() -> Option<Request>) -> (Vec<Request>, Option<Request>) {
    fill(first, |r| r.batch.wire_bytes(), queued, MAX_GROUP, GROUP_BYTES)
}

fn fill<T>(
    first: T,
    size: impl Fn(&T) -> usize,
    mut queued: impl FnMut() -> Option<T>,
    most: usize,
    bytes: usize,
) -> (Vec<T>, Option<T>) {
    let mut taken = size(&first);
    let mut group = vec![first];
    while group.len() < most {
        let Some(next) = queued() else { break };
        let more = size(&next);
        if taken + more > bytes {
            return (group, Some(next));
        }
        taken += more;
        group.push(next);
    }
    (group, None)
}

/// A group's batches that passed the checks, and who waits for each.
#[derive(Default)]
struct Checked {
    batches: Vec<Batch>,
    waiting: Vec<Done>,
    delay: Option<std::time::Duration>,
    /// When the first of its batches was handed over.
    since: Option<tokio::time::Instant>,
}

impl Checked {
    /// About how many bytes the group's entry takes.
    fn bytes(&self) -> usize {
        self.batches.iter().map(Batch::wire_bytes).sum()
    }
}

/// Counts one commit of the store, begun at `started`.
fn committed(started: std::time::Instant) {
    metrics::histogram!("troupe_store_commit_seconds").record(started.elapsed().as_secs_f64());
    metrics::counter!("troupe_store_commits_total").increment(1);
}

/// Why a batch whose condition failed at its apply was refused.
const STALE: &str = "a condition of the write no longer holds (this node was declared down while it could not \
                     be heard, or another write changed what it read first): read what it would change, then \
                     send it again";

/// Answers each batch of a group by how the group fared.
fn answer(waiting: Vec<Done>, outcome: Result<Applied, StoreError>) {
    match outcome {
        Ok(applied) => {
            let mut seqs = applied.seqs.into_iter();
            for (i, done) in waiting.into_iter().enumerate() {
                let seqs = seqs.next().unwrap_or_default();
                done.send(match applied.stale.contains(&(i as u32)) {
                    true => Err(StoreError::Stale(STALE.into())),
                    false => Ok(seqs),
                });
            }
        }
        Err(e) => {
            for done in waiting {
                done.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fill;

    /// A group stops before the batch that would take it past its bytes, which starts the
    /// next group: an entry stays within the bound (where it went past it by up to a whole
    /// batch, and a value's pages in redb round up to a power of two).
    #[test]
    fn a_group_stops_before_the_batch_that_would_take_it_past_its_bytes() {
        let mut queued = vec![300, 301, 500, 100].into_iter();
        let (group, over) = fill(400, |b| *b, || queued.next(), 10, 1_000);
        assert_eq!((group, over), (vec![400, 300], Some(301)));
        let (group, over) = fill(301, |b| *b, || queued.next(), 10, 1_000);
        assert_eq!((group, over), (vec![301, 500, 100], None));
        // A batch alone may be larger than the bound; so many batches, no more.
        let mut queued = vec![1, 1, 1].into_iter();
        assert_eq!(fill(5_000, |b| *b, || queued.next(), 10, 1_000), (vec![5_000], Some(1)));
        assert_eq!(fill(1, |b| *b, || queued.next(), 2, 1_000), (vec![1, 1], None));
        assert_eq!(queued.next(), Some(1), "left queued");
    }
}

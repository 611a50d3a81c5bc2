//! The groups a writer has in the log at once. A group is sent (proposed here when this node
//! leads, else forwarded to the leader) as soon as it is taken, while up to [`WINDOW`] - 1
//! earlier groups still wait for their commit, and groups are answered in the order they
//! were taken. On a follower a group's round trip to the leader and back is most of a
//! write's time; with one group at a time, a caller's write waited behind every group
//! taken before it, its own and others' (a task's `RUNNING` and `SUCCEEDED` records behind
//! the next task's submission).
//!
//! Each group carries its place in this writer's run (see `raft::session`), and the state
//! machine applies a group only right after the one before it. When a group does not land
//! (no leader reachable, an unknown outcome) or lands out of order, nothing more is sent
//! until every group in flight landed; then the groups to send again go first, in order,
//! in a new run, so the ones still in flight from the old run can never apply after them.

use std::collections::VecDeque;
use std::time::Instant;

use futures::future::{self, BoxFuture, FutureExt};
use futures::stream::{FuturesOrdered, StreamExt};

use super::{answer, committed, Checked, Done, Writer};
use crate::store::raft::forwarded::Mark;
use crate::store::raft::{Applied, NodeId, Origin, Proposal, LEADER_WITHIN};
use crate::store::{Batch, StoreError};

/// Groups in flight at once: enough for a follower to send the next group while earlier
/// ones travel (a lone client's next write does not wait behind its task's records).
const WINDOW: usize = 4;
/// A further group goes only while fewer batches than this are in flight. Under load one
/// group in flight already carries many batches, and the next one waits and grows: each
/// group is one log entry, one fsync on every member, and openraft 0.9 appends and sends
/// entries one after another, so more, smaller groups would only cost more (64 clients
/// through a follower, in one session: 2,732–2,802 submits/s with one group at a time,
/// 2,026–2,305 with four whatever their size; BENCHMARKS.md).
const FEW_BATCHES: usize = 16;
/// How long records nobody waits for (a task's `RUNNING` and its result, an agent's
/// counters) are held for a write somebody waits for, whose entry they then share
/// (`raft::Timing::hold_unawaited`, 1 ms). With one
/// client, its next submission comes within this of its previous task's records: each task
/// is then one log entry instead of two to three, one fsync and one round of replication
/// less on every member (three nodes, one client, in one session: 1.3 against 2.1 ms of the
/// leader's CPU per task; BENCHMARKS.md). Under load a write somebody waits for is always
/// near. The records become durable this much later at most; a node alone writes them at
/// once.
/// How soon a group that found no reachable leader is sent again.
const AGAIN_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// How one sending of a group ended.
pub(super) enum Attempt {
    /// Committed and applied here (or refused as out of order: `Applied::out_of_order`).
    Applied(Applied),
    /// Surely not written: worth sending again once a leader is reachable.
    Again(StoreError),
    /// Failed: its callers are told.
    Failed(StoreError),
    /// Not known whether it was written (the leader's answer lost, or not within its time):
    /// kept, and settled by a barrier (see [`Flight::after_barrier`]).
    Unknown(StoreError),
    /// This node's own log stopped.
    Fatal(String),
    /// Only flushes: nothing was sent.
    Flushed,
}

/// One group taken from the queue.
pub(super) struct Group {
    /// `None` for a group of flushes only.
    batches: Option<std::sync::Arc<Vec<Batch>>>,
    waiting: Vec<Done>,
    started: Instant,
    /// Until when it may wait for a reachable leader.
    deadline: tokio::time::Instant,
    /// Where its last sending came from (its run and place), and where the account of the
    /// groups applied here stood then; once sent.
    origin: Option<(Origin, Mark)>,
    /// Its last sending's outcome is unknown: the error its callers get if the doubt is not
    /// settled.
    doubtful: Option<StoreError>,
    /// An empty group sent first in a new run to settle the doubtful ones behind it.
    barrier: bool,
}

impl Group {
    fn new(batches: Option<std::sync::Arc<Vec<Batch>>>, waiting: Vec<Done>, deadline: tokio::time::Instant) -> Self {
        Self {
            batches,
            waiting,
            started: Instant::now(),
            deadline,
            origin: None,
            doubtful: None,
            barrier: false,
        }
    }
}

pub(super) struct Flight {
    node: NodeId,
    /// This writer's run, and the place of the last group sent in it.
    epoch: u64,
    seq: u64,
    landing: FuturesOrdered<BoxFuture<'static, Attempt>>,
    /// The groups in flight, in the order they land.
    groups: VecDeque<Group>,
    /// Groups to send again, in order, once every group in flight landed.
    again: Vec<Group>,
    /// The groups kept behind a barrier in flight, in order. A group whose outcome is
    /// unknown is settled by an empty group sent first in a new run: once that is applied
    /// here, no group of the earlier run can apply any more (the state machine refuses a
    /// run's groups once a later run began, see `raft::session`), so the doubtful group was
    /// written if and only if this node applied it meanwhile (`Forwarded::landed_since`): it
    /// is answered with that outcome, or sent again behind the barrier, in its place. Until
    /// then no further group is taken.
    after_barrier: Vec<Group>,
    /// A group did not land, or landed out of order: nothing new is sent until every group
    /// in flight landed.
    troubled: bool,
    /// A group found no reachable leader: the next sending waits a moment for one.
    leaderless: bool,
    /// A group failed with its outcome unknown (it may still be applied), and no group
    /// landed since: a flush then goes through the log (see [`Flight::in_doubt`]).
    in_doubt: bool,
    /// Batches nobody waits for, held until a batch somebody waits for comes, or until when.
    held: Option<(Checked, tokio::time::Instant)>,
    /// How long the first batch held waits at most.
    hold: std::time::Duration,
}

impl Flight {
    pub fn new(node: NodeId, hold: std::time::Duration) -> Self {
        // A run later than any earlier run of this node (a clock set back is caught by the
        // state machine, which then names the run it holds).
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        Self {
            node,
            epoch,
            seq: 0,
            landing: FuturesOrdered::new(),
            groups: VecDeque::new(),
            again: Vec::new(),
            after_barrier: Vec::new(),
            troubled: false,
            leaderless: false,
            in_doubt: false,
            held: None,
            hold,
        }
    }

    /// Whether a group is in flight.
    pub fn busy(&self) -> bool {
        !self.groups.is_empty()
    }

    /// Whether another group may be taken now.
    pub fn has_room(&self) -> bool {
        let batches: usize = self.groups.iter().map(|g| g.waiting.len()).sum();
        !self.troubled
            && self.after_barrier.is_empty()
            && (self.groups.is_empty() || (self.groups.len() < WINDOW && batches < FEW_BATCHES))
    }

    /// The next group to land, in the order they were taken. Only while [`Self::busy`].
    pub async fn next(&mut self) -> (Group, Attempt) {
        let attempt = self.landing.next().await.unwrap_or(Attempt::Flushed);
        let group = self.groups.pop_front().expect("a group in flight for each attempt");
        (group, attempt)
    }

    /// Whether a group failed with its outcome unknown and no group landed since. A flush
    /// must then go through the log: an entry of its own, committed, settles whether the
    /// doubtful one is in the log before it (then it is applied here first) or never will
    /// be. Answered at once instead, a flush would let a reader take the tables for what
    /// was written while the doubtful entry may still apply after it (a scheduler reading a
    /// task as still QUEUED whose run it had already recorded).
    pub fn in_doubt(&self) -> bool {
        self.in_doubt
    }

    /// Flushes, answered once every group taken before them is.
    pub fn flush(&mut self, waiting: Vec<Done>) {
        self.push(
            Group::new(None, waiting, tokio::time::Instant::now()),
            future::ready(Attempt::Flushed).boxed(),
        );
    }

    /// Sends a group of batches behind those in flight. Its wait for a leader counts from
    /// when its first batch was handed over (`since`): one that waited behind a troubled
    /// group (a leader that lost its majority, settling the writes it had taken) waited that
    /// long and then its own 5 s, 7-10 s in all.
    pub fn send(
        &mut self,
        writer: &Writer,
        batches: Vec<Batch>,
        waiting: Vec<Done>,
        since: Option<tokio::time::Instant>,
    ) {
        let now = tokio::time::Instant::now();
        let group = Group::new(
            Some(std::sync::Arc::new(batches)),
            waiting,
            (since.unwrap_or(now) + LEADER_WITHIN).max(now),
        );
        self.launch(writer, group);
    }

    fn launch(&mut self, writer: &Writer, mut group: Group) {
        let Some(batches) = group.batches.clone() else {
            return self.push(group, future::ready(Attempt::Flushed).boxed());
        };
        self.seq += 1;
        let origin = Origin {
            node: self.node,
            epoch: self.epoch,
            seq: self.seq,
        };
        group.origin = Some((origin, writer.tables.forwarded.mark()));
        group.doubtful = None;
        let proposal = Proposal {
            batches,
            origin: Some(origin),
        };
        self.push(group, writer.launch(proposal));
    }

    fn push(&mut self, group: Group, attempt: BoxFuture<'static, Attempt>) {
        self.groups.push_back(group);
        self.landing.push_back(attempt);
    }

    /// Whether batches are held (see [`Self::hold`]).
    pub fn holds(&self) -> bool {
        self.held.is_some()
    }

    /// About how many bytes the batches held take.
    pub fn held_bytes(&self) -> usize {
        self.held.as_ref().map_or(0, |(c, _)| c.bytes())
    }

    /// Until when the batches held wait (now when none are).
    pub fn held_until(&self) -> tokio::time::Instant {
        self.held
            .as_ref()
            .map_or_else(tokio::time::Instant::now, |(_, until)| *until)
    }

    /// The batches held, to be sent now.
    pub fn release(&mut self) -> Checked {
        self.held.take().map(|(c, _)| c).unwrap_or_default()
    }

    /// The batches held so far, then `checked`'s, in the order they were handed over.
    pub fn with_held(&mut self, mut checked: Checked) -> Checked {
        let Some((mut group, _)) = self.held.take() else {
            return checked;
        };
        group.batches.append(&mut checked.batches);
        group.waiting.append(&mut checked.waiting);
        group.delay = group.delay.max(checked.delay);
        group.since = group.since.into_iter().chain(checked.since).min();
        group
    }

    /// Holds `checked` when nobody waits for any of its batches (`None`), for at most
    /// the hold after the first batch held; else the group to send: the batches
    /// held so far, then its own.
    pub fn hold(&mut self, checked: Checked) -> Option<Checked> {
        let unawaited = !checked.waiting.iter().any(Done::awaited);
        let until = self
            .held
            .as_ref()
            .map_or_else(|| tokio::time::Instant::now() + self.hold, |(_, u)| *u);
        let group = self.with_held(checked);
        if unawaited && group.waiting.len() < FEW_BATCHES && group.bytes() < super::GROUP_BYTES {
            self.held = Some((group, until));
            return None;
        }
        Some(group)
    }

    /// Answers every group taken and not answered yet: the store failed.
    pub fn fail(&mut self, reason: &str) {
        if let Some((held, _)) = self.held.take() {
            answer(held.waiting, Err(StoreError::Failed(reason.to_owned())));
        }
        self.landing = FuturesOrdered::new();
        let kept = self.again.drain(..).chain(self.after_barrier.drain(..));
        for group in self.groups.drain(..).chain(kept) {
            answer(group.waiting, Err(StoreError::Failed(reason.to_owned())));
        }
    }
}

impl Writer {
    /// Answers a group that landed, or keeps it to send again; once every group in flight
    /// landed after a trouble, sends those again in a new run. `Err` when the log stopped.
    pub(super) async fn land(&self, flight: &mut Flight, (group, attempt): (Group, Attempt)) -> Result<(), String> {
        if group.barrier {
            return self.barrier_landed(flight, group, attempt).await;
        }
        match attempt {
            // Flushes behind a group kept to send again wait for it: they go again too, in
            // their place. Flushes behind a group whose outcome is unknown go through the
            // log, as an entry of their own (see `Flight::in_doubt`).
            Attempt::Flushed if !flight.again.is_empty() || flight.in_doubt => {
                let mut group = group;
                if flight.in_doubt {
                    group.batches = Some(std::sync::Arc::new(Vec::new()));
                    group.deadline = tokio::time::Instant::now() + LEADER_WITHIN;
                }
                flight.troubled = true;
                flight.again.push(group);
            }
            Attempt::Flushed => answer(group.waiting, Ok(Applied::default())),
            Attempt::Applied(applied) => match applied.out_of_order {
                Some(held) => {
                    tracing::debug!(?held, "a group landed out of order; it is sent again");
                    // The state machine may hold a later run of this node (a clock set back).
                    flight.epoch = flight.epoch.max(held.epoch);
                    flight.troubled = true;
                    flight.again.push(group);
                }
                None => {
                    committed(group.started);
                    flight.in_doubt = false;
                    answer(group.waiting, Ok(applied));
                }
            },
            Attempt::Again(e) if tokio::time::Instant::now() < group.deadline => {
                tracing::debug!(error = %e, "the write waits for a reachable leader");
                flight.troubled = true;
                flight.leaderless = true;
                flight.again.push(group);
            }
            Attempt::Again(e) => {
                flight.troubled = true;
                answer(group.waiting, Err(e));
            }
            Attempt::Unknown(e) if tokio::time::Instant::now() < group.deadline && group.origin.is_some() => {
                tracing::debug!(error = %e, "a group's outcome is unknown; a barrier settles it");
                let mut group = group;
                group.doubtful = Some(e);
                flight.troubled = true;
                flight.again.push(group);
            }
            Attempt::Failed(e) | Attempt::Unknown(e) => {
                flight.troubled = true;
                flight.in_doubt |= group.batches.is_some();
                answer(group.waiting, Err(e));
            }
            Attempt::Fatal(reason) => {
                answer(group.waiting, Err(StoreError::Failed(reason.clone())));
                return Err(reason);
            }
        }
        if flight.troubled && !flight.busy() {
            self.send_again(flight).await;
        }
        Ok(())
    }

    /// Sends the groups kept after a trouble again, in order, as a new run.
    async fn send_again(&self, flight: &mut Flight) {
        flight.troubled = false;
        flight.epoch += 1;
        flight.seq = 0;
        if std::mem::take(&mut flight.leaderless) {
            tokio::time::sleep(AGAIN_AFTER).await;
            // Flushes have no deadline of their own: they wait for the groups before them.
            let until = flight
                .again
                .iter()
                .filter(|g| g.batches.is_some())
                .map(|g| g.deadline)
                .min();
            let within = until.map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
            // Each borrow of the metrics ends with its statement: one held across an await
            // would stop the Raft core, which publishes them.
            let _ = self
                .raft
                .wait(within)
                .metrics(|m| m.current_leader.is_some(), "a leader is known")
                .await;
        }
        if flight.again.iter().any(|g| g.doubtful.is_some()) {
            flight.after_barrier = std::mem::take(&mut flight.again);
            let mut barrier = Group::new(
                Some(std::sync::Arc::new(Vec::new())),
                Vec::new(),
                tokio::time::Instant::now() + LEADER_WITHIN,
            );
            barrier.barrier = true;
            flight.launch(self, barrier);
            return;
        }
        for group in std::mem::take(&mut flight.again) {
            flight.launch(self, group);
        }
    }

    /// The barrier sent to settle doubtful groups landed. Applied here, each group kept behind
    /// it is answered with how it applied (a doubtful one this node applied meanwhile) or sent
    /// again, in order; a doubtful one a snapshot installed here since may hold is answered
    /// with its doubt. Surely not applied (no leader known, refused as out of order), the
    /// barrier goes again in a later run while the groups' time lasts; of unknown outcome
    /// itself, the doubtful groups are answered with their doubt.
    async fn barrier_landed(&self, flight: &mut Flight, barrier: Group, attempt: Attempt) -> Result<(), String> {
        // Whether it applied here; else whether it surely did not (no leader known, or
        // refused as out of order): then it goes again, in a later run.
        let (settled, again) = match attempt {
            Attempt::Applied(applied) => match applied.out_of_order {
                None => (true, false),
                Some(held) => {
                    flight.epoch = flight.epoch.max(held.epoch);
                    (false, true)
                }
            },
            Attempt::Again(_) => {
                flight.leaderless = true;
                (false, true)
            }
            Attempt::Failed(_) | Attempt::Unknown(_) | Attempt::Flushed => (false, false),
            Attempt::Fatal(reason) => return Err(reason),
        };
        tracing::debug!(settled, origin = ?barrier.origin, "a barrier for groups of unknown outcome landed");
        let kept = std::mem::take(&mut flight.after_barrier);
        if settled {
            committed(barrier.started);
            flight.in_doubt = false;
            let forwarded = &self.tables.forwarded;
            for mut group in kept {
                let (Some(e), Some((origin, mark))) = (group.doubtful.take(), group.origin) else {
                    flight.launch(self, group);
                    continue;
                };
                match forwarded.landed_since(origin, mark) {
                    Some(Some((_, applied))) => {
                        committed(group.started);
                        answer(group.waiting, Ok(applied));
                    }
                    Some(None) => {
                        tracing::debug!(?origin, "a group of unknown outcome was not written; it is sent again");
                        flight.launch(self, group);
                    }
                    // A snapshot installed here since may hold it: its callers keep the doubt.
                    None => {
                        flight.in_doubt = true;
                        answer(group.waiting, Err(e));
                    }
                }
            }
            return Ok(());
        }
        // A barrier whose own outcome is unknown settles nothing: the doubtful groups are
        // answered with their doubt (a node cut off from the leader learns nothing more by
        // trying again, and its callers are told at once). One that surely was not written
        // (no leader known yet, after a leader's loss) goes again while their time lasts.
        let now = tokio::time::Instant::now();
        for mut group in kept {
            let late = group.batches.is_some() && now >= group.deadline;
            match group.doubtful.take() {
                Some(e) if !again || late => {
                    flight.in_doubt = true;
                    answer(group.waiting, Err(e));
                }
                doubt => {
                    group.doubtful = doubt;
                    if late {
                        let e = StoreError::Unavailable(format!("no leader took the write within {LEADER_WITHIN:?}"));
                        answer(group.waiting, Err(e));
                    } else {
                        flight.again.push(group);
                    }
                }
            }
        }
        flight.troubled = true;
        if !flight.busy() {
            self.send_again(flight).await;
        }
        Ok(())
    }

    /// Lands every group in flight (and those sent again), so none is left in the log's
    /// hands.
    pub(super) async fn settle(&self, flight: &mut Flight) -> Result<(), String> {
        while flight.busy() {
            let landed = flight.next().await;
            self.land(flight, landed).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(batches: usize) -> Group {
        Group::new(
            None,
            (0..batches).map(|_| Done::OnFailure(Box::new(|_| {}))).collect(),
            tokio::time::Instant::now(),
        )
    }

    #[test]
    fn a_further_group_goes_while_few_batches_are_in_flight_and_never_past_the_window() {
        let mut flight = Flight::new(1, std::time::Duration::from_millis(1));
        assert!(flight.has_room());
        flight.push(group(1), future::pending().boxed());
        assert!(flight.has_room(), "a lone client's next write goes at once");
        flight.push(group(FEW_BATCHES), future::pending().boxed());
        assert!(!flight.has_room(), "under load the next group waits, and grows");
        let mut flight = Flight::new(1, std::time::Duration::from_millis(1));
        for _ in 0..WINDOW {
            assert!(flight.has_room());
            flight.push(group(1), future::pending().boxed());
        }
        assert!(!flight.has_room());
        flight.troubled = true;
        flight.groups.clear();
        assert!(
            !flight.has_room(),
            "after a trouble nothing new goes until the kept groups are sent again"
        );
    }
}

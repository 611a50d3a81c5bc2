//! The single writer thread. It blocks on the first request, then drains everything queued
//! behind it into one proposal: one Raft log entry, so one fsync covers the whole group
//! while the next group accumulates behind it.
//!
//! Each batch is checked before it is proposed (fault hooks, events encoded, value sizes),
//! so a batch that cannot be written fails alone and the rest of its group goes on, and
//! applying a committed entry never meets a bad batch. A failure of the log itself (I/O,
//! corruption: openraft stops its core on any storage error) is fatal: the writer answers
//! every waiting batch, marks the store failed and stops, and the node fail-stops so that
//! recovery replays from what is on disk.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use openraft::error::RaftError;
use openraft::ServerState;
use tokio::sync::{mpsc, oneshot, watch};

use super::apply::Tables;
use super::fault::{Fault, FaultHook};
use super::raft::network::{forward, NotForwarded};
use super::raft::{refused, Applied, Proposal, Raft, TransportSlot, COMMIT_WITHIN, FORWARD_WITHIN, LEADER_WITHIN};
use super::{Batch, Op, StoreError};

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

pub(super) struct Writer {
    pub rx: mpsc::UnboundedReceiver<Request>,
    pub raft: Raft,
    pub transport: TransportSlot,
    pub health: watch::Sender<Option<String>>,
    pub fault: Option<FaultHook>,
    pub fence: Fence,
    pub tables: Arc<Tables>,
    pub shared: Arc<Shared>,
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
}

/// A condition every batch of this node carries (see [`super::Store::fence`]).
pub(super) type Fence = std::sync::Arc<std::sync::Mutex<Option<Op>>>;

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
        let mut group = Vec::new();
        while let Some(first) = self.rx.blocking_recv() {
            group.push(first);
            while group.len() < MAX_GROUP {
                match self.rx.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            if let Err(reason) = self.commit_group(&rt, &mut group) {
                tracing::error!(%reason, "the store failed; no further writes are accepted");
                let _ = self.health.send(Some(reason.clone()));
                self.rx.close();
                while let Ok(r) = self.rx.try_recv() {
                    group.push(r);
                }
                for r in group.drain(..) {
                    r.done.send(Err(StoreError::Failed(reason.clone())));
                }
                break;
            }
        }
        let _ = rt.block_on(self.raft.shutdown());
        sentinel.clean = true;
    }

    /// Proposes a group as one log entry and answers every batch in it once the entry is
    /// applied; `Err` when the store is broken (the batches not yet answered stay in `group`).
    fn commit_group(&mut self, rt: &tokio::runtime::Runtime, group: &mut Vec<Request>) -> Result<(), String> {
        let started = std::time::Instant::now();
        let mut batches = Vec::with_capacity(group.len());
        let mut waiting = Vec::new();
        let mut requests = std::mem::take(group).into_iter();
        let mut delay = None;
        while let Some(Request { mut batch, done }) = requests.next() {
            let mut fault = self.fault.as_ref().and_then(|hook| hook(&batch));
            if let Some(Fault::Delay(d)) = fault {
                delay = Some(delay.map_or(d, |x: std::time::Duration| x.max(d)));
                fault = None;
            }
            match fault {
                Some(Fault::Fail) => {
                    let reason = "injected fault: commit failed".to_owned();
                    done.send(Err(StoreError::Failed(reason.clone())));
                    for done in waiting {
                        Done::send(done, Err(StoreError::Failed(reason.clone())));
                    }
                    group.extend(requests);
                    return Err(reason);
                }
                Some(Fault::Reject) => done.send(Err(StoreError::Rejected("injected fault: batch rejected".into()))),
                Some(Fault::Full) => done.send(Err(StoreError::Unavailable(
                    "injected fault: no space left on device".into(),
                ))),
                Some(Fault::Delay(_)) | None => match batch.seal() {
                    Ok(()) => {
                        if !batch.is_empty() {
                            let fence = self.fence.lock().unwrap_or_else(|p| p.into_inner()).clone();
                            batch.ops.extend(fence);
                        }
                        batches.push(batch);
                        waiting.push(done);
                    }
                    Err(e) => {
                        tracing::warn!(reason = %e, "a batch was rejected");
                        done.send(Err(StoreError::Rejected(e.to_string())));
                    }
                },
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if batches.iter().all(Batch::is_empty) {
            // Only flushes: every earlier group is answered already, so they are answered
            // now, without an entry (a member with no majority can still flush).
            for done in waiting {
                done.send(Ok(Vec::new()));
            }
            return Ok(());
        }
        if let Some(d) = delay {
            // An injected slow disk: the whole group waits, as behind a slow fsync.
            std::thread::sleep(d);
        }
        let outcome = match self.alone() {
            true => self.write_alone(&batches),
            false => rt.block_on(self.propose(Proposal::new(batches))),
        };
        metrics::histogram!("troupe_store_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("troupe_store_commits_total").increment(1);
        match outcome {
            Ok(Ok(applied)) => {
                let mut seqs = applied.seqs.into_iter();
                for (i, done) in waiting.into_iter().enumerate() {
                    let seqs = seqs.next().unwrap_or_default();
                    done.send(match applied.stale.contains(&(i as u32)) {
                        true => Err(StoreError::Stale("a condition of the write no longer holds".into())),
                        false => Ok(seqs),
                    });
                }
                Ok(())
            }
            Ok(Err(refused)) => {
                for done in waiting {
                    done.send(Err(refused.clone()));
                }
                Ok(())
            }
            Err(reason) => {
                for done in waiting {
                    done.send(Err(StoreError::Failed(reason.clone())));
                }
                Err(reason)
            }
        }
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
    fn write_alone(&self, batches: &[Batch]) -> Result<Result<Applied, StoreError>, String> {
        self.tables
            .write(redb::Durability::Immediate, |open| open.apply_group(batches))
            .map(Ok)
            .map_err(|e| format!("writing to the tables failed: {e}"))
    }

    /// Proposes on this node when it leads, else forwards to the leader and waits until the
    /// entry is applied here too (so a caller reads its own write on this node). A leader
    /// that is not known or not reachable yet (an election, a link coming up after a
    /// restart) is waited for, up to [`LEADER_WITHIN`]. The outer `Err` is fatal: this
    /// node's own log stopped.
    async fn propose(&self, proposal: Proposal) -> Result<Result<Applied, StoreError>, String> {
        let deadline = tokio::time::Instant::now() + LEADER_WITHIN;
        loop {
            match self.try_propose(&proposal, deadline).await? {
                Err(NotForwarded::Again(e)) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "the write waits for a reachable leader");
                    tokio::time::sleep(AGAIN_AFTER).await;
                }
                Err(NotForwarded::Again(e) | NotForwarded::Failed(e)) => return Ok(Err(e)),
                Ok(applied) => return Ok(Ok(applied)),
            }
        }
    }

    async fn try_propose(
        &self,
        proposal: &Proposal,
        deadline: tokio::time::Instant,
    ) -> Result<Result<Applied, NotForwarded>, String> {
        // Each borrow of the metrics ends with its statement: one held across an await
        // would stop the Raft core, which publishes them.
        let (me, known) = {
            let metrics = self.raft.metrics();
            let now = metrics.borrow();
            (now.id, now.current_leader)
        };
        let leader = match known {
            Some(leader) => leader,
            None => match self
                .raft
                .wait(Some(deadline.saturating_duration_since(tokio::time::Instant::now())))
                .metrics(|m| m.current_leader.is_some(), "a leader is known")
                .await
            {
                Ok(m) => m.current_leader.unwrap_or(me),
                Err(_) => return Ok(Err(NotForwarded::Failed(StoreError::NotLeader { leader: None }))),
            },
        };
        if leader == me {
            // A leader cut off from its majority does not know it yet and would wait for ever.
            return match tokio::time::timeout(COMMIT_WITHIN, self.raft.client_write(proposal.clone())).await {
                Ok(Ok(written)) => Ok(Ok(written.data)),
                Ok(Err(RaftError::Fatal(fatal))) => Err(format!("the replicated log stopped: {fatal}")),
                // It stopped leading since: the next try forwards to the new leader.
                Ok(Err(other)) => Ok(Err(match refused(other) {
                    e @ StoreError::NotLeader { .. } => NotForwarded::Again(e),
                    e => NotForwarded::Failed(e),
                })),
                Err(_) => Ok(Err(NotForwarded::Failed(StoreError::Unavailable(format!(
                    "no majority of the cluster confirmed the write within {COMMIT_WITHIN:?}; it may still be applied"
                ))))),
            };
        }
        let name = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone());
        let Some(name) = name else {
            return Ok(Err(NotForwarded::Again(StoreError::NotLeader { leader: None })));
        };
        let forwarded = tokio::time::timeout(FORWARD_WITHIN, async {
            let (id, applied) = forward(&self.transport, &name, proposal, FORWARD_WITHIN).await?;
            self.raft
                .wait(Some(FORWARD_WITHIN))
                .applied_index_at_least(Some(id.index), "a forwarded write is applied here")
                .await
                .map_err(|e| {
                    NotForwarded::Failed(StoreError::Unavailable(format!(
                        "the write was made on {name} but is not yet applied here: {e}"
                    )))
                })?;
            Ok(applied)
        })
        .await
        .unwrap_or_else(|_| {
            Err(NotForwarded::Failed(StoreError::Unavailable(format!(
                "the leader {name} did not answer within {FORWARD_WITHIN:?}; the write may still be applied"
            ))))
        });
        Ok(forwarded)
    }
}

/// How soon a write that found no reachable leader tries again.
const AGAIN_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

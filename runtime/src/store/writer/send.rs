//! How one group is sent: proposed to this node's Raft core when it leads, else forwarded to
//! the leader, and how its landing is known (the leader's answer, or its entry applied here,
//! whichever comes first). An outcome this node cannot know is `Attempt::Unknown`, which the
//! flight settles with a barrier (see `flight`).

use std::sync::atomic::Ordering;

use futures::future::{self, BoxFuture, FutureExt};
use openraft::error::RaftError;
use openraft::raft::ClientWriteResponse;

use super::flight::Attempt;
use super::Writer;
use crate::store::raft::network::{forward, NotForwarded};
use crate::store::raft::{blocking, refused, session, status, Applied, Proposal, Raft, Troupe, COMMIT_WITHIN};
use crate::store::StoreError;

/// How long a forwarded group whose answer was lost (the link to the leader closed, the
/// leader went silent) waits for its entry to apply here, which answers it: a new leader is
/// elected and commits within about 1.5 s of a lost one. Past this, its caller is told that
/// it may still be applied.
const LOST_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// What a leader's write that no majority confirmed in time tells its caller: the write
/// waits in the log for a majority, and a cluster whose majority is gone for good has a way
/// out (a cluster of two with one member stopped answered only "it may still be applied").
const NO_MAJORITY_YET: &str = "it may still be applied, once a majority of the voters is up and \
     reachable again; if most of them are gone for good, make a cluster again from one survivor with \
     `troupe recover`";

impl Writer {
    /// Sends one group: proposed here when this node leads, else forwarded to the leader.
    /// A proposal reaches the Raft core (or leaves for the leader) in the order of these
    /// calls; the returned future says how it landed.
    pub(super) fn launch(&self, proposal: Proposal) -> BoxFuture<'static, Attempt> {
        if self.shared.left.load(Ordering::SeqCst) {
            return future::ready(Attempt::Failed(StoreError::Left)).boxed();
        }
        if *self.shared.alone.borrow() {
            return future::ready(Attempt::Failed(StoreError::Alone)).boxed();
        }
        let (me, leader, name, unconfirmed) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            let name = m
                .current_leader
                .and_then(|l| m.membership_config.membership().get_node(&l).map(|n| n.addr.clone()));
            (m.id, m.current_leader, name, status::lead_unconfirmed(&m))
        };
        match (leader, name) {
            // A leader no majority answered for a while (cut off, or restarted as the leader
            // of a term the others have left) commits nothing: the group waits for a leader
            // that can, and is answered that nothing was written if none comes in its time.
            // Proposed, it waited out the commit's 10 s (and the groups before it theirs) and
            // was answered that it might have been written.
            (Some(leader), _) if leader == me && unconfirmed => {
                future::ready(Attempt::Again(StoreError::NotLeader { leader: None })).boxed()
            }
            (Some(leader), _) if leader == me => self.propose(proposal),
            // A leader silent past an election's time (this node is cut off, or the leader
            // froze) is as good as none: the group waits for one, and is answered that
            // nothing was written if none comes in its time. Sent, it waited out the
            // forward's 10 s and was answered that it might have been written.
            (Some(_), Some(name)) if !*self.shared.leader_silent.borrow() => self.forward_to(name, proposal),
            _ => future::ready(Attempt::Again(StoreError::NotLeader { leader: None })).boxed(),
        }
    }

    /// Hands the proposal to this node's Raft core at once (its queue keeps the order).
    fn propose(&self, proposal: Proposal) -> BoxFuture<'static, Attempt> {
        let stopped = |why: String| future::ready(Attempt::Fatal(format!("the replicated log stopped{why}"))).boxed();
        let mut alone = self.shared.alone.subscribe();
        let raft = self.raft.clone();
        let pending = match self.raft.client_write_ff(proposal).now_or_never() {
            Some(Ok(pending)) => pending,
            Some(Err(fatal)) => return stopped(format!(": {fatal}")),
            None => return stopped(String::new()),
        };
        async move {
            let unknown = |why: String| Attempt::Unknown(StoreError::Unavailable(format!("{why}; {NO_MAJORITY_YET}")));
            // A leader cut off from its majority does not know it yet and would wait for ever.
            let written: Result<ClientWriteResponse<Troupe>, _> = tokio::select! {
                written = tokio::time::timeout(COMMIT_WITHIN, pending) => match written {
                    Ok(Ok(written)) => written,
                    Ok(Err(_)) => return Attempt::Fatal("the replicated log stopped".into()),
                    Err(_) => return unknown(format!("no majority of the cluster confirmed the write within {COMMIT_WITHIN:?}")),
                },
                // The node stops with no majority up: nothing confirms the write now.
                _ = alone.wait_for(|alone| *alone) => return Attempt::Failed(StoreError::Alone),
                // No majority answered this leader for 2 s: its outcome is settled as a lost
                // answer's is (see `flight`), within a leader's wait, and the writes behind it
                // do not wait out its 10 s (the first write to a leader that lost its majority
                // took 7-10 s, where the next ones took 5).
                _ = majority_lost(&raft) => return unknown("no majority of the cluster has answered this leader for 2s".into()),
            };
            match written.map_err(|e| refused(RaftError::APIError(e))) {
                Ok(written) => {
                    // Once applied by openraft's account too, as a forwarded write is (see
                    // `forward_to`): a mutation's answer carries the index this node applied,
                    // which a read on another node waits for, and openraft answers a write a
                    // moment before its metrics count the apply. Answered with the index before
                    // it, a client's read on a follower told of the commit later (the commit
                    // hold, `raft::network::hold`) missed the write.
                    applied_at_least(&raft, written.log_id.index, COMMIT_WITHIN).await;
                    Attempt::Applied(written.data)
                }
                // It stopped leading since: sent again, to the new leader.
                Err(e @ StoreError::NotLeader { .. }) => Attempt::Again(e),
                Err(e) => Attempt::Failed(e),
            }
        }
        .boxed()
    }

    /// Forwards the proposal to the leader named `name`, and waits until the entry is applied
    /// here too (so a caller reads its own write on this node).
    fn forward_to(&self, name: String, proposal: Proposal) -> BoxFuture<'static, Attempt> {
        let (transport, raft) = (self.transport.clone(), self.raft.clone());
        let within = self.forward_within;
        // Its entry applied here answers it as well as the leader's answer does, and most
        // often sooner: the leader answers once it applied the entry itself.
        let expected = proposal.origin.map(|o| (o, self.tables.forwarded.expect(o)));
        let db = self.tables.db.clone();
        let mut alone = self.shared.alone.subscribe();
        async move {
            // Once the entry `index` is applied here, by openraft's account too: a mutation's
            // answer carries the index this node applied, which must hold the write.
            let applied_here = |index: u64, applied: Applied| {
                let (raft, name) = (raft.clone(), name.clone());
                async move {
                    if applied.out_of_order.is_none() && !applied_at_least(&raft, index, within).await {
                        return Err(NotForwarded::Failed(StoreError::Unavailable(format!(
                            "the write was made on {name} but is not yet applied here: this node applied \
                             nothing for {within:?}"
                        ))));
                    }
                    Ok(applied)
                }
            };
            let from_leader = async {
                let (id, applied) = forward(&transport, &name, &proposal, within).await?;
                applied_here(id.index, applied).await
            };
            // The term of the leader it goes to, as far as this node knows.
            let sent_in = raft.metrics().borrow().current_term;
            let landing = async {
                let Some((origin, mut here)) = expected else {
                    return from_leader.await;
                };
                // Another leader's entry of a later term applied here (that leader holds
                // every entry committed before it: the group is applied here by then, or
                // never will be).
                let deposed = async {
                    // This node hears of a later term before it applies an entry of it: its
                    // vote, which changes with the term and not with every entry as the
                    // whole metrics do, is watched until then.
                    let mut server = raft.server_metrics();
                    server
                        .wait_for(|m| m.vote.leader_id().get_term() > sent_in)
                        .await
                        .map(|_| ())
                        .map_err(|_| ())?;
                    let watch = raft.wait(None);
                    watch
                        .metrics(
                            |m| {
                                m.last_applied.is_some_and(|l| {
                                    let by = m.membership_config.membership().get_node(&l.leader_id.node_id);
                                    l.leader_id.term > sent_in && by.is_some_and(|n| n.addr != name)
                                })
                            },
                            "another leader's entry of a later term is applied here",
                        )
                        .await
                        .map(|_| ())
                        .map_err(|_| ())
                };
                tokio::pin!(deposed);
                let answer = tokio::select! {
                    Ok((index, applied)) = &mut here.applied => return applied_here(index, applied).await,
                    answer = from_leader => answer,
                    // The leader it went to has not answered and another one leads now (it
                    // froze, or was cut off): what it did with the group is settled as for a
                    // leader whose log stopped, at once rather than at the forward's limit.
                    Ok(_) = &mut deposed => Err(NotForwarded::Stopped {
                        term: sent_in,
                        error: StoreError::Unavailable(format!(
                            "the leader {name} was replaced before it answered the write; it may still be applied"
                        )),
                    }),
                };
                let (term, error) = match answer {
                    Err(NotForwarded::Stopped { term, error }) => (term, error),
                    // Its entry may still come: it answers the write if it applies here soon.
                    // Once another leader's entry of a later term applies here first, it is
                    // settled as for a leader whose log stopped: the first write sent after
                    // a leader was killed waited out the whole wait (3 s after the kill,
                    // where the new leader was elected within 1.1 s).
                    Err(NotForwarded::Lost(error)) => {
                        tokio::select! {
                            applied = tokio::time::timeout(LOST_ANSWER_WAIT, &mut here.applied) => {
                                return match applied {
                                    Ok(Ok((index, applied))) => applied_here(index, applied).await,
                                    _ => Err(NotForwarded::Lost(error)),
                                };
                            }
                            Ok(_) = &mut deposed => (sent_in, error),
                        }
                    }
                    answer => return answer,
                };
                // The leader's log stopped before it knew how the group fared. Its entry
                // applies here if the log holds it. Once this node applied an entry of a
                // term later than the leader's last, it never will: that term's leader
                // holds every entry committed before it, and the stopped one appends
                // nothing more. Unless the tables say it came with a snapshot (its outcome
                // then unknown here), the group is surely not written, and goes again.
                let wait = raft.wait(Some(within));
                let later = wait.metrics(
                    |m| m.last_applied.is_some_and(|l| l.leader_id.term > term),
                    "an entry of a later term is applied here",
                );
                tokio::select! {
                    Ok((index, applied)) = &mut here.applied => applied_here(index, applied).await,
                    seen = later => match (seen, here.applied.try_recv()) {
                        (_, Ok((index, applied))) => applied_here(index, applied).await,
                        (Ok(_), Err(_)) => match blocking(move || session::applied(&db, origin)).await {
                            Ok(false) => {
                                tracing::debug!(%error, "a write the stopped leader did not commit is sent again");
                                Err(NotForwarded::Again(error))
                            }
                            Ok(true) | Err(_) => Err(NotForwarded::Lost(error)),
                        },
                        (Err(_), Err(_)) => Err(NotForwarded::Lost(error)),
                    },
                }
            };
            let landed = tokio::select! {
                // Bounded by what moves, not by a fixed time: a member that restarted far
                // behind applies its backlog before the write, which committed long before
                // (its forwarded writes failed after 10 s, "may still be applied", while it
                // caught up for 16).
                landed = while_applying(&raft, within, landing) => landed.unwrap_or_else(|| {
                    Err(NotForwarded::Lost(StoreError::Unavailable(format!(
                        "the leader {name} did not answer, and this node applied nothing, for {within:?}; the \
                         write may still be applied"
                    ))))
                }),
                // The node stops with no majority up: nothing confirms the write now.
                _ = alone.wait_for(|alone| *alone) => return Attempt::Failed(StoreError::Alone),
            };
            match landed {
                Ok(applied) => Attempt::Applied(applied),
                Err(NotForwarded::Again(e)) => Attempt::Again(e),
                Err(NotForwarded::Failed(e)) => Attempt::Failed(e),
                // Its outcome unknown: settled by a barrier (see `Flight::after_barrier`).
                Err(NotForwarded::Lost(e) | NotForwarded::Stopped { error: e, .. }) => Attempt::Unknown(e),
            }
        }
        .boxed()
    }
}

/// Resolves once this leader has had no answer from a majority for 2 s
/// (`status::lead_unconfirmed`), looked at four times a second (not on each change of the
/// Raft metrics, which a leader's every entry makes) and not before a first 250 ms: a
/// leader elected a moment ago has no majority's answer yet.
async fn majority_lost(raft: &Raft) {
    let every = std::time::Duration::from_millis(250);
    let mut looks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        looks.tick().await;
        if status::lead_unconfirmed(&raft.metrics().borrow()) {
            return;
        }
    }
}

/// `fut`'s output, waited for as long as this node applies entries: `None` once a whole
/// `within` passed in which it applied none. (Checked at the end of each `within`, not on
/// each entry applied: a forwarded group costs one timer, as a fixed bound did.)
async fn while_applying<T>(
    raft: &Raft,
    within: std::time::Duration,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    let applied = || raft.metrics().borrow().last_applied.map(|l| l.index);
    tokio::pin!(fut);
    loop {
        let before = applied();
        match tokio::time::timeout(within, &mut fut).await {
            Ok(out) => return Some(out),
            Err(_) if applied() != before => continue,
            Err(_) => return None,
        }
    }
}

/// Whether this node applied the entry `index`, waiting for as long as it applies entries.
async fn applied_at_least(raft: &Raft, index: u64, within: std::time::Duration) -> bool {
    let wait = raft.wait(None);
    let applied = wait.applied_index_at_least(Some(index), "a forwarded write is applied here");
    matches!(while_applying(raft, within, applied).await, Some(Ok(_)))
}

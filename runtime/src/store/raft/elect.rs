//! Standing for election as soon as a lost leader's lease allows it.
//!
//! openraft lets a follower stand only after the leader's lease (the longest election
//! timeout) *and then* a random election timeout have passed without a word from the
//! leader: about 1.7–2 s with Troupe's timing. A member whose session to its leader closed
//! (the leader's process exited: its socket closed at once) need not wait for the second
//! half: once the lease has passed, the other voters grant a vote, so it stands then, once
//! a pre-vote says a majority would vote for it (its sessions may have closed because it
//! is the one cut off).
//! Nothing changes for a leader that is frozen or cut off (its session stays open): the
//! timers find it.
//!
//! A leader that stops on purpose names its successor first (openraft 0.9 has no transfer
//! of leadership): once its Raft member stopped, it tells every other voter which of them
//! holds the most of its log. That one stands as soon as the lease passed; the others
//! hold back a while longer, so two of them standing at once cannot split the vote (with
//! every follower standing at once, one stop in four or five took two to eight terms).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::NodeId;
use crate::store::Store;

/// Margin past the lease, for the other voters' clocks: they heard the leader's last
/// heartbeat at about the same instant.
const PAST_LEASE: Duration = Duration::from_millis(50);

/// How much longer than a named successor a member that was not named waits before it
/// stands: the successor's election (its vote requests, and a retry when a voter still
/// counted the lease) takes less.
const AFTER_SUCCESSOR: Duration = Duration::from_millis(500);

/// How far apart the voters of a leader whose session closed stand, in the order of their
/// ids: the next one's pre-vote and vote requests come after the first one's election
/// asked for its vote (which it then has: it does not stand), or failed. A random spread of
/// 0-100 ms had two of them stand within 10 ms of each other, each granted the other's
/// pre-vote, and split the vote: a leader's kill -9 took three terms, 3 times in 25.
const TURN: Duration = Duration::from_millis(150);
/// A random part of each turn, below its step.
const TURN_JITTER_MS: u64 = 20;

/// How long a stopping leader waits for another voter to hold its whole log.
const CATCH_UP_WITHIN: Duration = Duration::from_millis(500);

/// How long a stopping leader gives its voters to hear whom it named.
const NAME_WITHIN: Duration = Duration::from_millis(300);

/// A leader about to stop: its term, its voters (id and name), and how much of its log it
/// knew each member to hold.
pub(crate) struct Leaving {
    term: u64,
    voters: Vec<(NodeId, String)>,
    matched: Vec<(NodeId, Option<u64>)>,
}

/// A leader's word, as it stops, on who takes over (`RpcKind::Succeed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Succession {
    /// The stopping leader and its term.
    pub leader: NodeId,
    pub term: u64,
    /// The voter that holds the most of its log.
    pub successor: NodeId,
}

/// What this member heard of its leader's succession, and whether it is standing now.
#[derive(Debug, Default)]
pub(crate) struct Successions {
    named: std::sync::Mutex<Option<Succession>>,
    standing: AtomicBool,
}

impl Successions {
    pub(crate) fn named(&self) -> Option<Succession> {
        *self.named.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this member runs its standing loop now.
    #[cfg(test)]
    pub(crate) fn standing(&self) -> bool {
        self.standing.load(Ordering::SeqCst)
    }
}

/// Held while this member runs its standing loop: one at a time (a named successor hears
/// both the leader's word and its session closing).
struct Standing<'a>(&'a AtomicBool);

impl<'a> Standing<'a> {
    fn take(flag: &'a AtomicBool) -> Option<Self> {
        flag.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .ok()
            .map(|_| Self(flag))
    }
}

impl Drop for Standing<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// The voter other than `leader` that holds the most of the log, by what the leader last
/// knew of each (`matched`): it can win every other voter's vote.
pub(crate) fn successor(leader: NodeId, voters: &[NodeId], matched: &[(NodeId, Option<u64>)]) -> Option<NodeId> {
    let of = |id: NodeId| matched.iter().find(|(m, _)| *m == id).and_then(|(_, i)| *i);
    voters
        .iter()
        .copied()
        .filter(|v| *v != leader)
        .max_by_key(|v| (of(*v), std::cmp::Reverse(*v)))
}

impl Store {
    /// The session to the member named `name` closed. When it is the leader this member
    /// follows, and this member votes, it stands for election once the leader's lease has
    /// passed since it last heard from it, and again after 100–250 ms while no other leader
    /// is known (two members standing at once split the vote; the later one's higher term
    /// wins). Returns once a leader other than `name` is known, or when the election
    /// timers would have acted anyway.
    pub async fn leader_session_closed(&self, name: &str) {
        let raft = self.raft().clone();
        let lost_term = raft.metrics().borrow().vote.leader_id().term;
        let lost: Option<NodeId> = {
            let metrics = raft.metrics().borrow().clone();
            let lost = metrics.current_leader;
            let membership = metrics.membership_config.membership();
            let voter = membership.voter_ids().any(|v| v == metrics.id);
            let named = lost
                .and_then(|l| membership.get_node(&l))
                .is_some_and(|n| n.addr == name);
            (voter && named && lost != Some(metrics.id)).then_some(lost).flatten()
        };
        let Some(lost) = lost else { return };
        // Every follower heard the last heartbeat at about the same instant: each waits its
        // turn (see `turn`) so they do not stand at once and split the vote, and a successor
        // the leader named goes first.
        let spread = {
            let metrics = raft.metrics().borrow().clone();
            let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
            turn(metrics.id, lost, &voters) + Duration::from_millis(rand::random::<u64>() % TURN_JITTER_MS)
        };
        let first = match self.inner.successions.named() {
            Some(named) if named.leader == lost && named.term == lost_term => match named.successor == self.raft_id() {
                true => self.successor_waits(),
                false => AFTER_SUCCESSOR + spread,
            },
            _ => spread,
        };
        self.stand_after_lease(lost, lost_term, name, first, "the leader's session closed")
            .await;
    }

    /// Stands for election once the lost leader's lease has passed since this member last
    /// heard from it, plus `first`, and again after 100–250 ms while no other leader is
    /// known, each time only when a majority would vote for it (a pre-vote), for at most an
    /// election timeout more.
    /// `why` says what told this member its leader is gone, for the log.
    async fn stand_after_lease(&self, lost: NodeId, lost_term: u64, name: &str, first: Duration, why: &str) {
        let Some(_standing) = Standing::take(&self.inner.successions.standing) else {
            return;
        };
        let raft = self.raft().clone();
        let me = raft.metrics().borrow().id;
        let config = raft.config().clone();
        let lease = Duration::from_millis(config.election_timeout_max);
        let give_up = Instant::now() + lease + first + Duration::from_millis(config.election_timeout_max);
        // How long ago this member last heard from the leader (its vote was last touched).
        let heard = raft
            .with_raft_state(|st| st.vote_last_modified().map(|t| t.elapsed()))
            .await
            .ok()
            .flatten()
            .unwrap_or(lease);
        tokio::time::sleep((lease + PAST_LEASE + first).saturating_sub(heard)).await;
        while Instant::now() < give_up {
            let leader = raft.metrics().borrow().current_leader;
            if leader.is_some_and(|l| l != lost) {
                return;
            }
            let election = Duration::from_millis(config.election_timeout_min);
            if another_stands(me, lost_term, &self.voted().await, election) {
                // Its winner's first heartbeat is on its way: standing now would depose it.
                let jitter = Duration::from_millis(100 + rand::random::<u64>() % 150);
                tokio::time::sleep(jitter).await;
                continue;
            }
            if leader == Some(lost) {
                // Heard from again within the lease (its session came back): it still leads.
                let heard = raft
                    .with_raft_state(|st| st.vote_last_modified().map(|t| t.elapsed()))
                    .await
                    .ok()
                    .flatten();
                if heard.is_some_and(|h| h < lease) {
                    return;
                }
            }
            // It stands only when a majority would vote for it (a pre-vote: one round trip
            // to voters that are up). Unasked, a successor whose other voters were stopping
            // too stood six times in a second, each in a new term, with nobody to vote; and
            // a node started with the wrong cookie (every session closing at once) raised
            // its term seven times, then deposed the healthy leader once let in.
            if !self.pre_voted().await {
                let jitter = Duration::from_millis(100 + rand::random::<u64>() % 150);
                tokio::time::sleep(jitter).await;
                continue;
            }
            // Another member may have stood while the pre-vote was asked: it asked for this
            // member's vote meanwhile, and has it. Standing now, in the next term, would
            // depose it.
            if another_stands(me, lost_term, &self.voted().await, election) {
                continue;
            }
            tracing::info!(leader = %name, "{why} and its lease passed: standing for election");
            if raft.trigger().elect().await.is_err() {
                return;
            }
            let jitter = Duration::from_millis(100 + rand::random::<u64>() % 150);
            tokio::time::sleep(jitter).await;
        }
    }
}

impl Store {
    /// On a leader about to stop its Raft member (it takes no more writes): waits at most
    /// [`CATCH_UP_WITHIN`] until another voter holds its whole log, so the one it names can
    /// win every vote (a voter that is down is not waited for). Its term and voters, when
    /// it leads a cluster of several.
    pub(crate) async fn let_voters_catch_up(&self) -> Option<Leaving> {
        if *self.inner.shared.alone.borrow() {
            // No majority is up: no voter is there to take over, or to wait for.
            return None;
        }
        let raft = self.raft();
        let (term, voters) = {
            let metrics = raft.metrics().borrow().clone();
            let membership = metrics.membership_config.membership();
            let voters: Vec<(NodeId, String)> = membership
                .voter_ids()
                .filter_map(|id| membership.get_node(&id).map(|n| (id, n.addr.clone())))
                .collect();
            let leads = metrics.current_leader == Some(metrics.id) && voters.len() > 1;
            (leads.then_some(metrics.current_term), voters)
        };
        let term = term?;
        let caught_up = |m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>| {
            let matched = |id: &NodeId| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(id).copied().flatten())
                    .map(|l| l.index)
            };
            voters
                .iter()
                .filter(|(id, _)| *id != m.id)
                .any(|(id, _)| matched(id) >= m.last_log_index)
        };
        let waited = raft
            .wait(Some(CATCH_UP_WITHIN))
            .metrics(caught_up, "a voter holds the leader's whole log")
            .await;
        if let Err(e) = waited {
            tracing::info!(error = %e, "stopping while a voter has not caught up");
        }
        let matched = raft
            .metrics()
            .borrow()
            .replication
            .iter()
            .flatten()
            .map(|(id, log)| (*id, log.map(|l| l.index)))
            .collect();
        Some(Leaving { term, voters, matched })
    }

    /// On a leader whose Raft member just stopped: tells every other voter which of them
    /// takes over (the one it knew to hold the most of its log), and waits at most
    /// [`NAME_WITHIN`] for them to hear it.
    pub(crate) async fn name_successor(&self, leaving: Leaving) {
        let Leaving { term, voters, matched } = leaving;
        let me = self.raft_id();
        let ids: Vec<NodeId> = voters.iter().map(|(id, _)| *id).collect();
        let Some(successor) = successor(me, &ids, &matched) else {
            return;
        };
        let Some(transport) = self.transport().get() else {
            return;
        };
        let word = Succession {
            leader: me,
            term,
            successor,
        };
        let Ok(bytes) = crate::codec::encode(&word) else { return };
        let told = voters
            .iter()
            .filter(|(id, _)| *id != me)
            .map(|(_, name)| transport.send(name, super::RpcKind::Succeed, bytes.clone(), NAME_WITHIN));
        let told = futures::future::join_all(told).await;
        let heard = told.iter().filter(|t| t.is_ok()).count();
        let to = voters.iter().find(|(id, _)| *id == successor).map(|(_, n)| n.as_str());
        tracing::info!(
            successor = to.unwrap_or("?"),
            heard,
            "this leader stopped and named its successor"
        );
    }

    /// How much longer than the lease a named successor waits: the other voters heard the
    /// stopped leader's last heartbeat up to a heartbeat interval after it did, and refuse
    /// their vote until their own lease passed.
    fn successor_waits(&self) -> Duration {
        Duration::from_millis(self.raft().config().heartbeat_interval)
    }

    /// A stopping leader's word on who takes over: kept for when its session closes, and
    /// the successor stands as soon as the lease passed.
    pub(crate) fn successor_named(&self, word: Succession) {
        *self.inner.successions.named.lock().unwrap_or_else(|p| p.into_inner()) = Some(word);
        if word.successor != self.raft_id() {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            let name = store
                .raft()
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .get_node(&word.leader)
                .map_or_else(|| word.leader.to_string(), |n| n.addr.clone());
            let first = store.successor_waits();
            let why = "the leader stopped and named this member its successor";
            store.stand_after_lease(word.leader, word.term, &name, first, why).await;
        });
    }

    /// This member's vote as it stands now.
    async fn voted(&self) -> Voted {
        let vote = self.raft().metrics().borrow().vote;
        let age = self
            .raft()
            .with_raft_state(|st| st.vote_last_modified().map(|t| t.elapsed()))
            .await
            .ok()
            .flatten();
        Voted {
            term: vote.leader_id().term,
            for_: vote.leader_id().voted_for(),
            age,
        }
    }
}

/// When a voter `me` stands once the lost leader's lease passed: [`TURN`] times the number
/// of the other voters left with a lower id.
fn turn(me: NodeId, lost: NodeId, voters: &[NodeId]) -> Duration {
    let before = voters.iter().filter(|v| **v != lost && **v != me && **v < me).count();
    TURN * u32::try_from(before).unwrap_or(u32::MAX)
}

/// This member's vote as it stands: its term, for whom, and how long ago it changed.
struct Voted {
    term: u64,
    for_: Option<NodeId>,
    age: Option<Duration>,
}

/// Whether another member is standing in an election this member took part in: it granted
/// its vote, in a term after the lost leader's, to a member other than itself, less than an
/// election timeout ago. Every follower of a leader whose process exited sees its session
/// close at about the same moment; one that voted for the first of them to stand must not
/// stand too, or it deposes the winner before its first heartbeat arrives (two elections,
/// and two leader changes, for one lost leader).
fn another_stands(me: NodeId, lost_term: u64, vote: &Voted, within: Duration) -> bool {
    vote.term > lost_term && vote.for_.is_some_and(|v| v != me) && vote.age.is_some_and(|a| a < within)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_voters_of_a_lost_leader_stand_a_turn_apart_in_the_order_of_their_ids() {
        let voters = [30, 10, 20];
        // 10 lost: 20 goes first, 30 a turn later.
        assert_eq!(turn(20, 10, &voters), Duration::ZERO);
        assert_eq!(turn(30, 10, &voters), TURN);
        // 30 lost: 10 first, then 20.
        assert_eq!(turn(10, 30, &voters), Duration::ZERO);
        assert_eq!(turn(20, 30, &voters), TURN);
        // Five voters, one lost: four turns.
        let five = [1, 2, 3, 4, 5];
        let turns: Vec<Duration> = [1, 2, 4, 5].iter().map(|me| turn(*me, 3, &five)).collect();
        assert_eq!(turns, vec![Duration::ZERO, TURN, TURN * 2, TURN * 3]);
        assert!(TURN_JITTER_MS < TURN.as_millis() as u64 / 2);
    }

    #[test]
    fn a_member_that_voted_for_another_candidate_a_moment_ago_does_not_stand_itself() {
        let within = Duration::from_millis(700);
        let voted = |term, for_, age_ms| Voted {
            term,
            for_: Some(for_),
            age: Some(Duration::from_millis(age_ms)),
        };
        // Voted for member 2 in term 5, after leader 1's term 4, 30 ms ago: 2 is standing.
        assert!(another_stands(3, 4, &voted(5, 2, 30), within));
        // Its vote is still the lost leader's term, or its own candidacy's: it stands.
        assert!(!another_stands(3, 4, &voted(4, 1, 30), within));
        assert!(!another_stands(3, 4, &voted(5, 3, 30), within));
        // That candidate never won (no heartbeat within an election timeout): it stands.
        assert!(!another_stands(3, 4, &voted(5, 2, 900), within));
    }
}

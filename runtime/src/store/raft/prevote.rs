//! Pre-vote: a member stands for election only when a majority of the voters would vote
//! for it.
//!
//! openraft 0.9 has no pre-vote. A follower back from a freeze (SIGSTOP, a paused VM) or
//! from a cut found its election timer long past and stood at once, in the next term: the
//! other voters refused it (they had heard their leader within its lease), but it refused
//! the leader's next heartbeat, of the older term, and the leader stepped down. An
//! election, and writes refused meanwhile, for a member that was only away.
//!
//! So openraft's election timer is off (`enable_elect: false`) and this one keeps its
//! times: once a voter heard from no leader for the lease and an election timeout (an
//! election timeout alone while it stands), it asks each other voter whether it would grant
//! its vote (`RpcKind::PreVote`, which changes nothing there), and stands only when a
//! majority, itself included, would. A voter would when it leads nothing, heard from no
//! leader within the lease, and holds no more of the log than the one asking: the checks
//! of a real vote, the term aside (the real vote settles the term). Whatever stops an ask
//! (a member down, cut off, or of a release without pre-vote) counts as no.
//!
//! A member whose leader's session closed still stands as soon as the lease allows, without
//! asking (`raft::elect`): its leader's process is gone.

use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use openraft::LogId;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{NodeId, RpcKind};
use crate::store::{Store, StoreError, WeakStore};

/// How many pre-votes this member won and lost since it started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PreVotes {
    pub won: u64,
    pub lost: u64,
}

/// A voter's question to the others: would they vote for it now?
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Ask {
    pub candidate: NodeId,
    pub last_log_id: Option<LogId<NodeId>>,
}

/// Where this member's timer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// It leads, learns, or heard from a leader recently enough.
    No,
    /// The only voter: nobody to ask.
    Alone,
    /// Time to ask the others.
    Ask,
}

/// What the timer reads of this member each time it looks.
struct Look {
    voter: bool,
    leads: bool,
    voters: usize,
    committed: bool,
    age: Option<Duration>,
    lease: Duration,
}

impl Look {
    /// Whether this voter, which last heard from a leader (or changed its vote) `age` ago,
    /// is due to stand: past the lease and `election` while its vote is a leader's
    /// (committed), past `election` alone while it stands itself or voted for one that
    /// stands. `None`: it never heard from one since it started.
    fn due(&self, election: Duration) -> Due {
        if !self.voter || self.leads {
            return Due::No;
        }
        if self.voters == 1 {
            return Due::Alone;
        }
        let wait = if self.committed {
            self.lease + election
        } else {
            election
        };
        match self.age {
            Some(age) if age < wait => Due::No,
            _ => Due::Ask,
        }
    }
}

/// Whether a voter grants a pre-vote: it leads nothing, heard from no leader within the
/// lease, and the asker's log is at least as long as its own.
fn would_grant(
    leads: bool,
    committed: bool,
    age: Option<Duration>,
    lease: Duration,
    asked: Option<LogId<NodeId>>,
    mine: Option<LogId<NodeId>>,
) -> bool {
    let heard_a_leader = committed && age.is_some_and(|a| a <= lease);
    !leads && !heard_a_leader && asked >= mine
}

/// A random election timeout between the configured bounds.
fn election_timeout(min: u64, max: u64) -> Duration {
    Duration::from_millis(min + rand::random::<u64>() % max.saturating_sub(min).max(1))
}

/// Runs this member's election timer while the store is open and its Raft member runs.
pub(crate) async fn keep_timer(store: WeakStore) {
    let mut not_before = Instant::now();
    loop {
        let look = {
            let Some(store) = store.upgrade() else { return };
            let config = store.raft().config();
            Duration::from_millis((config.heartbeat_interval / 2).max(10))
        };
        tokio::time::sleep(look).await;
        let Some(store) = store.upgrade() else { return };
        if store.raft_stopped() {
            return;
        }
        let config = store.raft().config().clone();
        let look = store.look().await;
        // Silent past the longest timeout: no leader this member can name (a cut-off
        // follower that never stands would name the one it lost for ever).
        let longest = Duration::from_millis(config.election_timeout_max);
        store.inner.shared.leader_silent.send_if_modified(|silent| {
            let now = look.due(longest) == Due::Ask;
            std::mem::replace(silent, now) != now
        });
        if Instant::now() < not_before {
            continue;
        }
        let election = election_timeout(config.election_timeout_min, config.election_timeout_max);
        match look.due(election) {
            Due::No => {}
            Due::Alone => {
                let _ = store.raft().trigger().elect().await;
                not_before = Instant::now() + election;
            }
            Due::Ask => {
                store.pre_vote().await;
                // A lost pre-vote changes nothing the timer reads: the next one waits out
                // an election timeout of its own, as a lost election would.
                not_before =
                    Instant::now() + election_timeout(config.election_timeout_min, config.election_timeout_max);
            }
        }
    }
}

impl Store {
    /// This member's vote: whether a leader holds it, and how long ago it changed or was
    /// last confirmed by a leader's message.
    async fn vote_age(&self) -> (bool, Option<Duration>) {
        self.raft()
            .with_raft_state(|st| {
                (
                    st.vote_ref().is_committed(),
                    st.vote_last_modified().map(|t| t.elapsed()),
                )
            })
            .await
            .unwrap_or((false, None))
    }

    async fn look(&self) -> Look {
        let (voter, leads, voters) = {
            let metrics = self.raft().metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            (
                membership.voter_ids().any(|v| v == m.id),
                m.current_leader == Some(m.id),
                membership.voter_ids().count(),
            )
        };
        let (committed, age) = self.vote_age().await;
        let lease = Duration::from_millis(self.raft().config().election_timeout_max);
        Look {
            voter,
            leads,
            voters,
            committed,
            age,
            lease,
        }
    }

    /// Whether this voter has heard from no leader past the lease and the longest election
    /// timeout (about 2 s): it is cut off, or its leader froze or went, and it names none.
    pub fn leader_silent(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.shared.leader_silent.subscribe()
    }

    /// Asks the other voters whether they would vote for this member, and stands when a
    /// majority (itself included) would.
    async fn pre_vote(&self) {
        if self.pre_voted().await {
            let _ = self.raft().trigger().elect().await;
        }
    }

    /// Asks the other voters whether they would vote for this member: whether a majority
    /// (itself included) would.
    pub(super) async fn pre_voted(&self) -> bool {
        let Some(transport) = self.transport().get() else {
            return false;
        };
        let (me, others, majority) = {
            let metrics = self.raft().metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            let voters: Vec<NodeId> = membership.voter_ids().collect();
            let others: Vec<String> = voters
                .iter()
                .filter(|id| **id != m.id)
                .filter_map(|id| membership.get_node(id).map(|n| n.addr.clone()))
                .collect();
            (m.id, others, voters.len() / 2 + 1)
        };
        let ask = Ask {
            candidate: me,
            last_log_id: self.last_log_id().await.ok().flatten(),
        };
        let Ok(bytes) = crate::codec::encode(&ask) else {
            return false;
        };
        let within = Duration::from_millis(self.raft().config().election_timeout_min / 2);
        let mut asked: FuturesUnordered<_> = others
            .iter()
            .map(|name| transport.send(name, RpcKind::PreVote, bytes.clone(), within))
            .collect();
        let mut granted = 1;
        while granted < majority {
            match asked.next().await {
                Some(Ok(answer)) => {
                    if crate::codec::decode::<bool>(&answer).unwrap_or(false) {
                        granted += 1;
                    }
                }
                Some(Err(_)) => {}
                None => break,
            }
        }
        if granted < majority {
            metrics::counter!("troupe_raft_pre_votes_total", "outcome" => "lost").increment(1);
            self.inner.pre_votes.send_modify(|p| p.lost += 1);
            tracing::debug!(
                granted,
                majority,
                "no leader heard, but no majority would vote for this member: not standing"
            );
            return false;
        }
        metrics::counter!("troupe_raft_pre_votes_total", "outcome" => "won").increment(1);
        self.inner.pre_votes.send_modify(|p| p.won += 1);
        tracing::info!(
            granted,
            "no leader heard and a majority would vote for this member: standing for election"
        );
        true
    }

    /// The last entry of this member's log, read from the log: what a vote compares.
    async fn last_log_id(&self) -> Result<Option<LogId<NodeId>>, StoreError> {
        let db = self.inner.log_db.clone();
        super::blocking(move || super::log::last_log_id(&db)).await
    }

    /// How many pre-votes this member won and lost so far.
    pub fn pre_votes(&self) -> tokio::sync::watch::Receiver<PreVotes> {
        self.inner.pre_votes.subscribe()
    }

    /// Answers another voter's pre-vote (see the module's text).
    pub(crate) async fn would_vote(&self, ask: &Ask) -> Result<bool, StoreError> {
        let leads = {
            let metrics = self.raft().metrics();
            let m = metrics.borrow();
            m.current_leader == Some(m.id)
        };
        let (committed, age) = self.vote_age().await;
        let lease = Duration::from_millis(self.raft().config().election_timeout_max);
        let mine = self.last_log_id().await?;
        Ok(would_grant(leads, committed, age, lease, ask.last_log_id, mine))
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    const LEASE: Duration = Duration::from_millis(1000);
    const ELECTION: Duration = Duration::from_millis(800);

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    fn look(voter: bool, leads: bool, voters: usize, committed: bool, age: Option<Duration>) -> Look {
        Look {
            voter,
            leads,
            voters,
            committed,
            age,
            lease: LEASE,
        }
    }

    #[test]
    fn a_follower_is_due_once_it_heard_no_leader_for_the_lease_and_an_election_timeout() {
        let follower = |committed, age| look(true, false, 3, committed, age).due(ELECTION);
        assert_eq!(follower(true, ms(1700)), Due::No);
        assert_eq!(follower(true, ms(1800)), Due::Ask);
        // Standing, or having voted for one that stands: an election timeout alone.
        assert_eq!(follower(false, ms(700)), Due::No);
        assert_eq!(follower(false, ms(800)), Due::Ask);
        assert_eq!(follower(true, None), Due::Ask);
        // A leader, a learner: never; the only voter: at once.
        assert_eq!(look(true, true, 3, true, ms(5000)).due(ELECTION), Due::No);
        assert_eq!(look(false, false, 3, true, ms(5000)).due(ELECTION), Due::No);
        assert_eq!(look(true, false, 1, true, ms(0)).due(ELECTION), Due::Alone);
    }

    #[test]
    fn a_voter_that_heard_its_leader_within_the_lease_or_holds_more_log_refuses() {
        let log = |term, index| Some(LogId::new(CommittedLeaderId::new(term, 1), index));
        // Heard its leader 200 ms ago: a member back from a freeze is refused.
        assert!(!would_grant(false, true, ms(200), LEASE, log(3, 10), log(3, 10)));
        // The leader itself refuses.
        assert!(!would_grant(true, true, ms(5000), LEASE, log(3, 10), log(3, 10)));
        // Past the lease, an asker with as much log or more is granted.
        assert!(would_grant(false, true, ms(1100), LEASE, log(3, 10), log(3, 10)));
        assert!(would_grant(false, true, ms(1100), LEASE, log(4, 2), log(3, 10)));
        // Less of the log (a lower last term, or the same term and a lower index): refused.
        assert!(!would_grant(false, true, ms(1100), LEASE, log(3, 9), log(3, 10)));
        assert!(!would_grant(false, true, ms(1100), LEASE, log(2, 50), log(3, 10)));
        // A voter standing itself, or that voted for a candidate, heard no leader: granted.
        assert!(would_grant(false, false, ms(10), LEASE, log(3, 10), log(3, 10)));
    }
}

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
//!
//! A member that did not run for over a lease (stopped by SIGSTOP, a paused VM) cannot tell
//! on its return whether its leader lives: the leader's heartbeats of that time wait unread
//! in its sockets. For a lease from its return it neither asks nor grants a pre-vote
//! ([`Presence`]). A leader frozen with a follower, both thawed after 15 s, lost an election
//! to that follower, whose timer found the lease long past and whose pre-vote the third
//! voter, which had heard nobody meanwhile, granted.

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

/// Whether this member is away: its election timer's sleep, which ends every few tens of
/// milliseconds, has not ended for over a lease past its time (the process did not run), or
/// ended that late less than a lease ago.
#[derive(Debug, Default)]
pub(crate) struct Presence(std::sync::Mutex<Seen>);

#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    /// The timer's sleep: when it began and how long it was to last.
    sleeping: Option<(Instant, Duration)>,
    /// When the timer last woke over a lease late.
    back: Option<Instant>,
}

impl Seen {
    fn overdue(&self, now: Instant) -> Option<Duration> {
        self.sleeping
            .map(|(since, look)| now.saturating_duration_since(since + look))
    }

    fn back_within(&self, now: Instant, lease: Duration) -> bool {
        self.back.is_some_and(|b| now.saturating_duration_since(b) < lease)
    }
}

impl Presence {
    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The timer sleeps from `now` for `look`.
    fn sleeps(&self, now: Instant, look: Duration) {
        self.lock().sleeping = Some((now, look));
    }

    /// The timer woke at `now`: how late, when over a `lease` (this member was away).
    fn woke(&self, now: Instant, lease: Duration) -> Option<Duration> {
        let mut seen = self.lock();
        let late = seen.overdue(now).filter(|late| *late > lease);
        seen.sleeping = None;
        if late.is_some() {
            seen.back = Some(now);
        }
        late
    }

    /// As if this member's timer had just woken over a lease late (a test's stand-in for a
    /// pause).
    #[cfg(test)]
    pub(crate) fn came_back(&self) {
        self.lock().back = Some(Instant::now());
    }

    /// Whether this member is away, or back from it less than a `lease` ago, as of `now`.
    fn away(&self, now: Instant, lease: Duration) -> bool {
        let seen = *self.lock();
        seen.overdue(now).is_some_and(|late| late > lease) || seen.back_within(now, lease)
    }
}

/// A random election timeout between the configured bounds.
fn election_timeout(min: u64, max: u64) -> Duration {
    Duration::from_millis(min + rand::random::<u64>() % max.saturating_sub(min).max(1))
}

/// Runs this member's election timer while the store is open and its Raft member runs.
pub(crate) async fn keep_timer(store: WeakStore) {
    // Shown from the start, at 0: a counter that appears only once it counts cannot be told
    // from one this node does not keep.
    for outcome in ["won", "lost"] {
        metrics::counter!("troupe_raft_pre_votes_total", "outcome" => outcome).increment(0);
    }
    let mut not_before = Instant::now();
    loop {
        let look = {
            let Some(store) = store.upgrade() else { return };
            let config = store.raft().config();
            Duration::from_millis((config.heartbeat_interval / 2).max(10))
        };
        if let Some(store) = store.upgrade() {
            store.inner.presence.sleeps(Instant::now(), look);
        }
        tokio::time::sleep(look).await;
        let Some(store) = store.upgrade() else { return };
        if store.raft_stopped() {
            return;
        }
        if store.has_left() {
            // Removed from the membership, it may never apply the entry that says so: its
            // own membership would still name it a voter, and it would ask the members for
            // votes they refuse, once an election timeout, for as long as its process runs.
            tracing::info!("this node left the cluster: it no longer stands for election");
            return;
        }
        let config = store.raft().config().clone();
        let longest = Duration::from_millis(config.election_timeout_max);
        let now = Instant::now();
        if let Some(late) = store.inner.presence.woke(now, longest) {
            // Back from being away: what its leader sent meanwhile is read first.
            tracing::info!(
                late_ms = late.as_millis() as u64,
                "this member did not run for over a lease (stopped, or starved of CPU): it neither stands \
                 nor grants a pre-vote for a lease"
            );
            not_before = not_before.max(now + longest);
            continue;
        }
        let look = store.look().await;
        // Silent past the longest timeout: no leader this member can name (a cut-off
        // follower that never stands would name the one it lost for ever).
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

    /// The last entry of this member's log, read from the log: what a vote compares. Read
    /// once the log's writer wrote what it was handed: openraft takes entries once they are
    /// readable, and the files alone may lag them: a member whose files lagged its core by the
    /// entry a candidate lacks would grant that candidate a pre-vote its vote then refuses.
    pub(super) async fn last_log_id(&self) -> Result<Option<LogId<NodeId>>, StoreError> {
        self.inner.log.everything().await?;
        Ok(self.inner.log.wal().last())
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
        if self.inner.presence.away(Instant::now(), lease) {
            return Ok(false);
        }
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
    fn a_member_whose_timer_woke_over_a_lease_late_is_away_for_a_lease_from_then() {
        let presence = Presence::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let look = Duration::from_millis(50);
        // Sleeping 50 ms at a time, waking on time or a little late: present.
        for ms in (0..=1000).step_by(60) {
            presence.sleeps(at(ms), look);
            assert!(!presence.away(at(ms + 30), LEASE));
            assert_eq!(presence.woke(at(ms + 55), LEASE), None);
            assert!(!presence.away(at(ms + 56), LEASE));
        }
        // Busy between two sleeps (a pre-vote's asks) for over a lease: not away.
        assert!(!presence.away(at(3000), LEASE));
        // Its sleep not over 15 s after its time: a pre-vote asked finds it away before
        // its timer wakes...
        presence.sleeps(at(3000), look);
        assert!(presence.away(at(18_050), LEASE));
        // ...and once it woke, for a lease.
        assert_eq!(presence.woke(at(18_050), LEASE), Some(Duration::from_millis(15_000)));
        presence.sleeps(at(18_060), look);
        assert_eq!(presence.woke(at(18_110), LEASE), None);
        assert!(presence.away(at(19_000), LEASE));
        assert!(!presence.away(at(19_060), LEASE));
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

//! Standing for election as soon as a lost leader's lease allows it.
//!
//! openraft lets a follower stand only after the leader's lease (the longest election
//! timeout) *and then* a random election timeout have passed without a word from the
//! leader: about 1.7–2 s with Troupe's timing. A member whose session to its leader closed
//! (the leader's process exited: its socket closed at once) need not wait for the second
//! half: once the lease has passed, the other voters grant a vote, so it stands then.
//! Nothing changes for a leader that is frozen or cut off (its session stays open): the
//! timers find it.

use std::time::Duration;

use tokio::time::Instant;

use super::NodeId;
use crate::store::Store;

/// Margin past the lease, for the other voters' clocks: they heard the leader's last
/// heartbeat at about the same instant.
const PAST_LEASE: Duration = Duration::from_millis(50);

impl Store {
    /// The session to the member named `name` closed. When it is the leader this member
    /// follows, and this member votes, it stands for election once the leader's lease has
    /// passed since it last heard from it, and again after 100–250 ms while no other leader
    /// is known (two members standing at once split the vote; the later one's higher term
    /// wins). Returns once a leader other than `name` is known, or when the election
    /// timers would have acted anyway.
    pub async fn leader_session_closed(&self, name: &str) {
        let raft = self.raft().clone();
        let (me, lost_term) = {
            let metrics = raft.metrics();
            let m = metrics.borrow();
            (m.id, m.vote.leader_id().term)
        };
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
        let config = raft.config().clone();
        let lease = Duration::from_millis(config.election_timeout_max);
        let give_up = Instant::now() + lease + Duration::from_millis(config.election_timeout_max);
        // How long ago this member last heard from the leader (its vote was last touched).
        let heard = raft
            .with_raft_state(|st| st.vote_last_modified().map(|t| t.elapsed()))
            .await
            .ok()
            .flatten()
            .unwrap_or(lease);
        // Every follower heard the last heartbeat at about the same instant: a random delay
        // keeps them from standing at once and splitting the vote.
        let spread = Duration::from_millis(rand::random::<u64>() % 100);
        tokio::time::sleep((lease + PAST_LEASE + spread).saturating_sub(heard)).await;
        while Instant::now() < give_up {
            let (leader, vote) = {
                let metrics = raft.metrics();
                let m = metrics.borrow();
                (m.current_leader, m.vote)
            };
            if leader.is_some_and(|l| l != lost) {
                return;
            }
            let vote_age = raft
                .with_raft_state(|st| st.vote_last_modified().map(|t| t.elapsed()))
                .await
                .ok()
                .flatten();
            let voted = Voted {
                term: vote.leader_id().term,
                for_: vote.leader_id().voted_for(),
                age: vote_age,
            };
            if another_stands(
                me,
                lost_term,
                &voted,
                Duration::from_millis(config.election_timeout_min),
            ) {
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
            tracing::info!(leader = %name, "the leader's session closed and its lease passed: standing for election");
            if raft.trigger().elect().await.is_err() {
                return;
            }
            let jitter = Duration::from_millis(100 + rand::random::<u64>() % 150);
            tokio::time::sleep(jitter).await;
        }
    }
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

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
            let leader = raft.metrics().borrow().current_leader;
            if leader.is_some_and(|l| l != lost) {
                return;
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

//! What one member's Raft core knows of the cluster now: who leads (and whether a majority
//! still answers this node when it is the one), the term, what it applied, each member.

use std::time::Duration;

use openraft::BasicNode;

use super::{NodeId, Role};
use crate::store::Store;

/// A leader no majority answered for this long cannot commit: twice the longest election
/// timeout, by which the others have elected another leader.
const QUORUM_SILENT: Duration = Duration::from_secs(2);

/// What one member's Raft core knows of the cluster now (the leader knows each member's
/// replication; a follower only its own log).
#[derive(Debug, Clone)]
pub struct Status {
    /// The member openraft says leads (this node's own name from the moment it wins, or
    /// restarts as the leader of the term it last led).
    pub leader: Option<String>,
    /// This node believes it leads, and no majority answered it for [`QUORUM_SILENT`]: it
    /// is cut off, or it restarted as the leader of a term the others have left, while
    /// another member may lead. (False on a node alone.)
    pub lead_unconfirmed: bool,
    pub term: u64,
    pub commit_index: u64,
    pub last_log_index: u64,
    pub members: Vec<MemberStatus>,
}

#[derive(Debug, Clone)]
pub struct MemberStatus {
    pub id: NodeId,
    pub name: String,
    pub role: Role,
    /// The last log index the leader knows this member holds (on the leader only).
    pub matched: Option<u64>,
}

impl Status {
    /// Whether `member`'s log is within [`CAUGHT_UP_WITHIN_ENTRIES`] of this leader's last
    /// entry, by what it last confirmed: where openraft counts a member being admitted as
    /// caught up. Known on the leader only (false elsewhere, and for a member it has not
    /// heard from yet).
    ///
    /// [`CAUGHT_UP_WITHIN_ENTRIES`]: super::CAUGHT_UP_WITHIN_ENTRIES
    pub fn caught_up(&self, member: &str) -> bool {
        self.members
            .iter()
            .find(|m| m.name == member)
            .and_then(|m| m.matched)
            .is_some_and(|matched| self.last_log_index.saturating_sub(matched) <= super::CAUGHT_UP_WITHIN_ENTRIES)
    }
}

/// Whether this node believes it leads a group of several voters and no majority of them
/// answered it for [`QUORUM_SILENT`] (see [`Status::lead_unconfirmed`]).
pub(in crate::store) fn lead_unconfirmed(m: &openraft::RaftMetrics<NodeId, BasicNode>) -> bool {
    let voters = m.membership_config.membership().voter_ids().count();
    let silent = m.millis_since_quorum_ack.map(Duration::from_millis);
    m.current_leader == Some(m.id) && voters > 1 && silent.is_none_or(|s| s > QUORUM_SILENT)
}

impl Store {
    /// The cluster as this member's Raft core sees it now.
    pub fn status(&self) -> Status {
        let m = self.raft().metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let matched = |id: &NodeId| -> Option<u64> {
            let replication = m.replication.as_ref()?;
            Some(replication.get(id).copied().flatten().map_or(0, |l| l.index))
        };
        let mut members: Vec<MemberStatus> = membership
            .nodes()
            .map(|(id, node)| MemberStatus {
                id: *id,
                name: node.addr.clone(),
                role: if voters.contains(id) {
                    Role::Voter
                } else {
                    Role::Learner
                },
                matched: matched(id),
            })
            .collect();
        // By name, as people look for them (the log's order is its random ids').
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let silent = *self.inner.shared.leader_silent.borrow();
        Status {
            leader: m
                .current_leader
                .filter(|_| !silent)
                .and_then(|l| membership.get_node(&l).map(|n| n.addr.clone())),
            lead_unconfirmed: lead_unconfirmed(&m),
            term: m.current_term,
            commit_index: m.last_applied.map_or(0, |l| l.index),
            last_log_index: m.last_log_index.unwrap_or(0),
            members,
        }
    }

    /// This node's id in the Raft group.
    pub fn raft_id(&self) -> NodeId {
        self.raft().metrics().borrow().id
    }

    /// Whether `id` is the Raft id of a member of a cluster this one was recovered from
    /// (`troupe recover`): a member the recovered cluster hears nothing from (see
    /// [`super::FORGOTTEN_IDS`]).
    pub fn recovered_without(&self, id: NodeId) -> bool {
        self.inner.forgotten.holds(id)
    }

    /// Why this node could not commit a write now, if it could not: the store failed, no
    /// leader is known (an election, or this node is cut off: a follower that hears nothing
    /// stands for election within about 2 s), or this node leads and no majority answered
    /// it for [`QUORUM_SILENT`]. A readiness, not a promise: a write may still fail.
    pub fn commit_problem(&self) -> Option<String> {
        if let Some(reason) = self.failure() {
            return Some(format!("the store has failed: {reason}"));
        }
        let metrics = self.raft().metrics().borrow().clone();
        if metrics.current_leader.is_none() {
            return Some("no leader is known: an election is under way or this node is cut off".into());
        }
        if *self.inner.shared.leader_silent.borrow() {
            return Some("no leader heard for over 2 s: this node is cut off, or its leader froze or went".into());
        }
        if lead_unconfirmed(&metrics) {
            let voters = metrics.membership_config.membership().voter_ids().count();
            return Some(format!(
                "this node leads but no majority of the {voters} voters answered it within {QUORUM_SILENT:?}"
            ));
        }
        None
    }

    /// The name of the member that leads now, when one is known.
    pub fn leader(&self) -> Option<String> {
        if *self.inner.shared.leader_silent.borrow() {
            return None;
        }
        let metrics = self.raft().metrics().borrow().clone();
        let leader = metrics.current_leader?;
        metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
    }
}

//! This node's lease and the members' states. Every node beats every peer each [`BEAT`];
//! the leader answers with a lease only while a quorum confirmed its leadership within the
//! last [`CONFIRMED_WITHIN`], and records the grant. A node holds its lease for [`LEASE`]
//! from the moment it *sent* the beat a lease answered (see `crate::failover` for what it
//! runs by it, and for the leader's judgement of the members from the grants).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use troupe_runtime::store::{StoreError, View, META};

/// How often a node beats each peer.
pub const BEAT: Duration = Duration::from_millis(250);
/// How long a granted lease lasts, from the moment its beat was sent. Longer than a leader
/// election (1.7–2 s after the old leader's last heartbeat), so losing the leader does not
/// make the survivors stop their work.
pub const LEASE: Duration = Duration::from_millis(3500);
/// How long before its lease lapses a node stops its work.
pub const STOP_MARGIN: Duration = Duration::from_millis(500);
/// Silence (no lease granted) after which the leader declares a member SUSPECT.
pub const SUSPECT_AFTER: Duration = Duration::from_millis(1500);
/// Silence after which the leader declares a member DOWN: its lease has lapsed and it has
/// stopped its work.
pub const DOWN_AFTER: Duration = Duration::from_millis(4000);
/// How fresh the leader's quorum confirmation must be for it to grant a lease.
pub(crate) const CONFIRMED_WITHIN: Duration = Duration::from_millis(500);

/// A member's state, as the leader decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    Up,
    Suspect,
    Down,
    Left,
}

impl MemberState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Up => "UP",
            Self::Suspect => "SUSPECT",
            Self::Down => "DOWN",
            Self::Left => "LEFT",
        }
    }
}

/// A member's committed state and since when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub state: MemberState,
    pub since: chrono::DateTime<chrono::Utc>,
}

pub(crate) fn member_key(node: &str) -> String {
    format!("member@{node}")
}

pub(crate) fn fence_key(node: &str) -> String {
    format!("fence@{node}")
}

/// A member's committed state (UP when never decided).
pub fn member_in(v: &View<'_>, node: &str) -> Result<Option<MemberRecord>, StoreError> {
    v.get(META, &member_key(node))?
        .map(|b| troupe_runtime::codec::decode(&b))
        .transpose()
}

/// How a member answers the beat of a node that is a member that left (see [`left_as`]):
/// that node stops, saying so ([`super::Cluster::dismissed`]).
pub(crate) const LEFT_BEAT: &str = "the sender is a member that left the cluster";

/// How a member answers the beat of a node that was a member of a cluster this one was
/// recovered from (`troupe recover`), back with its old data dir: that node stops, saying
/// so (it must join afresh, with an empty data dir).
pub(crate) const FORGOTTEN_BEAT: &str = "the sender was a member of a cluster this one was recovered from";

/// The key (in the `meta` table) of the Raft id the member `node` had when it left.
pub(crate) fn left_id_key(node: &str) -> String {
    format!("member@{node}@raft")
}

/// When the member `node` left the cluster, if the node of Raft id `id` is that member
/// (the one that left, not a new member of its name): a node forgotten while it was stopped
/// never applied the entry, and comes back from its data dir as a member.
pub fn left_as(v: &View<'_>, node: &str, id: u64) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
    let Some(record) = member_in(v, node)?.filter(|r| r.state == MemberState::Left) else {
        return Ok(None);
    };
    let left: Option<u64> = match v.get(META, &left_id_key(node))? {
        Some(b) => troupe_runtime::codec::decode(&b)?,
        None => None,
    };
    Ok((left == Some(id)).then_some(record.since))
}

/// A member's fencing epoch (0 when never fenced).
pub fn epoch_in(v: &View<'_>, node: &str) -> Result<u64, StoreError> {
    Ok(match v.get(META, &fence_key(node))? {
        Some(b) => troupe_runtime::codec::decode(&b)?,
        None => 0,
    })
}

/// How long the leader has not heard from a member, as it judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Silence {
    /// Since the last lease granted to it, or since the judging began if none was since.
    pub(crate) silent: Duration,
    /// Whether a lease was granted to it since the judging began: only a member heard from
    /// comes back UP (one the leader judges afresh is not heard from merely for that).
    pub(crate) heard: bool,
}

/// This node's lease, and as a leader the leases it granted.
#[derive(Clone, Default)]
pub struct Leases(Arc<Mutex<Book>>);

#[derive(Default)]
struct Book {
    /// Until when this node holds its lease.
    until: Option<Instant>,
    /// What the grantor of the last lease had applied when it granted it.
    applied: u64,
    /// As the leader: when a quorum last confirmed this node's leadership (the check's start).
    confirmed: Option<Instant>,
    /// As the leader: when it last granted each member a lease.
    granted: HashMap<String, Instant>,
    /// When this node last heard from each peer at all.
    heard: HashMap<String, Instant>,
    /// This node is leaving the cluster: it stops its work for good.
    released: bool,
    /// Whether this node's work runs now.
    running: bool,
}

impl Leases {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers a beat from `from`: a lease if this node leads with a fresh confirmation.
    pub(crate) fn grant(&self, from: &str, leads: bool) -> bool {
        let now = Instant::now();
        let mut book = self.book();
        let fresh = book
            .confirmed
            .is_some_and(|c| now.saturating_duration_since(c) <= CONFIRMED_WITHIN);
        if leads && fresh {
            book.granted.insert(from.to_owned(), now);
        }
        leads && fresh
    }

    /// A beat sent at `sent` was answered.
    /// `lease`: it granted one, its grantor having applied `applied`.
    pub(crate) fn answered(&self, peer: &str, sent: Instant, lease: bool, applied: u64) {
        let mut book = self.book();
        book.heard.insert(peer.to_owned(), Instant::now());
        if lease {
            book.until = Some(book.until.map_or(sent + LEASE, |u| u.max(sent + LEASE)));
            book.applied = applied;
        }
    }

    /// A quorum confirmed this node's leadership with a check started at `at`: it holds its
    /// own lease from then.
    pub(crate) fn confirmed(&self, at: Instant, applied: u64) {
        let mut book = self.book();
        book.confirmed = Some(at);
        book.until = Some(book.until.map_or(at + LEASE, |u| u.max(at + LEASE)));
        book.applied = applied;
    }

    pub(crate) fn deposed(&self) {
        let mut book = self.book();
        book.confirmed = None;
        book.granted.clear();
    }

    /// Whether this node may run its work now: its lease has more than the stop margin left.
    pub fn held(&self) -> bool {
        self.book().until.is_some_and(|u| Instant::now() + STOP_MARGIN < u)
    }

    /// Gives this node a lease of [`LEASE`] from now (a node that was running before it was
    /// part of a cluster of several keeps running while its first beats go out).
    pub(crate) fn grace(&self) {
        let mut book = self.book();
        let until = Instant::now() + LEASE;
        book.until = Some(book.until.map_or(until, |u| u.max(until)));
    }

    /// How long the leader has not granted `member` a lease, counting from `since` (when it
    /// began to judge it: it took the lead, or the member joined since) for one it has not
    /// granted one since; and whether it has.
    pub(crate) fn silence(&self, member: &str, since: Instant, now: Instant) -> Silence {
        let book = self.book();
        let granted = book.granted.get(member).copied().filter(|g| *g >= since);
        Silence {
            silent: now.saturating_duration_since(granted.unwrap_or(since)),
            heard: granted.is_some(),
        }
    }

    /// Whether this node, as the leader, granted `member` a lease within `within` of now.
    pub(crate) fn granted_within(&self, member: &str, within: Duration) -> bool {
        let now = Instant::now();
        self.book()
            .granted
            .get(member)
            .is_some_and(|g| now.saturating_duration_since(*g) <= within)
    }

    /// When this node last heard from `peer` (a beat answered either way).
    pub fn heard(&self, peer: &str) -> Option<Instant> {
        self.book().heard.get(peer).copied()
    }

    pub(crate) fn grantor_applied(&self) -> u64 {
        self.book().applied
    }

    /// Stops this node's work for good (it leaves the cluster); answers once it has stopped,
    /// or `false` if it still runs after `within`.
    pub(crate) async fn release(&self, within: Duration) -> bool {
        self.book().released = true;
        let deadline = Instant::now() + within;
        while self.book().running {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Says whether the node's work runs now (the lease keeper keeps it true).
    pub(crate) fn set_running(&self, running: bool) {
        self.book().running = running;
    }

    /// Whether the node's work runs now, as the lease keeper last said.
    pub(crate) fn running(&self) -> bool {
        self.book().running
    }

    pub(crate) fn released(&self) -> bool {
        self.book().released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lease_runs_from_the_beat_that_won_it_and_is_given_up_before_it_lapses() {
        let leases = Leases::default();
        assert!(!leases.held(), "no lease before any grant");
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(200)).await;
        leases.answered("a", sent, true, 7);
        assert!(leases.held());
        assert_eq!(leases.grantor_applied(), 7);
        // Held until the stop margin before LEASE after the beat was *sent*.
        tokio::time::advance(LEASE - STOP_MARGIN - Duration::from_millis(201)).await;
        assert!(leases.held());
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(!leases.held(), "given up STOP_MARGIN before the lease lapses");
        // An answer without a lease renews nothing.
        leases.answered("a", Instant::now(), false, 7);
        assert!(!leases.held());
        assert!(leases.heard("a").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_grants_only_while_its_leadership_is_freshly_confirmed() {
        let leases = Leases::default();
        assert!(!leases.grant("b", true), "never confirmed");
        leases.confirmed(Instant::now(), 3);
        assert!(!leases.grant("b", false), "not the leader");
        assert!(leases.grant("b", true));
        // Judged from a moment after that grant.
        tokio::time::advance(Duration::from_millis(1)).await;
        let since = Instant::now();
        tokio::time::advance(CONFIRMED_WITHIN + Duration::from_millis(1)).await;
        assert!(!leases.grant("c", true), "a stale confirmation grants nothing");
        // Silence counts from the last grant, or from the start of the leadership.
        let now = Instant::now();
        let heard = |silent, heard| Silence { silent, heard };
        assert_eq!(
            leases.silence("b", since, now),
            heard(CONFIRMED_WITHIN + Duration::from_millis(1), false)
        );
        assert_eq!(leases.silence("c", since, now), heard(now - since, false));
        // A grant since: heard, silent from then.
        tokio::time::advance(Duration::from_millis(5)).await;
        leases.confirmed(Instant::now(), 3);
        assert!(leases.grant("b", true));
        let later = Instant::now();
        tokio::time::advance(Duration::from_millis(7)).await;
        assert_eq!(
            leases.silence("b", since, Instant::now()),
            heard(Instant::now() - later, true)
        );
        // The declared-down bound leaves the member's lease and its stop margin behind.
        assert!(DOWN_AFTER >= LEASE + STOP_MARGIN && SUSPECT_AFTER < DOWN_AFTER);
    }
}

//! The order of one node's writes across the log. A node's writer keeps several groups in
//! flight at once (see `store::writer`); each carries its [`Origin`]: the writer's run (an
//! epoch) and the group's place in it. The state machine applies a group only right after
//! the one before it, so when a group is lost on the way (a leader change, a link that drops
//! one request) the groups sent behind it are refused, on every node alike, and the writer
//! sends them again in order: a batch handed to the store never applies before one handed
//! over earlier.
//!
//! On the leader, forwarded groups that overtook each other between the link and the Raft
//! core ([`Arrivals`]) are handed to the core in their order, so such a refusal is rare.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::NodeId;
use crate::codec;
use crate::store::StoreError;

/// Where a group comes from: the writer of node `node` in its run `epoch`, the `seq`-th group
/// of that run (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    pub node: NodeId,
    pub epoch: u64,
    pub seq: u64,
}

/// The last group applied from one node: what the state machine holds per origin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub epoch: u64,
    pub seq: u64,
}

/// A replicated table (a snapshot carries it): node id → its last applied [`Session`].
pub(in crate::store) const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");

/// Whether the group from `origin` comes next, given what was applied from its node: the
/// next one of the same run, or the first of a later run. Any other is refused.
pub(in crate::store) fn comes_next(held: Option<Session>, origin: Origin) -> bool {
    match held {
        Some(h) if h.epoch == origin.epoch => h.seq + 1 == origin.seq,
        Some(h) if h.epoch > origin.epoch => false,
        _ => origin.seq == 1,
    }
}

/// Whether the tables of `db` hold the group from `origin` as applied (it, or a later group of
/// its node, came through the log or a snapshot).
pub(in crate::store) fn applied(db: &redb::Database, origin: Origin) -> Result<bool, StoreError> {
    let held: Option<Session> = super::read_state(db, SESSIONS, &origin.node.to_string())?;
    Ok(held.is_some_and(|h| (h.epoch, h.seq) >= (origin.epoch, origin.seq)))
}

/// Checks `origin` against the sessions table and records it when it comes next; the
/// session held when it does not (nothing is written then).
pub(in crate::store) fn admit(
    table: &mut redb::Table<'_, &'static str, &'static [u8]>,
    origin: Origin,
) -> Result<Option<Session>, StoreError> {
    let key = origin.node.to_string();
    let held: Option<Session> = match table.get(key.as_str()).map_err(StoreError::db)? {
        Some(v) => Some(codec::decode(v.value())?),
        None => None,
    };
    if !comes_next(held, origin) {
        return Ok(Some(held.unwrap_or_default()));
    }
    let now = Session {
        epoch: origin.epoch,
        seq: origin.seq,
    };
    table
        .insert(key.as_str(), codec::encode(&now)?.as_slice())
        .map_err(StoreError::db)?;
    Ok(None)
}

/// How long a forwarded group waits on the leader for the one before it to arrive: the
/// two crossed on the way by a moment, or the earlier one was lost and the state machine
/// will refuse this one anyway.
const IN_TURN_WITHIN: Duration = Duration::from_millis(50);

/// On the leader: the last group of each origin handed to the Raft core.
#[derive(Default)]
pub(in crate::store) struct Arrivals {
    handed: Mutex<HashMap<NodeId, Session>>,
    moved: Notify,
}

impl Arrivals {
    /// Waits (briefly) until the group before `origin`'s has been handed to the core.
    pub async fn in_turn(&self, origin: Origin) {
        let deadline = tokio::time::Instant::now() + IN_TURN_WITHIN;
        loop {
            let moved = self.moved.notified();
            let waiting = origin.seq > 1
                && {
                    let handed = self.handed.lock().unwrap_or_else(|p| p.into_inner());
                    // A group of a run older than the last one handed goes at once (to be refused).
                    !matches!(handed.get(&origin.node), Some(h) if h.epoch > origin.epoch || (h.epoch == origin.epoch && h.seq + 1 >= origin.seq))
                };
            if !waiting || tokio::time::timeout_at(deadline, moved).await.is_err() {
                return;
            }
        }
    }

    /// Notes that `origin`'s group was handed to the core.
    pub fn handed(&self, origin: Origin) {
        let mut handed = self.handed.lock().unwrap_or_else(|p| p.into_inner());
        let now = Session {
            epoch: origin.epoch,
            seq: origin.seq,
        };
        let later = handed
            .get(&origin.node)
            .is_none_or(|h| (h.epoch, h.seq) < (now.epoch, now.seq));
        if later {
            handed.insert(origin.node, now);
        }
        drop(handed);
        self.moved.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: u64, seq: u64) -> Origin {
        Origin { node: 7, epoch, seq }
    }

    #[test]
    fn a_group_comes_next_only_right_after_the_one_before_it_or_first_in_a_later_run() {
        let held = |epoch, seq| Some(Session { epoch, seq });
        assert!(comes_next(None, at(5, 1)));
        assert!(!comes_next(None, at(5, 2)), "the first group of the run is missing");
        assert!(comes_next(held(5, 3), at(5, 4)));
        assert!(!comes_next(held(5, 3), at(5, 5)), "group 4 is missing");
        assert!(!comes_next(held(5, 3), at(5, 3)), "applied already");
        assert!(comes_next(held(5, 3), at(6, 1)), "a later run starts afresh");
        assert!(!comes_next(held(5, 3), at(6, 2)));
        assert!(!comes_next(held(6, 1), at(5, 4)), "an earlier run is over");
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_that_overtook_the_one_before_it_waits_for_it_but_not_for_ever() {
        let arrivals = std::sync::Arc::new(Arrivals::default());
        arrivals.handed(at(1, 1));
        // Group 3 arrives before group 2: it waits until 2 is handed.
        let waiting = tokio::spawn({
            let arrivals = arrivals.clone();
            async move { arrivals.in_turn(at(1, 3)).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        arrivals.handed(at(1, 2));
        waiting.await.unwrap();
        // Group 5 waits for group 4, which never comes: only IN_TURN_WITHIN.
        let started = tokio::time::Instant::now();
        arrivals.in_turn(at(1, 5)).await;
        assert_eq!(started.elapsed(), IN_TURN_WITHIN);
        // The first group of a run, or the next one, goes at once.
        let started = tokio::time::Instant::now();
        arrivals.in_turn(at(2, 1)).await;
        arrivals.in_turn(at(1, 3)).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        // A later group of a run this node has not seen yet (it just began to lead, or the
        // run's first group is still on its way) waits for the one before it, briefly.
        arrivals.handed(at(2, 1));
        let started = tokio::time::Instant::now();
        arrivals.in_turn(at(3, 2)).await;
        arrivals
            .in_turn(Origin {
                node: 8,
                epoch: 1,
                seq: 40,
            })
            .await;
        assert_eq!(started.elapsed(), 2 * IN_TURN_WITHIN);
        // A group of an older run goes at once: the state machine refuses it.
        arrivals.in_turn(at(1, 9)).await;
        assert_eq!(started.elapsed(), 2 * IN_TURN_WITHIN);
    }
}

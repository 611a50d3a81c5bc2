//! The groups this node forwarded to the leader and waits for, by origin. The state machine
//! tells each one how its entry applied here, so a follower answers its own writes as soon
//! as it applied them, without waiting for the leader's answer (which comes only after the
//! leader applied the entry too, and may be lost with the leader though the entry committed).
//! Applying is deterministic: the outcome here is the outcome the leader would answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use openraft::{Entry, EntryPayload};
use tokio::sync::oneshot;

use super::{Applied, Origin, Troupe};

/// What applying a forwarded group's entry here gave: the entry's index, and the outcome.
pub(crate) type Landed = (u64, Applied);

/// Who waits for each origin's entry: the wait's number, and where the outcome goes.
type Waiting = HashMap<Origin, (u64, oneshot::Sender<Landed>)>;

#[derive(Default)]
pub(crate) struct Forwarded {
    waiting: Mutex<Waiting>,
    /// Numbers the waits, so a wait given up never takes away a later one for the same group
    /// (a group sent again keeps its origin).
    next: std::sync::atomic::AtomicU64,
    /// The groups applied here lately, with their outcomes: a writer whose group's outcome
    /// is unknown settles it from them (see `writer::flight`).
    recent: Mutex<Recent>,
    /// Snapshots installed here: groups applied within one are not in `recent`.
    installs: std::sync::atomic::AtomicU64,
    /// This node's Raft id (0 until known): only its own groups are kept in `recent`, for
    /// only its own writer asks about them.
    node: std::sync::atomic::AtomicU64,
}

/// Where [`Forwarded`]'s account of the groups applied here stood: what a writer takes
/// when it sends a group, to know later whether that account still covers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    installs: u64,
    recorded: u64,
}

/// Groups applied here, newest last, at most [`RECENT`].
#[derive(Default)]
struct Recent {
    order: std::collections::VecDeque<Origin>,
    outcomes: HashMap<Origin, Landed>,
    /// How many groups were recorded in all.
    recorded: u64,
}

/// The groups [`Recent`] keeps: a writer's doubt is settled within seconds, by its next
/// group, while the whole cluster writes a few thousand groups a second at most.
const RECENT: usize = 8192;

/// One forwarded group's wait for its entry to apply here; given up when dropped.
pub(crate) struct Expected {
    forwarded: Arc<Forwarded>,
    origin: Origin,
    number: u64,
    pub applied: oneshot::Receiver<Landed>,
}

impl Drop for Expected {
    fn drop(&mut self) {
        let mut waiting = self.forwarded.lock();
        if waiting.get(&self.origin).is_some_and(|(n, _)| *n == self.number) {
            waiting.remove(&self.origin);
        }
    }
}

impl Forwarded {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the entry of the group from `origin` to apply here.
    pub fn expect(self: &Arc<Self>, origin: Origin) -> Expected {
        let (tx, applied) = oneshot::channel();
        let number = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock().insert(origin, (number, tx));
        Expected {
            forwarded: self.clone(),
            origin,
            number,
            applied,
        }
    }

    /// Keeps from now on only the groups this node (Raft id `node`) sent.
    pub fn belongs_to(&self, node: super::NodeId) {
        self.node.store(node, std::sync::atomic::Ordering::Relaxed);
    }

    /// Where the account of the groups applied here stands now.
    pub fn mark(&self) -> Mark {
        // Read before the groups recorded: a snapshot installed in between is then seen.
        let installs = self.installs.load(std::sync::atomic::Ordering::SeqCst);
        let recorded = self.recent.lock().unwrap_or_else(|p| p.into_inner()).recorded;
        Mark { installs, recorded }
    }

    /// How the group from `origin`, sent at `since`, applied here: `Some(Some(_))` when it
    /// did, `Some(None)` when it did not (so far), `None` when the account no longer covers
    /// it (a snapshot was installed here since, or more groups applied than it keeps).
    pub fn landed_since(&self, origin: Origin, since: Mark) -> Option<Option<Landed>> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let installs = self.installs.load(std::sync::atomic::Ordering::SeqCst);
        if installs != since.installs || recent.recorded - since.recorded > RECENT as u64 {
            return None;
        }
        Some(recent.outcomes.get(&origin).cloned())
    }

    /// A snapshot was installed here: what it holds never passed through [`Self::applied`].
    pub fn installed(&self) {
        self.installs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many waits are open (for tests).
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.lock().len()
    }

    /// Tells the groups waited for among `entries` what applying them gave (`results`, one
    /// per entry). Called once the entries' write is committed to the tables here.
    pub fn applied(&self, entries: &[Entry<Troupe>], results: &[Applied]) {
        let me = self.node.load(std::sync::atomic::Ordering::Relaxed);
        let own = |origin: &Origin| me == 0 || origin.node == me;
        let mine = |entry: &Entry<Troupe>| match &entry.payload {
            EntryPayload::Normal(proposal) => proposal.origin.filter(own),
            _ => None,
        };
        if entries.iter().any(|e| mine(e).is_some()) {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            for (entry, result) in entries.iter().zip(results) {
                let Some(origin) = mine(entry).filter(|_| result.out_of_order.is_none()) else {
                    continue;
                };
                recent.order.push_back(origin);
                recent.outcomes.insert(origin, (entry.log_id.index, result.clone()));
                recent.recorded += 1;
                while recent.order.len() > RECENT {
                    if let Some(old) = recent.order.pop_front() {
                        recent.outcomes.remove(&old);
                    }
                }
            }
        }
        let mut waiting = self.lock();
        if waiting.is_empty() {
            return;
        }
        for (entry, result) in entries.iter().zip(results) {
            if let EntryPayload::Normal(proposal) = &entry.payload {
                if let Some((_, tx)) = proposal.origin.and_then(|o| waiting.remove(&o)) {
                    let _ = tx.send((entry.log_id.index, result.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

    use super::*;
    use crate::store::raft::Proposal;

    fn entry(index: u64, origin: Origin) -> Entry<Troupe> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Proposal {
                batches: Arc::new(Vec::new()),
                origin: Some(origin),
            }),
        }
    }

    fn origin(seq: u64) -> Origin {
        Origin { node: 7, epoch: 1, seq }
    }

    #[test]
    fn only_this_nodes_own_groups_are_kept() {
        let f = Forwarded::default();
        f.belongs_to(7);
        let sent = f.mark();
        let other = Origin {
            node: 8,
            epoch: 1,
            seq: 1,
        };
        f.applied(
            &[entry(10, other), entry(11, origin(1))],
            &[Applied::default(), Applied::default()],
        );
        assert_eq!(f.mark().recorded, sent.recorded + 1, "one group of its own");
        assert_eq!(f.landed_since(other, sent).map(|l| l.is_some()), Some(false));
        assert_eq!(
            f.landed_since(origin(1), sent).map(|l| l.map(|(i, _)| i)),
            Some(Some(11))
        );
    }

    #[test]
    fn a_group_sent_is_known_applied_or_not_until_a_snapshot_or_too_many_groups_hide_it() {
        let f = Forwarded::default();
        let sent = f.mark();
        let applied = Applied {
            seqs: vec![vec![4]],
            ..Default::default()
        };
        f.applied(&[entry(10, origin(1))], std::slice::from_ref(&applied));
        assert_eq!(
            f.landed_since(origin(1), sent).map(|l| l.map(|(i, _)| i)),
            Some(Some(10))
        );
        // Refused as out of order: not applied.
        let refused = Applied {
            out_of_order: Some(Default::default()),
            ..Default::default()
        };
        f.applied(&[entry(11, origin(3))], &[refused]);
        assert_eq!(f.landed_since(origin(3), sent).map(|l| l.is_some()), Some(false));
        assert_eq!(f.landed_since(origin(2), sent).map(|l| l.is_some()), Some(false));
        // More groups applied since than the account keeps: it can no longer say.
        let many: Vec<Entry<Troupe>> = (0..RECENT as u64 + 1)
            .map(|i| {
                entry(
                    100 + i,
                    Origin {
                        node: 8,
                        epoch: 1,
                        seq: i + 1,
                    },
                )
            })
            .collect();
        let results = vec![Applied::default(); many.len()];
        f.applied(&many, &results);
        assert!(f.landed_since(origin(2), sent).is_none());
        // A snapshot installed since a group was sent: it may hold it.
        let later = f.mark();
        assert_eq!(f.landed_since(origin(2), later).map(|l| l.is_some()), Some(false));
        f.installed();
        assert!(f.landed_since(origin(2), later).is_none());
    }
}

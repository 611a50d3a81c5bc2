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
}

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

    /// How many waits are open (for tests).
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.lock().len()
    }

    /// Tells the groups waited for among `entries` what applying them gave (`results`, one
    /// per entry). Called once the entries' write is committed to the tables here.
    pub fn applied(&self, entries: &[Entry<Troupe>], results: &[Applied]) {
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

//! One writer at a time for what a swarm keeps in the store and rewrites whole: its memory
//! (a compare-and-set reads, then writes), its spec and status (autoscale, `setTopology`,
//! `adoptAgent` each read, change and write them back), and each of its tasks' records (a
//! conductor's steps run side by side). The store has no compare-and-set of its own; a swarm
//! lives on one node, so a lock of that node is enough.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

type Lock = tokio::sync::Mutex<()>;

/// The node's locks, by what they guard. A lock lives while someone holds or waits on it.
#[derive(Clone, Default)]
pub struct Locks(Arc<Mutex<HashMap<String, Weak<Lock>>>>);

impl Locks {
    /// The lock of a swarm's memory.
    pub fn memory(&self, swarm: &str) -> Arc<Lock> {
        self.of(format!("memory/{swarm}"))
    }

    /// The lock of a swarm's spec and status.
    pub fn spec(&self, swarm: &str) -> Arc<Lock> {
        self.of(format!("spec/{swarm}"))
    }

    /// Waits for the lock of a swarm's spec and status, and holds it while the answer lives.
    pub(crate) async fn hold_spec(&self, swarm: &str) -> SpecHeld {
        SpecHeld {
            swarm: swarm.to_owned(),
            _guard: self.spec(swarm).lock_owned().await,
        }
    }

    /// The lock of a swarm task's record.
    pub fn task(&self, task: &str) -> Arc<Lock> {
        self.of(format!("task/{task}"))
    }

    fn of(&self, key: String) -> Arc<Lock> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lock) = map.get(&key).and_then(Weak::upgrade) {
            return lock;
        }
        // Forgets the locks nobody holds, so the map stays as small as what is in use.
        map.retain(|_, l| l.strong_count() > 0);
        let lock = Arc::new(Lock::new(()));
        map.insert(key, Arc::downgrade(&lock));
        lock
    }
}

/// The lock of one swarm's spec and status, held: what a change of them asks for, so a
/// caller can check and act under the lock before and after it changes them.
pub(crate) struct SpecHeld {
    swarm: String,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl SpecHeld {
    /// The swarm whose records it guards.
    pub(crate) fn swarm(&self) -> &str {
        &self.swarm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_lock_per_thing_while_it_is_in_use() {
        let locks = Locks::default();
        let a = locks.spec("s1");
        assert!(Arc::ptr_eq(&a, &locks.spec("s1")));
        assert!(!Arc::ptr_eq(&a, &locks.memory("s1")));
        let held = a.lock().await;
        assert!(locks.spec("s1").try_lock().is_err(), "the same lock while held");
        drop(held);
        drop(a);
        let _b = locks.task("t1");
        assert_eq!(locks.0.lock().unwrap().len(), 1, "unused locks are forgotten");
    }
}

//! Keys with an operation under way on this node. Some operations read a record, decide and
//! write it back (requeueing a DEAD task, replaying a dead message); two of them on one key at
//! once would both decide on the same old record. The second is refused while the first runs.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Clone, Default)]
pub struct InFlight(Arc<Mutex<HashSet<String>>>);

/// An operation under way on a key; dropped, the key is free again.
pub struct InFlightGuard {
    key: String,
    set: InFlight,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `key` busy, or `None` when an operation on it is under way already.
    pub fn begin(&self, key: &str) -> Option<InFlightGuard> {
        self.lock().insert(key.to_owned()).then(|| InFlightGuard {
            key: key.to_owned(),
            set: self.clone(),
        })
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.set.lock().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_busy_until_its_guard_is_dropped() {
        let set = InFlight::default();
        let first = set.begin("t1").expect("free");
        assert!(set.begin("t1").is_none());
        assert!(set.begin("t2").is_some());
        drop(first);
        assert!(set.begin("t1").is_some());
    }
}

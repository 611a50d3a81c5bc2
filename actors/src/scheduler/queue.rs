//! Queue order: priority class first (CRITICAL before LOW), then arrival order.

use std::collections::{BTreeSet, HashMap};

use crate::task::Priority;

/// A queued task's place: priority rank, arrival number, id.
pub type QueueKey = (u8, u64, String);

#[derive(Debug, Default)]
pub struct TaskQueue {
    order: BTreeSet<(u8, u64, String)>,
    index: HashMap<String, (u8, u64)>,
    next: u64,
}

impl TaskQueue {
    /// Adds a task at the back of its priority class; a task already queued keeps its place.
    pub fn push(&mut self, id: &str, priority: Priority) {
        if self.index.contains_key(id) {
            return;
        }
        let key = (priority.rank(), self.next);
        self.next += 1;
        self.order.insert((key.0, key.1, id.to_owned()));
        self.index.insert(id.to_owned(), key);
    }

    pub fn remove(&mut self, id: &str) -> bool {
        match self.index.remove(id) {
            Some((p, s)) => self.order.remove(&(p, s, id.to_owned())),
            None => false,
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// The first entry after `after` (from the front when `None`), for scans that change the
    /// agents' load between steps.
    pub fn first_after(&self, after: Option<&QueueKey>) -> Option<QueueKey> {
        use std::ops::Bound::{Excluded, Unbounded};
        let lower = after.map_or(Unbounded, Excluded);
        self.order.range((lower, Unbounded)).next().cloned()
    }

    /// Task ids in the order they should run.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.order.iter().map(|(_, _, id)| id.as_str())
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_priority_first_then_first_in_first_out() {
        let mut q = TaskQueue::default();
        q.push("low", Priority::Low);
        q.push("n1", Priority::Normal);
        q.push("crit", Priority::Critical);
        q.push("n2", Priority::Normal);
        q.push("high", Priority::High);
        assert_eq!(q.iter().collect::<Vec<_>>(), ["crit", "high", "n1", "n2", "low"]);
    }

    #[test]
    fn removing_and_requeueing_moves_a_task_to_the_back_of_its_class() {
        let mut q = TaskQueue::default();
        q.push("a", Priority::Normal);
        q.push("b", Priority::Normal);
        q.push("a", Priority::Normal);
        assert_eq!(q.len(), 2);
        assert!(q.remove("a"));
        assert!(!q.remove("a"));
        q.push("a", Priority::Normal);
        assert_eq!(q.iter().collect::<Vec<_>>(), ["b", "a"]);
    }

    #[test]
    fn first_after_walks_the_queue_in_order() {
        let mut q = TaskQueue::default();
        q.push("x", Priority::Low);
        q.push("y", Priority::High);
        let first = q.first_after(None).unwrap();
        assert_eq!(first.2, "y");
        assert_eq!(q.first_after(Some(&first)).unwrap().2, "x");
    }
}

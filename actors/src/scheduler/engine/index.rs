//! The indexes that keep a scheduling decision proportional to the work that can run: queued
//! tasks by what can run them, and agents with room by capability and load.

use std::collections::{BTreeSet, HashMap};

use crate::task::Priority;

/// A queued task's place: priority rank, arrival number, id. Smaller runs first.
pub type QueueKey = (u8, u64, String);

/// What can run a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    Agent(String),
    Capability(String),
}

/// Runnable tasks, one ordered queue per target agent and per capability. A task that no
/// agent can run sits in a queue nobody looks at, so it costs nothing.
#[derive(Debug, Default)]
pub struct Queues {
    by_agent: HashMap<String, BTreeSet<QueueKey>>,
    by_capability: HashMap<String, BTreeSet<QueueKey>>,
    next: u64,
    len: usize,
}

impl Queues {
    fn queue(&mut self, want: &Want) -> &mut BTreeSet<QueueKey> {
        match want {
            Want::Agent(a) => self.by_agent.entry(a.clone()).or_default(),
            Want::Capability(c) => self.by_capability.entry(c.clone()).or_default(),
        }
    }

    /// Queues a task at the back of its priority class; returns its place.
    pub fn push(&mut self, want: &Want, id: &str, priority: Priority) -> QueueKey {
        let key = (priority.rank(), self.next, id.to_owned());
        self.next += 1;
        if self.queue(want).insert(key.clone()) {
            self.len += 1;
        }
        key
    }

    pub fn remove(&mut self, want: &Want, key: &QueueKey) {
        let map = match want {
            Want::Agent(a) => self.by_agent.get_mut(a),
            Want::Capability(c) => self.by_capability.get_mut(c),
        };
        if let Some(queue) = map {
            if queue.remove(key) {
                self.len -= 1;
            }
            if queue.is_empty() {
                match want {
                    Want::Agent(a) => self.by_agent.remove(a),
                    Want::Capability(c) => self.by_capability.remove(c),
                };
            }
        }
    }

    /// The first task `agent` (with `capabilities`) may run: the best head among its own
    /// queue and the queues of its capabilities.
    pub fn best_for(&self, agent: &str, capabilities: &[String]) -> Option<(Want, QueueKey)> {
        // None: the agent's own queue; Some(i): its i-th capability's.
        let own = self.by_agent.get(agent).and_then(|q| q.first()).map(|k| (None, k));
        let by_cap = capabilities
            .iter()
            .enumerate()
            .filter_map(|(i, c)| self.by_capability.get(c).and_then(|q| q.first()).map(|k| (Some(i), k)));
        let (which, key) = own.into_iter().chain(by_cap).min_by(|a, b| a.1.cmp(b.1))?;
        let want = match which {
            None => Want::Agent(agent.to_owned()),
            Some(i) => Want::Capability(capabilities[i].clone()),
        };
        Some((want, key.clone()))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// An agent's load as a sortable number: the share of its slots in use, scaled so that two
/// different shares (slots up to 10,000) never compare equal.
pub fn load_key(running: u32, max: u32) -> u64 {
    (u64::from(running) << 32) / u64::from(max.max(1))
}

/// Agents with at least one free slot, per capability, least loaded first (ties to the
/// smaller id).
#[derive(Debug, Default)]
pub struct Free {
    by_capability: HashMap<String, BTreeSet<(u64, String)>>,
}

impl Free {
    pub fn insert(&mut self, capabilities: &[String], agent: &str, load: u64) {
        for c in capabilities {
            self.by_capability
                .entry(c.clone())
                .or_default()
                .insert((load, agent.to_owned()));
        }
    }

    pub fn remove(&mut self, capabilities: &[String], agent: &str, load: u64) {
        for c in capabilities {
            if let Some(set) = self.by_capability.get_mut(c) {
                set.remove(&(load, agent.to_owned()));
                if set.is_empty() {
                    self.by_capability.remove(c);
                }
            }
        }
    }

    pub fn least_loaded(&self, capability: &str) -> Option<&str> {
        self.by_capability
            .get(capability)
            .and_then(|s| s.first())
            .map(|(_, id)| id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_takes_its_best_head_by_priority_then_arrival() {
        let mut q = Queues::default();
        let cap = |c: &str| Want::Capability(c.into());
        q.push(&cap("a"), "a-low", Priority::Low);
        q.push(&cap("b"), "b-normal", Priority::Normal);
        q.push(&Want::Agent("x".into()), "x-normal", Priority::Normal);
        q.push(&cap("a"), "a-high", Priority::High);
        q.push(&cap("nobody"), "blocked", Priority::Critical);
        let caps = vec!["a".to_string(), "b".to_string()];
        let order: Vec<String> = std::iter::from_fn(|| {
            let (want, key) = q.best_for("x", &caps)?;
            q.remove(&want, &key);
            Some(key.2)
        })
        .collect();
        assert_eq!(order, ["a-high", "b-normal", "x-normal", "a-low"]);
        assert_eq!(q.len(), 1, "the task nobody can run is still there");
    }

    #[test]
    fn loads_order_by_share_of_slots_then_id() {
        assert!(load_key(1, 4) < load_key(1, 2));
        assert_eq!(load_key(2, 4), load_key(1, 2));
        // The closest two different shares with slots up to 10,000 still differ.
        assert!(load_key(9_998, 9_999) < load_key(9_999, 10_000));
        let mut free = Free::default();
        let caps = vec!["echo".to_string()];
        free.insert(&caps, "b", load_key(1, 4));
        free.insert(&caps, "a", load_key(1, 2));
        free.insert(&caps, "c", load_key(1, 4));
        assert_eq!(free.least_loaded("echo"), Some("b"));
        free.remove(&caps, "b", load_key(1, 4));
        assert_eq!(free.least_loaded("echo"), Some("c"));
        assert_eq!(free.least_loaded("other"), None);
    }
}

//! The indexes that keep a scheduling decision proportional to the work that can run: queued
//! tasks by what can run them, and agents with room by capability and load.

use std::collections::{BTreeSet, HashMap};

use crate::task::{Priority, Strategy};

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

    /// Each capability's queue, in its order.
    pub fn by_capability(&self) -> impl Iterator<Item = (&str, &BTreeSet<QueueKey>)> {
        self.by_capability.iter().map(|(c, q)| (c.as_str(), q))
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

/// A score in 0..1 as a sortable number, the best first.
pub fn score_key(score: f64) -> u64 {
    ((1.0 - score.clamp(0.0, 1.0)) * 1e12) as u64
}

/// The score `score_key` stands for.
pub fn score_of(key: u64) -> f64 {
    1.0 - key as f64 / 1e12
}

pub use crate::task::Place;

/// The agents with room for one key (a capability, or a set of requirements), in each
/// strategy's order; ties go to the smaller id.
#[derive(Debug, Default)]
struct KeyFree {
    score: BTreeSet<(u64, String)>,
    running: BTreeSet<(u32, String)>,
    weighted: BTreeSet<(u64, String)>,
    ids: BTreeSet<String>,
}

/// Agents with at least one free slot, per key.
#[derive(Debug, Default)]
pub struct Free {
    by_key: HashMap<String, KeyFree>,
}

impl Free {
    pub fn insert(&mut self, key: &str, agent: &str, place: Place) {
        let f = self.by_key.entry(key.to_owned()).or_default();
        f.score.insert((place.score, agent.to_owned()));
        f.running.insert((place.running, agent.to_owned()));
        f.weighted.insert((place.weighted, agent.to_owned()));
        f.ids.insert(agent.to_owned());
    }

    pub fn remove(&mut self, key: &str, agent: &str, place: Place) {
        if let Some(f) = self.by_key.get_mut(key) {
            f.score.remove(&(place.score, agent.to_owned()));
            f.running.remove(&(place.running, agent.to_owned()));
            f.weighted.remove(&(place.weighted, agent.to_owned()));
            f.ids.remove(agent);
            if f.ids.is_empty() {
                self.by_key.remove(key);
            }
        }
    }

    /// The best place in each strategy's order among the agents with room for `key` (each
    /// may be another agent's), or `None` when none has room.
    pub fn best(&self, key: &str) -> Option<Place> {
        let f = self.by_key.get(key)?;
        Some(Place {
            score: f.score.first()?.0,
            running: f.running.first()?.0,
            weighted: f.weighted.first()?.0,
        })
    }

    /// The agent with room for `key` that `strategy` picks; `after` is the last one round
    /// robin picked.
    pub fn choose(&self, key: &str, strategy: Strategy, after: Option<&str>) -> Option<&str> {
        let f = self.by_key.get(key)?;
        match strategy {
            Strategy::Score => f.score.first().map(|(_, id)| id.as_str()),
            Strategy::LeastConnections => f.running.first().map(|(_, id)| id.as_str()),
            Strategy::Weighted => f.weighted.first().map(|(_, id)| id.as_str()),
            Strategy::RoundRobin => {
                let next = after.and_then(|a| {
                    f.ids
                        .range::<str, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
                        .next()
                });
                next.or_else(|| f.ids.first()).map(String::as_str)
            }
        }
    }

    /// The best-scored agent with room for `key` other than `agent`.
    pub fn runner_up(&self, key: &str, agent: &str) -> Option<(&str, u64)> {
        let f = self.by_key.get(key)?;
        f.score
            .iter()
            .find(|(_, id)| id != agent)
            .map(|(s, id)| (id.as_str(), *s))
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
    fn loads_order_by_share_of_slots_and_each_strategy_picks_its_own_way() {
        assert!(load_key(1, 4) < load_key(1, 2));
        assert_eq!(load_key(2, 4), load_key(1, 2));
        // The closest two different shares with slots up to 10,000 still differ.
        assert!(load_key(9_998, 9_999) < load_key(9_999, 10_000));
        let mut free = Free::default();
        let place = |score: f64, running: u32, weighted: u64| Place {
            score: score_key(score),
            running,
            weighted,
        };
        free.insert("echo", "b", place(0.9, 3, 5));
        free.insert("echo", "a", place(0.5, 1, 9));
        free.insert("echo", "c", place(0.7, 2, 1));
        assert_eq!(free.choose("echo", Strategy::Score, None), Some("b"));
        assert_eq!(free.choose("echo", Strategy::LeastConnections, None), Some("a"));
        assert_eq!(free.choose("echo", Strategy::Weighted, None), Some("c"));
        assert_eq!(free.choose("echo", Strategy::RoundRobin, None), Some("a"));
        assert_eq!(free.choose("echo", Strategy::RoundRobin, Some("b")), Some("c"));
        assert_eq!(free.choose("echo", Strategy::RoundRobin, Some("c")), Some("a"));
        assert_eq!(free.runner_up("echo", "b").map(|(id, _)| id), Some("c"));
        free.remove("echo", "b", place(0.9, 3, 5));
        assert_eq!(free.choose("echo", Strategy::Score, None), Some("c"));
        assert_eq!(free.choose("other", Strategy::Score, None), None);
    }
}

//! Requirement sets: a task asking for several capabilities, or a least proficiency, is
//! queued under its set's key, and each agent that meets the set serves that key. A set
//! lives while an open task needs it (counted), so what an agent serves stays bounded by the
//! open work, not by every set ever asked for.

use super::{Engine, Entry, Requirement};
use crate::agent::Skills;

impl Engine {
    /// The keys an agent serves: its capabilities and every known requirement set it meets.
    pub(super) fn keys_of(&self, capabilities: &[String], skills: &Skills) -> Vec<String> {
        let mut keys = capabilities.to_vec();
        keys.extend(
            self.requirements
                .iter()
                .filter(|(_, n)| n.requirement.met_by(capabilities, skills))
                .map(|(k, _)| k.clone()),
        );
        keys
    }

    /// One more open task needs a requirement set. A new set becomes known: the agents that
    /// meet it serve its key from now on.
    pub(super) fn require(&mut self, r: &Requirement) {
        let key = r.key();
        if let Some(needed) = self.requirements.get_mut(&key) {
            needed.tasks += 1;
            return;
        }
        let needed = Needed {
            requirement: r.clone(),
            tasks: 1,
        };
        self.requirements.insert(key.clone(), needed);
        let meet: Vec<String> = self
            .agents
            .iter()
            .filter(|(_, s)| r.met_by(&s.capabilities, &s.skills))
            .map(|(id, _)| id.clone())
            .collect();
        for agent in meet {
            if let Some(slot) = self.agents.get_mut(&agent) {
                slot.keys.push(key.clone());
            }
            self.refile(&agent);
        }
    }
}

/// A requirement set and how many open tasks need it.
pub(super) struct Needed {
    pub(super) requirement: Requirement,
    pub(super) tasks: usize,
}

impl Engine {
    /// An open task that needed the set `key` ended. The last one takes the set away: no
    /// agent serves its key any more, so what an agent serves (and every refile and queue
    /// lookup) stays bounded by the sets open tasks need, not by every set ever asked for.
    pub(super) fn unrequire(&mut self, key: &str) {
        let Some(needed) = self.requirements.get_mut(key) else {
            return;
        };
        needed.tasks = needed.tasks.saturating_sub(1);
        if needed.tasks > 0 {
            return;
        }
        self.requirements.remove(key);
        self.rr_last.remove(key);
        let serving: Vec<String> = self
            .agents
            .iter()
            .filter(|(_, s)| s.keys.iter().any(|k| k == key))
            .map(|(id, _)| id.clone())
            .collect();
        for agent in serving {
            if let Some(slot) = self.agents.get_mut(&agent) {
                slot.keys.retain(|k| k != key);
            }
            self.refile(&agent);
        }
    }

    /// Takes an open task out of the engine's table, letting go of the set it needed.
    pub(super) fn forget(&mut self, task: &str) -> Option<Entry> {
        let entry = self.tasks.remove(task)?;
        if let Some(r) = &entry.limits.requires {
            self.unrequire(&r.key());
        }
        Some(entry)
    }

    /// How many requirement sets are known (for tests of the bound).
    #[cfg(test)]
    pub(super) fn requirement_sets(&self) -> usize {
        self.requirements.len()
    }

    /// How many keys an agent serves (for tests of the bound).
    #[cfg(test)]
    pub(super) fn keys_served(&self, agent: &str) -> usize {
        self.agents.get(agent).map_or(0, |s| s.keys.len())
    }
}

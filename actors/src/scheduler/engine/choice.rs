//! How agents are ranked for the strategies, and why an agent got a task.
//!
//! SCORE ranks an agent for a key by `0.5·proficiency + 0.3·recent success rate + 0.2·(1 −
//! load)`: proficiency in the key's capability (the least of them for a requirement set), the
//! share of its last 20 attempts that succeeded (1 with none yet), and the share of its slots
//! in use. LEAST_CONNECTIONS ranks by tasks running, WEIGHTED by tasks started per unit of
//! weight, ROUND_ROBIN by id after the last one picked.

use serde_json::{json, Value};

use super::index::{score_key, score_of, Place, Want};
use super::Engine;
use crate::agent::Skills;

impl Engine {
    /// The agent's recent success rate (1 with no attempts yet).
    fn success_rate(&self, agent: &str) -> f64 {
        match self.outcomes.get(agent) {
            Some(last) if !last.is_empty() => last.iter().filter(|ok| **ok).count() as f64 / last.len() as f64,
            _ => 1.0,
        }
    }

    fn proficiency(&self, skills: &Skills, key: &str) -> f64 {
        match self.requirements.get(key).map(|n| &n.requirement) {
            Some(r) => r.capabilities.iter().map(|c| skills.of(c)).fold(1.0, f64::min),
            None => skills.of(key),
        }
    }

    /// The agent's SCORE for a key now.
    pub(super) fn score(&self, agent: &str, key: &str) -> f64 {
        let Some(slot) = self.agents.get(agent) else { return 0.0 };
        let load = slot.running.len() as f64 / f64::from(slot.max.max(1));
        0.5 * self.proficiency(&slot.skills, key) + 0.3 * self.success_rate(agent) + 0.2 * (1.0 - load)
    }

    pub(super) fn place(&self, agent: &str, key: &str) -> Place {
        let Some(slot) = self.agents.get(agent) else {
            return Place {
                score: u64::MAX,
                running: u32::MAX,
                weighted: u64::MAX,
            };
        };
        Place {
            score: score_key(self.score(agent, key)),
            running: slot.running.len() as u32,
            weighted: (slot.served as f64 * 1000.0 / slot.skills.weight.max(1e-3)) as u64,
        }
    }

    /// What a task's TASK_STARTED records of the choice: the strategy, the agent's score for
    /// the task and the best-scored other agent that could have taken it.
    pub(super) fn why(&self, agent: &str, task: &str) -> Value {
        let Some(entry) = self.tasks.get(task) else {
            return json!({});
        };
        let Want::Capability(key) = &entry.limits.want else {
            return json!({ "strategy": "AGENT" });
        };
        let runner_up = self
            .free
            .runner_up(key, agent)
            .map(|(id, s)| json!({ "agentId": id, "score": round(score_of(s)) }));
        json!({
            "strategy": entry.limits.strategy.as_str(),
            "score": round(self.score(agent, key)),
            "runnerUp": runner_up,
        })
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

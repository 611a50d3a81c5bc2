//! Why a queued task waits, as the engine sees it now: its dependencies, its retry backoff
//! or `notBefore`, or what keeps the agents that could run it from taking it (none has the
//! capability, the target agent is not running, breakers open, paused, every slot busy).
//! Asked on demand, so the answer is always current and costs nothing while nobody asks.

use super::index::Want;
use super::{Engine, Now, Slot};
use crate::agent::BreakerState;
use crate::task::TaskState;

/// Why one agent that could run a task does not take it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Blocked {
    BreakerOpen,
    Closed,
    Busy,
}

impl Engine {
    /// Why the task waits; `None` if it is not queued here (running, ended or unknown).
    pub fn waiting_for(&self, task: &str, now: Now) -> Option<String> {
        let entry = self.tasks.get(task)?;
        if entry.status.state != TaskState::Queued {
            return None;
        }
        if entry.waiting_on > 0 {
            let open: Vec<&str> = entry
                .limits
                .depends_on
                .iter()
                .filter(|d| self.tasks.contains_key(d.as_str()))
                .map(String::as_str)
                .collect();
            return Some(format!("dependencies not done: {}", open.join(", ")));
        }
        if entry.queued.is_none() {
            return Some(match entry.limits.not_before.filter(|at| *at > now.wall) {
                Some(at) => format!("not before {}", at.to_rfc3339()),
                None => "a retry backoff after a failed attempt".to_owned(),
            });
        }
        if self.draining {
            return Some("the node is shutting down".to_owned());
        }
        Some(match &entry.limits.want {
            Want::Agent(agent) => match self.agents.get(agent) {
                None => format!("{} is not running", self.agent_phrase(agent)),
                Some(slot) => match self.blocked(agent, slot) {
                    Some(Blocked::BreakerOpen) => format!("{} has its circuit breaker open", self.agent_phrase(agent)),
                    Some(Blocked::Closed) => {
                        format!(
                            "{} takes no tasks now (paused, unhealthy or stopping)",
                            self.agent_phrase(agent)
                        )
                    }
                    Some(Blocked::Busy) | None => format!("{} is busy (every slot in use)", self.agent_phrase(agent)),
                },
            },
            Want::Capability(key) => {
                let what = match self.requirements.get(key).map(|n| &n.requirement) {
                    Some(r) if r.min_proficiency > 0.0 => format!(
                        "capabilities {} with proficiency at least {}",
                        r.capabilities.join(", "),
                        r.min_proficiency
                    ),
                    Some(r) => format!("capabilities {}", r.capabilities.join(", ")),
                    None => format!("capability {key}"),
                };
                let mut blocked: Vec<Blocked> = self
                    .agents
                    .iter()
                    .filter(|(_, s)| s.keys.iter().any(|k| k == key))
                    .map(|(id, s)| self.blocked(id, s).unwrap_or(Blocked::Busy))
                    .collect();
                blocked.sort();
                match (blocked.first(), blocked.last()) {
                    (None, _) => format!("no agent has {what}"),
                    (Some(first), Some(last)) if first == last => match first {
                        Blocked::BreakerOpen => format!("every agent with {what} has its circuit breaker open"),
                        Blocked::Closed => {
                            format!("every agent with {what} takes no tasks now (paused, unhealthy or stopping)")
                        }
                        Blocked::Busy => format!("every agent with {what} is busy"),
                    },
                    _ => {
                        let count = |b| blocked.iter().filter(|x| **x == b).count();
                        format!(
                            "no agent with {what} can take it now: {} busy, {} with the circuit breaker open, {} taking no tasks",
                            count(Blocked::Busy),
                            count(Blocked::BreakerOpen),
                            count(Blocked::Closed)
                        )
                    }
                }
            }
        })
    }

    /// What keeps an agent from taking a task now, if anything.
    fn blocked(&self, id: &str, slot: &Slot) -> Option<Blocked> {
        let breaker = self.breakers.get(id).map(|b| b.state);
        if breaker == Some(BreakerState::Open) {
            Some(Blocked::BreakerOpen)
        } else if !slot.open {
            Some(Blocked::Closed)
        } else if slot.running.len() as u32 >= self.capacity(id, slot.max) {
            Some(Blocked::Busy)
        } else {
            None
        }
    }
}

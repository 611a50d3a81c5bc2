//! What the engine is told of tasks and agents: each task's limits and requirements, and the
//! node's retry and breaker policies.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::time::Instant;

use super::index::Want;
use crate::agent::{BreakerState, Skills};
use crate::task::{Priority, RetrySpec, Strategy, TaskSpec};

/// Delay before retry n (n failed attempts so far): `base * 2^(n-1)`, at most `max`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

impl RetryPolicy {
    /// A task's own policy, with its jitter: the delay less a share of up to `jitter` of it,
    /// the share drawn from the task's id and attempt (so the engine stays deterministic).
    pub fn of_task(spec: &RetrySpec, task: &str, failures: u32) -> Duration {
        let policy = RetryPolicy {
            base: Duration::from_millis(spec.base_ms),
            max: Duration::from_millis(spec.max_ms),
        };
        let delay = policy.delay(failures);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&(task, failures), &mut h);
        let share = (std::hash::Hasher::finish(&h) % 10_000) as f64 / 10_000.0;
        delay.mul_f64(1.0 - spec.jitter.clamp(0.0, 1.0) * share)
    }
}

/// When an agent's circuit breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy)]
pub struct BreakerPolicy {
    /// Consecutive failed attempts that open it.
    pub failures: u32,
    pub cooldown: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failures: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

/// An agent's breaker, kept across its incarnations.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Breaker {
    pub(super) state: BreakerState,
    pub(super) consecutive: u32,
    pub(super) until: Option<Instant>,
    pub(super) opened_at: Option<DateTime<Utc>>,
}

/// What the engine needs of a task's spec.
#[derive(Debug, Clone)]
pub struct Limits {
    pub id: String,
    pub want: Want,
    pub priority: Priority,
    pub max_attempts: u32,
    /// Tasks that must succeed first.
    pub depends_on: Vec<String>,
    pub deadline: Option<DateTime<Utc>>,
    pub not_before: Option<DateTime<Utc>>,
    pub retry: Option<RetrySpec>,
    pub strategy: Strategy,
    /// Set when `want` is a requirement set's key.
    pub requires: Option<Requirement>,
}

impl Limits {
    /// A task for `want` with no dependencies, deadline or own retry policy.
    pub fn plain(id: &str, want: Want, priority: Priority, max_attempts: u32) -> Self {
        Self {
            id: id.to_owned(),
            want,
            priority,
            max_attempts,
            depends_on: Vec::new(),
            deadline: None,
            not_before: None,
            retry: None,
            strategy: Strategy::Score,
            requires: None,
        }
    }
}

/// A dependency that had already ended when its dependent was queued: its result if it
/// succeeded, `None` if it did not (or is unknown).
pub type Settled = (String, Option<Value>);

impl From<&TaskSpec> for Limits {
    fn from(spec: &TaskSpec) -> Self {
        let mut caps: Vec<String> = spec.capabilities.clone();
        caps.extend(spec.capability.clone());
        caps.sort();
        caps.dedup();
        let min = spec.min_proficiency.unwrap_or(0.0);
        let (want, requires) = match &spec.target_agent {
            Some(a) => (Want::Agent(a.clone()), None),
            None if caps.len() == 1 && min <= 0.0 => (Want::Capability(caps.remove(0)), None),
            None => {
                let r = Requirement {
                    capabilities: caps,
                    min_proficiency: min,
                };
                (Want::Capability(r.key()), Some(r))
            }
        };
        Self {
            id: spec.id.clone(),
            want,
            priority: spec.priority,
            max_attempts: spec.max_attempts,
            depends_on: spec.depends_on.clone(),
            deadline: spec.deadline,
            not_before: spec.not_before,
            retry: spec.retry,
            strategy: spec.strategy,
            requires,
        }
    }
}

/// What a task asking for several capabilities, or a least proficiency, needs of an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Requirement {
    pub capabilities: Vec<String>,
    pub min_proficiency: f64,
}

impl Requirement {
    /// The queue key of tasks with this requirement.
    pub fn key(&self) -> String {
        format!("{}>={}", self.capabilities.join("+"), self.min_proficiency)
    }

    /// Whether an agent with these capabilities and skills meets it.
    pub fn met_by(&self, capabilities: &[String], skills: &Skills) -> bool {
        self.capabilities
            .iter()
            .all(|c| capabilities.contains(c) && skills.of(c) >= self.min_proficiency)
    }
}

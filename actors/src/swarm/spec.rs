//! What a swarm is meant to be (its spec, as the user gave it) and what was observed of it
//! (its status). A coordinator restart never rewrites the spec.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::agent::SpawnAgentRequest;
use crate::error::ApiError;

/// How the coordinator hands out a swarm's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Topology {
    /// The coordinator decomposes each swarm task and gives each subtask to a member it
    /// picks (push).
    Hierarchical,
    /// Subtasks go to the swarm's shared queue; free members take them (pull). Work flows
    /// without the coordinator.
    Mesh,
    /// Hierarchical for work with dependencies, mesh for independent work under load.
    Adaptive,
}

impl Topology {
    pub fn as_str(self) -> &'static str {
        match self {
            Topology::Hierarchical => "HIERARCHICAL",
            Topology::Mesh => "MESH",
            Topology::Adaptive => "ADAPTIVE",
        }
    }
}

/// How the swarm restarts its members when one fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberStrategy {
    OneForOne,
    OneForAll,
}

/// The swarm's health, from its members' states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SwarmHealth {
    /// Just created or restored; no member seen yet.
    Starting,
    /// Every member runs, and at least `min_agents` of them.
    Healthy,
    /// Some members run, not all (or fewer than `min_agents`).
    Degraded,
    /// It has members and none of them runs.
    Failed,
}

impl SwarmHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            SwarmHealth::Starting => "STARTING",
            SwarmHealth::Healthy => "HEALTHY",
            SwarmHealth::Degraded => "DEGRADED",
            SwarmHealth::Failed => "FAILED",
        }
    }
}

/// When the coordinator changes the swarm's size by itself.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Autoscale {
    /// Scale up while more tasks than this wait per member in the swarm's queue.
    pub queue_per_agent: f64,
    /// Scale down while nothing waits and fewer than this share of member slots are busy.
    pub idle_below: f64,
    /// The least time between two changes.
    pub cooldown_ms: u64,
}

impl Default for Autoscale {
    fn default() -> Self {
        Self {
            queue_per_agent: 2.0,
            idle_below: 0.25,
            cooldown_ms: 5_000,
        }
    }
}

/// A swarm's spec: what the user asked for. Durable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwarmSpec {
    pub id: String,
    pub name: String,
    pub node: String,
    pub topology: Topology,
    /// Members are made from these, in turn.
    pub templates: Vec<SpawnAgentRequest>,
    pub min_agents: u32,
    pub max_agents: u32,
    /// How many members it should have now (`scaleSwarm`, autoscale).
    pub size: u32,
    pub strategy: MemberStrategy,
    pub autoscale: Option<Autoscale>,
    /// Bytes its memory may hold (keys and values).
    pub memory_limit_bytes: u64,
    /// For a sub-team: the swarm it belongs to and the member of that swarm leading it.
    pub lead: Option<Lead>,
    pub created_at: DateTime<Utc>,
    /// What its LLM members may spend together, over all their tasks.
    #[serde(default)]
    pub budget: Option<crate::task::Budget>,
}

#[cfg(test)]
impl SwarmSpec {
    /// A hierarchical swarm `id` of one member, for tests.
    pub(crate) fn example(id: &str) -> Self {
        Self {
            id: id.into(),
            name: "s".into(),
            node: "n".into(),
            topology: Topology::Hierarchical,
            templates: Vec::new(),
            min_agents: 0,
            max_agents: 10,
            size: 1,
            strategy: MemberStrategy::OneForOne,
            autoscale: None,
            memory_limit_bytes: 1024,
            lead: None,
            created_at: troupe_runtime::clock::now(),
            budget: None,
        }
    }
}

/// Where a sub-team (a nested swarm) hangs: its subtree runs inside `swarm`'s, and `agent`, a
/// member of `swarm`, leads it (hands it work through its `team_task` lines).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lead {
    pub swarm: String,
    pub agent: String,
}

/// How deep sub-teams may nest (a top-level swarm is depth 1).
pub const MAX_DEPTH: usize = 4;

impl SwarmSpec {
    /// The capability every member has: what the swarm's shared queue asks for.
    pub fn queue_capability(&self) -> String {
        queue_capability(&self.id)
    }
}

pub fn queue_capability(swarm: &str) -> String {
    format!("swarm:{swarm}")
}

/// What was observed of a swarm. Rewritten freely.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwarmStatus {
    pub health: SwarmHealth,
    /// Why it is in this health.
    pub reason: String,
    pub since: DateTime<Utc>,
    /// For an ADAPTIVE swarm, the topology it uses now; else its own.
    pub active: Topology,
    /// When the size last changed (for the autoscale cool-down).
    pub scaled_at: Option<DateTime<Utc>>,
    /// How often its coordinator was started.
    pub coordinator_starts: u32,
}

impl SwarmStatus {
    pub fn new(topology: Topology) -> Self {
        Self {
            health: SwarmHealth::Starting,
            reason: "created".into(),
            since: troupe_runtime::clock::now(),
            active: match topology {
                Topology::Adaptive => Topology::Hierarchical,
                t => t,
            },
            scaled_at: None,
            coordinator_starts: 0,
        }
    }
}

/// A member template and how many members to make of it at creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    pub agent: SpawnAgentRequest,
    pub count: u32,
}

/// `createSwarm`'s request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateSwarmRequest {
    pub name: String,
    pub topology: Topology,
    pub templates: Vec<Template>,
    /// Existing agents of the swarm's node to adopt as members.
    pub members: Vec<String>,
    pub min_agents: Option<u32>,
    pub max_agents: Option<u32>,
    pub strategy: MemberStrategy,
    pub autoscale: Option<Autoscale>,
    pub memory_limit_bytes: Option<u64>,
    /// Makes it a sub-team of `lead.swarm`, led by its member `lead.agent`.
    pub lead: Option<Lead>,
    /// The node to run it on (default: the one asked; a sub-team runs on its parent's).
    pub node: Option<String>,
    /// What its LLM members may spend together.
    pub budget: Option<crate::task::Budget>,
}

/// Bytes a swarm's memory holds by default.
pub const DEFAULT_MEMORY_LIMIT: u64 = 1 << 20;
/// The most members a swarm may have.
pub const MAX_MEMBERS: u32 = 1_000;

impl CreateSwarmRequest {
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.name.trim().is_empty() || self.name.len() > 128 {
            return Err(ApiError::invalid("a swarm's name must be 1-128 characters"));
        }
        let made: u32 = self.templates.iter().map(|t| t.count).sum();
        let initial = made + self.members.len() as u32;
        let (min, max) = self.bounds();
        if min > max || max > MAX_MEMBERS {
            return Err(ApiError::invalid(format!(
                "minAgents ({min}) must not exceed maxAgents ({max}), at most {MAX_MEMBERS}"
            )));
        }
        if initial > max {
            return Err(ApiError::invalid(format!(
                "{initial} members asked for, above maxAgents {max}"
            )));
        }
        if self.templates.is_empty() && (min > initial || self.autoscale.is_some()) {
            return Err(ApiError::invalid(
                "a swarm that must grow (minAgents above its members, or autoscale) needs templates",
            ));
        }
        for t in &self.templates {
            t.agent.validate()?;
        }
        if let Some(a) = &self.autoscale {
            if !(a.queue_per_agent > 0.0 && (0.0..=1.0).contains(&a.idle_below)) {
                return Err(ApiError::invalid(
                    "autoscale: queuePerAgent must be above 0 and idleBelow within 0-1",
                ));
            }
        }
        if let Some(b) = self.budget {
            if b.max_tokens == Some(0) || b.max_cost_usd.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
                return Err(ApiError::invalid("a swarm's budget must be positive"));
            }
        }
        if self.memory_limit_bytes.is_some_and(|m| m == 0 || m > 64 << 20) {
            return Err(ApiError::invalid("memoryLimitBytes must be 1 byte to 64 MiB"));
        }
        Ok(())
    }

    /// minAgents and maxAgents, defaulted from the initial members.
    pub fn bounds(&self) -> (u32, u32) {
        let initial: u32 = self.templates.iter().map(|t| t.count).sum::<u32>() + self.members.len() as u32;
        let min = self.min_agents.unwrap_or(initial.min(1));
        let max = self.max_agents.unwrap_or(initial.max(min).max(1));
        (min, max)
    }
}

/// A swarm as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwarmView {
    pub spec: SwarmSpec,
    pub status: SwarmStatus,
    /// Its members' ids, in the order they joined.
    pub members: Vec<String>,
    /// Its sub-teams' ids, in id order.
    pub teams: Vec<String>,
}

//! What an agent is meant to be: its spec, as the user gave it. A restart never rewrites it;
//! `updateAgent` does, and the change applies at the agent's next start.

mod backends;
mod request;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use backends::{
    AgentBudget, ApprovalPolicy, BackendSpec, BuiltinKind, Dialect, ExecBackend, HttpBackend, LlmBackend, McpBackend,
    ProcessBackend, SecretRef,
};
pub use request::{AgentUpdate, SpawnAgentRequest};

use crate::error::ApiError;

/// The supervisor that runs an agent: it starts and restarts only the agents it owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Owner {
    /// The node's `agents` supervisor.
    Node,
    /// The members supervisor of the swarm with this id.
    Swarm(String),
}

impl Owner {
    /// The owning supervisor's name, as the supervision tree shows it.
    pub fn supervisor(&self) -> &'static str {
        match self {
            Owner::Node => "agents",
            Owner::Swarm(_) => "members",
        }
    }

    /// The swarm it belongs to.
    pub fn swarm(&self) -> Option<&str> {
        match self {
            Owner::Node => None,
            Owner::Swarm(id) => Some(id),
        }
    }
}

/// What the user wants of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Desired {
    Running,
    /// Running but taking no tasks, its processes suspended.
    Paused,
    Stopped,
}

/// Limits on the processes of an exec or process agent: rlimits of each process, and the
/// agent's cgroup v2 limits where the node can set them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Address space of each process (RLIMIT_AS) and memory of the agent's cgroup, MiB.
    pub memory_mib: Option<u64>,
    /// CPU time of each process (RLIMIT_CPU), seconds.
    pub cpu_seconds: Option<u64>,
    /// Open file descriptors of each process (RLIMIT_NOFILE).
    pub open_files: Option<u64>,
    /// CPU of the agent's cgroup, in cores (`cpu.max`).
    pub cpu_cores: Option<f64>,
}

impl Limits {
    fn validate(&self) -> Result<(), ApiError> {
        let ok = |v: Option<u64>, max: u64| v.is_none_or(|v| (1..=max).contains(&v));
        if !ok(self.memory_mib, 1 << 30) || !ok(self.cpu_seconds, 1 << 31) || !ok(self.open_files, 1 << 20) {
            return Err(ApiError::invalid(
                "limits must be positive (memoryMiB, cpuSeconds, openFiles within sane bounds)",
            ));
        }
        if self.cpu_cores.is_some_and(|c| !(0.01..=1024.0).contains(&c)) {
            return Err(ApiError::invalid("limits.cpuCores must be between 0.01 and 1024"));
        }
        if self.memory_mib.is_some_and(|m| m < 16) {
            return Err(ApiError::invalid("limits.memoryMiB must be at least 16"));
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }
}

/// How often an agent may be restarted before the next rung of its recovery ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartLimit {
    pub max_restarts: u32,
    pub window_ms: u64,
}

/// An agent's spec: what the user asked for. Durable; it will be replicated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSpec {
    pub id: String,
    pub name: String,
    /// The node whose supervisor runs it.
    pub node: String,
    pub backend: BackendSpec,
    pub capabilities: Vec<String>,
    pub max_concurrent_tasks: u32,
    pub owner: Owner,
    pub desired: Desired,
    pub created_at: DateTime<Utc>,
    pub project: String,
    pub labels: BTreeMap<String, String>,
    pub limits: Limits,
    /// The node's default when absent.
    pub restart: Option<RestartLimit>,
    /// How good it is at each capability, 0 to 1; a capability not named here is 1.
    #[serde(default)]
    pub proficiency: BTreeMap<String, f64>,
    /// Its share under the WEIGHTED strategy (default 1).
    #[serde(default = "one")]
    pub weight: f64,
    /// Topic patterns it receives published messages of (`health.*`, `builds.#`).
    #[serde(default)]
    pub topics: Vec<String>,
    /// Where the cluster may move it when its node is lost or leaves.
    #[serde(default)]
    pub placement: AgentPlacement,
}

#[cfg(test)]
impl AgentSpec {
    /// A builtin echo agent `id` of `owner`, for tests.
    pub(crate) fn example(id: &str, owner: Owner) -> Self {
        Self {
            id: id.into(),
            name: id.into(),
            node: "n".into(),
            backend: BackendSpec::Builtin(BuiltinKind::Echo),
            capabilities: vec![],
            max_concurrent_tasks: 1,
            owner,
            desired: Desired::Running,
            created_at: troupe_runtime::clock::now(),
            project: "default".into(),
            labels: Default::default(),
            limits: Default::default(),
            restart: None,
            proficiency: Default::default(),
            weight: 1.0,
            topics: Vec::new(),
            placement: Default::default(),
        }
    }
}

/// Where the cluster may move an agent off a lost or leaving node (see
/// `crate::failover`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPlacement {
    /// Never moved: it waits for its node to return.
    #[serde(default)]
    pub pinned: bool,
    /// Moved only to a member whose node labels include every one of these.
    #[serde(default)]
    pub node_labels: BTreeMap<String, String>,
}

fn one() -> f64 {
    1.0
}

impl AgentSpec {
    /// What the scheduler needs to know of its skills.
    pub fn skills(&self) -> Skills {
        Skills {
            proficiency: self.proficiency.clone(),
            weight: self.weight,
        }
    }

    /// Whether its spec passes the filter's name, project and labels (the state and the
    /// capabilities its backend found are the status's: [`AgentFilter::admits`]).
    pub fn matches(&self, filter: &AgentFilter) -> bool {
        filter.name.as_ref().is_none_or(|n| *n == self.name)
            && filter.project.as_ref().is_none_or(|p| *p == self.project)
            && filter.labels.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// An agent's proficiency per capability and its weight, as the scheduler uses them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skills {
    pub proficiency: BTreeMap<String, f64>,
    pub weight: f64,
}

impl Default for Skills {
    fn default() -> Self {
        Self {
            proficiency: BTreeMap::new(),
            weight: 1.0,
        }
    }
}

impl Skills {
    pub fn of(&self, capability: &str) -> f64 {
        self.proficiency.get(capability).copied().unwrap_or(1.0)
    }
}

/// Which agents a listing shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentFilter {
    pub project: Option<String>,
    /// Every pair must be among the agent's labels.
    pub labels: Vec<(String, String)>,
    /// Only agents that have this capability.
    pub capability: Option<String>,
    /// Only agents in this state (read from their status, not their spec).
    pub state: Option<super::status::AgentState>,
    /// Only agents of this name (names need not be unique).
    #[serde(default)]
    pub name: Option<String>,
}

impl AgentFilter {
    /// Whether the agent passes the filter's state and capability: the capability its
    /// spec's or one its backend found (an MCP server's tool).
    pub fn admits(&self, spec: &AgentSpec, status: &super::status::AgentStatus) -> bool {
        self.state.is_none_or(|s| status.state == s)
            && self
                .capability
                .as_ref()
                .is_none_or(|c| spec.capabilities.contains(c) || status.discovered.contains(c))
    }
}

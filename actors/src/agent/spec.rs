//! What an agent is meant to be: its spec, as the user gave it. A restart never rewrites it;
//! `updateAgent` does, and the change applies at the agent's next start.

mod backends;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use backends::{BackendSpec, BuiltinKind, ExecBackend, HttpBackend, LlmBackend, ProcessBackend, SecretRef};

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

    pub fn matches(&self, filter: &AgentFilter) -> bool {
        filter.project.as_ref().is_none_or(|p| *p == self.project)
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
}

/// A request to create (and perhaps start) an agent, as it crosses the API and the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpawnAgentRequest {
    pub name: String,
    pub backend: BackendSpec,
    pub capabilities: Vec<String>,
    pub max_concurrent_tasks: Option<i64>,
    pub node: Option<String>,
    pub project: Option<String>,
    pub labels: Vec<(String, String)>,
    pub limits: Limits,
    pub restart: Option<RestartLimit>,
    /// `spawnAgent` starts it; `createAgent` only defines it.
    pub start: bool,
    /// Proficiency (0 to 1) per capability; unnamed capabilities are 1.
    #[serde(default)]
    pub proficiency: Vec<(String, f64)>,
    #[serde(default)]
    pub weight: Option<f64>,
    /// Topic patterns it subscribes to.
    #[serde(default)]
    pub topics: Vec<String>,
}

impl SpawnAgentRequest {
    /// A started agent with defaults for everything but its name and backend.
    pub fn new(name: impl Into<String>, backend: BackendSpec) -> Self {
        Self {
            name: name.into(),
            backend,
            capabilities: Vec::new(),
            max_concurrent_tasks: None,
            node: None,
            project: None,
            labels: Vec::new(),
            limits: Limits::default(),
            restart: None,
            start: true,
            proficiency: Vec::new(),
            weight: None,
            topics: Vec::new(),
        }
    }

    pub fn validate(&self) -> Result<(), ApiError> {
        if self.name.trim().is_empty() || self.name.len() > 128 {
            return Err(ApiError::invalid("name must be 1-128 characters"));
        }
        if let Some(m) = self.max_concurrent_tasks {
            if !(1..=10_000).contains(&m) {
                return Err(ApiError::invalid("maxConcurrentTasks must be between 1 and 10000"));
            }
        }
        capabilities(&self.capabilities)?;
        for (c, p) in &self.proficiency {
            if !(0.0..=1.0).contains(p) {
                return Err(ApiError::invalid(format!("proficiency of {c} must be between 0 and 1")));
            }
            if !self.capabilities.contains(c) {
                return Err(ApiError::invalid(format!(
                    "proficiency names {c}, which is not among the capabilities"
                )));
            }
        }
        for t in &self.topics {
            crate::messaging::topics::check_topic(t, true)?;
        }
        if self.topics.len() > 64 {
            return Err(ApiError::invalid("at most 64 topic patterns"));
        }
        if self.weight.is_some_and(|w| !(w > 0.0 && w <= 1000.0)) {
            return Err(ApiError::invalid("weight must be above 0 and at most 1000"));
        }
        if let Some(p) = &self.project {
            if p.trim().is_empty() || p.len() > 128 {
                return Err(ApiError::invalid("project must be 1-128 characters"));
            }
        }
        labels(&self.labels)?;
        self.limits.validate()?;
        if !self.limits.is_empty() && !self.backend.runs_processes() {
            return Err(ApiError::invalid("limits apply to exec and process agents only"));
        }
        restart(self.restart)?;
        self.backend.validate()
    }
}

/// What `updateAgent` changes; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentUpdate {
    pub capabilities: Option<Vec<String>>,
    pub max_concurrent_tasks: Option<i64>,
    pub labels: Option<Vec<(String, String)>>,
    pub limits: Option<Limits>,
    /// Replaces the env of an exec or process backend.
    pub env: Option<Vec<(String, String)>>,
    pub restart: Option<RestartLimit>,
}

impl AgentUpdate {
    /// The spec with this update applied, or why it cannot be.
    pub fn apply(&self, spec: &AgentSpec) -> Result<AgentSpec, ApiError> {
        let mut next = spec.clone();
        if let Some(c) = &self.capabilities {
            capabilities(c)?;
            next.capabilities = c.clone();
        }
        if let Some(m) = self.max_concurrent_tasks {
            if !(1..=10_000).contains(&m) {
                return Err(ApiError::invalid("maxConcurrentTasks must be between 1 and 10000"));
            }
            next.max_concurrent_tasks = m as u32;
        }
        if let Some(l) = &self.labels {
            labels(l)?;
            next.labels = l.iter().cloned().collect();
        }
        if let Some(limits) = self.limits {
            limits.validate()?;
            if !limits.is_empty() && !spec.backend.runs_processes() {
                return Err(ApiError::invalid("limits apply to exec and process agents only"));
            }
            next.limits = limits;
        }
        if let Some(env) = &self.env {
            backends::env(env)?;
            match &mut next.backend {
                BackendSpec::Exec(e) => e.env = env.clone(),
                BackendSpec::Process(p) => p.env = env.clone(),
                _ => return Err(ApiError::invalid("env applies to exec and process agents only")),
            }
        }
        if self.restart.is_some() {
            restart(self.restart)?;
            next.restart = self.restart;
        }
        Ok(next)
    }
}

fn capabilities(c: &[String]) -> Result<(), ApiError> {
    if c.iter().any(|c| c.trim().is_empty()) {
        return Err(ApiError::invalid("capabilities must not be empty strings"));
    }
    Ok(())
}

fn labels(labels: &[(String, String)]) -> Result<(), ApiError> {
    if labels.len() > 64 {
        return Err(ApiError::invalid("at most 64 labels"));
    }
    for (k, v) in labels {
        if k.trim().is_empty() || k.len() > 128 || v.len() > 256 {
            return Err(ApiError::invalid(
                "label keys must be 1-128 characters and values at most 256",
            ));
        }
    }
    Ok(())
}

fn restart(limit: Option<RestartLimit>) -> Result<(), ApiError> {
    if let Some(r) = limit {
        if r.window_ms == 0 || r.max_restarts > 1000 {
            return Err(ApiError::invalid(
                "restart: windowMs must be positive and maxRestarts at most 1000",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(backend: BackendSpec) -> SpawnAgentRequest {
        SpawnAgentRequest::new("a", backend)
    }

    #[test]
    fn invalid_specs_are_refused_with_a_reason() {
        let empty = req(BackendSpec::Exec(ExecBackend {
            command: vec![],
            timeout_ms: None,
            env: vec![],
        }));
        assert!(matches!(empty.validate(), Err(ApiError::InvalidInput(m)) if m.contains("command")));
        let nul = req(BackendSpec::Exec(ExecBackend {
            command: vec!["sh".into()],
            timeout_ms: None,
            env: vec![("A".into(), "b\0".into())],
        }));
        assert!(nul.validate().is_err());
        let mut zero = req(BackendSpec::Builtin(BuiltinKind::Echo));
        zero.max_concurrent_tasks = Some(0);
        assert!(zero.validate().is_err());
        assert!(BuiltinKind::parse("nope").is_err());
        assert!(req(BackendSpec::Builtin(BuiltinKind::Echo)).validate().is_ok());
        let mut limited = req(BackendSpec::Builtin(BuiltinKind::Echo));
        limited.limits.open_files = Some(10);
        assert!(matches!(limited.validate(), Err(ApiError::InvalidInput(m)) if m.contains("exec and process")));
        let no_host = req(BackendSpec::Http(HttpBackend {
            url: "http:///x".into(),
            headers: vec![],
            timeout_ms: None,
        }));
        assert!(no_host.validate().is_err());
        let bad_header = req(BackendSpec::Http(HttpBackend {
            url: "http://127.0.0.1:1/x".into(),
            headers: vec![("X-A".into(), "b\r\nInjected: 1".into())],
            timeout_ms: None,
        }));
        assert!(bad_header.validate().is_err());
    }

    #[test]
    fn an_update_changes_only_what_it_names_and_is_checked() {
        let mut spawn = req(BackendSpec::Builtin(BuiltinKind::Echo));
        spawn.capabilities = vec!["a".into()];
        let spec = AgentSpec {
            id: "x@n".into(),
            name: spawn.name,
            node: "n".into(),
            backend: spawn.backend,
            capabilities: spawn.capabilities,
            max_concurrent_tasks: 1,
            owner: Owner::Node,
            desired: Desired::Running,
            created_at: Utc::now(),
            project: "default".into(),
            labels: BTreeMap::new(),
            limits: Limits::default(),
            restart: None,
            proficiency: Default::default(),
            weight: 1.0,
            topics: Vec::new(),
        };
        let update = AgentUpdate {
            labels: Some(vec![("team".into(), "blue".into())]),
            ..AgentUpdate::default()
        };
        let next = update.apply(&spec).unwrap();
        assert_eq!(next.labels.get("team").map(String::as_str), Some("blue"));
        assert_eq!(next.capabilities, spec.capabilities);
        let env = AgentUpdate {
            env: Some(vec![("A".into(), "1".into())]),
            ..AgentUpdate::default()
        };
        assert!(env.apply(&spec).is_err(), "a builtin has no environment");
    }
}

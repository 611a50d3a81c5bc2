//! What a user asks of an agent's spec: a new agent (`spawnAgent`, `createAgent`) or an
//! update of one (`updateAgent`), and their checks.

use serde::{Deserialize, Serialize};

use super::{AgentSpec, BackendSpec, Limits, RestartLimit};
use crate::error::ApiError;

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
    /// Where the cluster may move it when its node is lost.
    #[serde(default)]
    pub placement: super::AgentPlacement,
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
            placement: Default::default(),
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
            super::backends::env(env)?;
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
    use crate::agent::spec::*;

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
            placement: Default::default(),
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

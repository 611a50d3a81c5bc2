//! What an agent is meant to be: its spec, as the user gave it. A restart never rewrites it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuiltinKind {
    /// Result = payload.
    Echo,
    /// Sleeps `{"ms": N}`.
    Sleep,
    /// Fails with the payload's `message`.
    Fail,
    /// Panics inside the agent actor (fault tests).
    Panic,
}

impl BuiltinKind {
    pub fn parse(kind: &str) -> Result<Self, ApiError> {
        match kind {
            "echo" => Ok(Self::Echo),
            "sleep" => Ok(Self::Sleep),
            "fail" => Ok(Self::Fail),
            "panic" => Ok(Self::Panic),
            other => Err(ApiError::invalid(format!(
                "unknown builtin kind {other:?}: expected echo, sleep, fail or panic"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::Sleep => "sleep",
            Self::Fail => "fail",
            Self::Panic => "panic",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecBackend {
    pub command: Vec<String>,
    pub timeout_ms: Option<u64>,
    pub env: Vec<(String, String)>,
}

/// Which backend object the agent runs its tasks with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackendSpec {
    Exec(ExecBackend),
    Builtin(BuiltinKind),
}

impl BackendSpec {
    pub fn describe(&self) -> String {
        match self {
            BackendSpec::Exec(e) => format!("exec:{}", e.command.first().map(String::as_str).unwrap_or("")),
            BackendSpec::Builtin(k) => format!("builtin:{}", k.as_str()),
        }
    }
}

/// The supervisor that runs an agent: it starts and restarts only the agents it owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Owner {
    /// The node's `agents` supervisor.
    Node,
}

impl Owner {
    /// The owning supervisor's name, as the supervision tree shows it.
    pub fn supervisor(&self) -> &'static str {
        match self {
            Owner::Node => "agents",
        }
    }
}

/// Whether the user wants the agent running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Desired {
    Running,
    Stopped,
}

/// A request to spawn an agent, as it crosses the API and the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpawnAgentRequest {
    pub name: String,
    pub backend: BackendSpec,
    pub capabilities: Vec<String>,
    pub max_concurrent_tasks: Option<i64>,
    pub node: Option<String>,
}

impl SpawnAgentRequest {
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.name.trim().is_empty() || self.name.len() > 128 {
            return Err(ApiError::invalid("name must be 1-128 characters"));
        }
        if let Some(m) = self.max_concurrent_tasks {
            if !(1..=10_000).contains(&m) {
                return Err(ApiError::invalid("maxConcurrentTasks must be between 1 and 10000"));
            }
        }
        if self.capabilities.iter().any(|c| c.trim().is_empty()) {
            return Err(ApiError::invalid("capabilities must not be empty strings"));
        }
        if let BackendSpec::Exec(e) = &self.backend {
            if e.command.is_empty() || e.command[0].trim().is_empty() {
                return Err(ApiError::invalid("exec command must not be empty"));
            }
            if e.command.iter().any(|a| a.contains('\0')) {
                return Err(ApiError::invalid("exec command must not contain NUL"));
            }
            if e.timeout_ms == Some(0) {
                return Err(ApiError::invalid("timeoutMs must be positive"));
            }
            if e.env
                .iter()
                .any(|(k, v)| k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0'))
            {
                return Err(ApiError::invalid(
                    "env var names must be non-empty and contain no '=' or NUL, values no NUL",
                ));
            }
        }
        Ok(())
    }
}

/// An agent's spec: what the user asked for. Durable; it will be replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(backend: BackendSpec) -> SpawnAgentRequest {
        SpawnAgentRequest {
            name: "a".into(),
            backend,
            capabilities: vec![],
            max_concurrent_tasks: None,
            node: None,
        }
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
    }
}

//! What an agent is: its spec as the user gave it, and its record as the store keeps it.

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backend {
    Exec(ExecBackend),
    Builtin(BuiltinKind),
}

impl Backend {
    pub fn describe(&self) -> String {
        match self {
            Backend::Exec(e) => format!("exec:{}", e.command.first().map(String::as_str).unwrap_or("")),
            Backend::Builtin(k) => format!("builtin:{}", k.as_str()),
        }
    }
}

/// A request to spawn an agent, as it crosses the API and the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpawnAgentRequest {
    pub name: String,
    pub backend: Backend,
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
        if let Backend::Exec(e) = &self.backend {
            if e.command.is_empty() || e.command[0].trim().is_empty() {
                return Err(ApiError::invalid("exec command must not be empty"));
            }
            if e.env
                .iter()
                .any(|(k, _)| k.is_empty() || k.contains('=') || k.contains('\0'))
            {
                return Err(ApiError::invalid(
                    "env var names must be non-empty and contain no '=' or NUL",
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSpec {
    pub id: String,
    pub name: String,
    pub node: String,
    pub backend: Backend,
    pub capabilities: Vec<String>,
    pub max_concurrent_tasks: u32,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentState {
    Starting,
    Running,
    Restarting,
    Failed,
    Stopped,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }
}

/// An agent as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub spec: AgentSpec,
    pub state: AgentState,
    pub restarts: u32,
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// An agent as the API shows it: its record plus the scheduler's live counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentView {
    pub record: AgentRecord,
    pub running_tasks: u32,
    pub tasks_succeeded: u64,
    pub tasks_failed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(backend: Backend) -> SpawnAgentRequest {
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
        let empty = req(Backend::Exec(ExecBackend {
            command: vec![],
            timeout_ms: None,
            env: vec![],
        }));
        assert!(matches!(empty.validate(), Err(ApiError::InvalidInput(m)) if m.contains("command")));
        let mut zero = req(Backend::Builtin(BuiltinKind::Echo));
        zero.max_concurrent_tasks = Some(0);
        assert!(zero.validate().is_err());
        assert!(BuiltinKind::parse("nope").is_err());
        assert!(req(Backend::Builtin(BuiltinKind::Echo)).validate().is_ok());
    }
}

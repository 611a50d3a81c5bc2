//! What was observed of an agent: its status (written by its supervisor as its life
//! changes) and its task counters (written by the scheduler). Node-local, rewritten freely.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::spec::AgentSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AgentState {
    /// Created, never started.
    Defined,
    /// Its actor and backend are starting.
    Starting,
    Running,
    /// Takes no tasks; its processes are suspended (SIGSTOP).
    Paused,
    /// Finishing its running tasks before it stops (a graceful stop).
    Stopping,
    Stopped,
    /// Failed; its supervisor is starting it again (perhaps from its last checkpoint).
    Recovering,
    /// Running, but it missed its heartbeats: it takes no tasks until it is heard again.
    Unhealthy,
    /// Given up on: it failed more often than its recovery ladder allows.
    Failed,
}

impl AgentState {
    pub const ALL: [AgentState; 9] = [
        AgentState::Defined,
        AgentState::Starting,
        AgentState::Running,
        AgentState::Paused,
        AgentState::Stopping,
        AgentState::Stopped,
        AgentState::Recovering,
        AgentState::Unhealthy,
        AgentState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Defined => "defined",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Recovering => "recovering",
            Self::Unhealthy => "unhealthy",
            Self::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub state: AgentState,
    pub restarts: u32,
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// The capabilities its backend found when it started or since (an MCP server's tools,
    /// `mcp:<agent>/<tool>`), beside those of its spec.
    #[serde(default)]
    pub discovered: Vec<String>,
}

impl AgentStatus {
    pub fn new(state: AgentState) -> Self {
        Self {
            state,
            restarts: 0,
            last_error: None,
            updated_at: troupe_runtime::clock::now(),
            discovered: Vec::new(),
        }
    }
}

/// Task counters of one agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentStats {
    pub succeeded: u64,
    pub failed: u64,
    /// Tasks running now (live: what a stored copy says is replaced when read).
    pub running: u32,
    /// Model tokens the agent's results reported (`usage.promptTokens` / `completionTokens`).
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Over the agent's recent attempts (live, like `running`).
    pub recent: Recent,
    /// The agent's circuit breaker (live, like `running`).
    #[serde(default)]
    pub breaker: BreakerView,
}

/// An agent's circuit breaker: CLOSED takes tasks; OPEN (after `breaker_failures`
/// consecutive failed attempts) takes none until `breaker_cooldown_ms` has passed; HALF_OPEN
/// takes one trial task, whose success closes it and whose failure opens it again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BreakerState {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "CLOSED",
            Self::Open => "OPEN",
            Self::HalfOpen => "HALF_OPEN",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct BreakerView {
    pub state: BreakerState,
    pub consecutive_failures: u32,
    /// When it last opened.
    pub opened_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Figures over an agent's last attempts, kept by the scheduler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Recent {
    pub attempts: u32,
    pub success_rate: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
}

/// An agent as the API shows it: spec, status and counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    pub spec: AgentSpec,
    pub status: AgentStatus,
    pub stats: AgentStats,
}

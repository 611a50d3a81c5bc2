//! What was observed of an agent: its status (written by its supervisor as its life
//! changes) and its task counters (written by the scheduler). Node-local, rewritten freely.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::spec::AgentSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentState {
    Starting,
    Running,
    /// Failed and about to be started again by its supervisor.
    Restarting,
    Stopped,
    /// Given up on: it failed more often than its restart intensity allows.
    Failed,
}

impl AgentState {
    pub const ALL: [AgentState; 5] = [
        AgentState::Starting,
        AgentState::Running,
        AgentState::Restarting,
        AgentState::Stopped,
        AgentState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Stopped => "stopped",
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
}

impl AgentStatus {
    pub fn new(state: AgentState) -> Self {
        Self {
            state,
            restarts: 0,
            last_error: None,
            updated_at: troupe_runtime::clock::now(),
        }
    }
}

/// Task counters of one agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStats {
    pub succeeded: u64,
    pub failed: u64,
    /// Tasks running now (live, not stored).
    #[serde(skip)]
    pub running: u32,
}

/// An agent as the API shows it: spec, status and counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentView {
    pub spec: AgentSpec,
    pub status: AgentStatus,
    pub stats: AgentStats,
}

/// Keeps `troupe_agents{state}` as agents change state, so a scrape counts nothing.
pub(crate) fn gauge_moved(from: Option<AgentState>, to: Option<AgentState>) {
    if from == to {
        return;
    }
    if let Some(from) = from {
        metrics::gauge!("troupe_agents", "state" => from.as_str()).decrement(1.0);
    }
    if let Some(to) = to {
        metrics::gauge!("troupe_agents", "state" => to.as_str()).increment(1.0);
    }
}

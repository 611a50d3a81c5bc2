//! The errands a process agent asks the node for (`send`, `publish`, `memory`, `team_task`),
//! in the protocol's own wire shapes: the messaging and swarm rooms turn them into theirs.

use serde::Deserialize;
use serde_json::Value;

use crate::task::Priority;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Send {
    pub id: String,
    pub to: String,
    #[serde(default)]
    pub payload: Value,
    #[serde(default)]
    pub priority: LinePriority,
    /// Default 30 s, at most 10 minutes.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl Send {
    pub fn timeout_ms(&self) -> u64 {
        within(self.timeout_ms, 30_000, 600_000)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Publish {
    pub id: String,
    pub topic: String,
    #[serde(default)]
    pub payload: Value,
    #[serde(default)]
    pub priority: LinePriority,
}

/// A message's priority as a line names it; a name Troupe does not know is NORMAL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LinePriority {
    Critical,
    High,
    Low,
    #[default]
    #[serde(other)]
    Normal,
}

impl From<LinePriority> for Priority {
    fn from(p: LinePriority) -> Self {
        match p {
            LinePriority::Critical => Priority::Critical,
            LinePriority::High => Priority::High,
            LinePriority::Normal => Priority::Normal,
            LinePriority::Low => Priority::Low,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Memory {
    pub id: String,
    #[serde(flatten)]
    pub op: MemoryOp,
}

/// A `memory` line's operation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", rename_all_fields = "camelCase")]
pub enum MemoryOp {
    Get {
        key: String,
    },
    List {
        #[serde(default)]
        prefix: String,
    },
    Set {
        key: String,
        #[serde(default)]
        value: Value,
        /// A whole number of milliseconds.
        #[serde(default)]
        ttl_ms: Option<u64>,
        #[serde(default)]
        expect_version: Option<u64>,
    },
    Delete {
        key: String,
        #[serde(default)]
        expect_version: Option<u64>,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamTask {
    pub id: String,
    #[serde(flatten)]
    pub mode: TeamMode,
    /// Default 5 minutes, at most an hour.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl TeamTask {
    pub fn timeout_ms(&self) -> u64 {
        within(self.timeout_ms, 300_000, 3_600_000)
    }
}

/// A swarm task as a leader's `team_task` line gives it: `mode` names the mode; the other
/// fields are those of `submitSwarmTask`'s input.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "mode", rename_all = "SCREAMING_SNAKE_CASE", rename_all_fields = "camelCase")]
pub enum TeamMode {
    Single {
        #[serde(default)]
        capabilities: Vec<String>,
        #[serde(default)]
        payload: Value,
    },
    Plan {
        #[serde(default)]
        steps: Vec<PlanStep>,
        #[serde(default)]
        input: Value,
    },
    ScatterGather {
        k: u32,
        #[serde(default)]
        aggregate: Option<Aggregate>,
        #[serde(default)]
        capabilities: Vec<String>,
        #[serde(default)]
        payload: Value,
    },
    Pipeline {
        stages: Vec<Stage>,
        #[serde(default)]
        input: Value,
    },
    MapReduce {
        items: Value,
        #[serde(default)]
        map: Stage,
        #[serde(default)]
        reduce: Stage,
    },
}

/// A step of a `PLAN` team task.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanStep {
    pub key: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub payload: Value,
    #[serde(default)]
    pub depends_on: Vec<String>,
}

/// A stage of a pipeline, or the map or reduce of a map-reduce: which members can do it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Stage {
    #[serde(default)]
    pub capabilities: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Aggregate {
    First,
    All,
    Majority,
}

/// A line's `timeoutMs`: `default` when absent, within 1 ms and `max`.
fn within(ms: Option<u64>, default: u64, max: u64) -> u64 {
    ms.unwrap_or(default).clamp(1, max)
}

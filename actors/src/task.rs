//! Tasks: what is submitted (the spec, written once) and what became of it (the status,
//! rewritten at every transition). The two are stored apart, so a transition never rewrites
//! the payload.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Priority {
    Critical,
    High,
    Normal,
    Low,
}

impl Priority {
    /// Lower ranks run first.
    pub fn rank(self) -> u8 {
        self as u8
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "CRITICAL",
            Priority::High => "HIGH",
            Priority::Normal => "NORMAL",
            Priority::Low => "LOW",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    Queued,
    Running,
    /// A running attempt holds a tool call for an operator's decision (an LLM agent's
    /// approval gate): its agent's slot stays taken, and the wait does not count against
    /// the attempt's time. It is RUNNING again once the call is decided.
    AwaitingApproval,
    Succeeded,
    Failed,
    Cancelled,
    /// Not finished by its deadline (a running attempt was cancelled).
    Expired,
    /// A task it depends on failed, was cancelled or expired: it never ran.
    DependencyFailed,
    /// Every attempt allowed (`maxAttempts`) failed: in the dead-letter queue, with each
    /// attempt's error, until `requeueTask`.
    Dead,
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            TaskState::Queued | TaskState::Running | TaskState::AwaitingApproval
        )
    }

    /// An attempt of it runs on an agent (working, or waiting for an approval).
    pub fn is_running(self) -> bool {
        matches!(self, TaskState::Running | TaskState::AwaitingApproval)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "QUEUED",
            TaskState::Running => "RUNNING",
            TaskState::AwaitingApproval => "AWAITING_APPROVAL",
            TaskState::Succeeded => "SUCCEEDED",
            TaskState::Failed => "FAILED",
            TaskState::Cancelled => "CANCELLED",
            TaskState::Expired => "EXPIRED",
            TaskState::DependencyFailed => "DEPENDENCY_FAILED",
            TaskState::Dead => "DEAD",
        }
    }
}

/// How the scheduler picks among the agents that can take a task now (docs/semantics.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Strategy {
    /// The best `0.5·proficiency + 0.3·recent success rate + 0.2·(1 − load)`.
    #[default]
    Score,
    /// Each capable agent in turn.
    RoundRobin,
    /// The fewest tasks running.
    LeastConnections,
    /// Tasks in proportion to the agents' weights.
    Weighted,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Score => "SCORE",
            Self::RoundRobin => "ROUND_ROBIN",
            Self::LeastConnections => "LEAST_CONNECTIONS",
            Self::Weighted => "WEIGHTED",
        }
    }
}

/// A task submission, as it crosses the API and the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitTaskRequest {
    pub agent_id: Option<String>,
    pub capability: Option<String>,
    #[serde(with = "troupe_runtime::codec::json_text")]
    pub payload: serde_json::Value,
    pub priority: Option<Priority>,
    pub max_attempts: Option<i64>,
    pub timeout_ms: Option<i64>,
    /// Tasks (ids of this node's tasks) that must all succeed before this one runs.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Not finished by then: EXPIRED (a running attempt is cancelled).
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
    /// Not started before then.
    #[serde(default)]
    pub not_before: Option<DateTime<Utc>>,
    /// This task's retry backoff instead of the node's.
    #[serde(default)]
    pub retry: Option<RetrySpec>,
    /// Run on an agent with every one of these capabilities (instead of `capability`).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The least proficiency (0 to 1) the agent must have in each capability asked for.
    #[serde(default)]
    pub min_proficiency: Option<f64>,
    /// How to pick among capable agents; the node's default when absent.
    #[serde(default)]
    pub strategy: Option<Strategy>,
    /// What an LLM agent's loop may spend on this task.
    #[serde(default)]
    pub budget: Option<Budget>,
    /// The conversation an LLM agent keeps across the tasks that name it.
    #[serde(default)]
    pub session: Option<String>,
}

/// What an LLM task may spend: checked before each model call, from the usage its steps
/// committed; past it the task fails with BUDGET_EXCEEDED.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Input and output tokens together.
    pub max_tokens: Option<u64>,
    /// At the node's price table (`llm_prices`).
    pub max_cost_usd: Option<f64>,
}

/// Errors after which no retry could do better: the task ends FAILED at once, whatever
/// attempts it has left. Each is its code, a colon, then the figures. `MODEL_REFUSED`: the
/// model's API answered the call with a 4xx that asking again does not change (a bad key,
/// an unknown model, a request it cannot take); 408, 409 and 429 are retried instead.
pub const FINAL_ERRORS: [&str; 3] = ["MAX_STEPS", "BUDGET_EXCEEDED", "MODEL_REFUSED"];

/// Whether `error` is one of [`FINAL_ERRORS`].
pub fn is_final(error: &str) -> bool {
    FINAL_ERRORS
        .iter()
        .any(|code| error.strip_prefix(code).is_some_and(|rest| rest.starts_with(':')))
}

/// A task's own retry backoff: before retry n, `base_ms * 2^(n-1)` capped at `max_ms`, less a
/// random share of up to `jitter` (0 to 1) of it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetrySpec {
    pub base_ms: u64,
    pub max_ms: u64,
    pub jitter: f64,
}

/// One task of a graph submitted with `submitTasks`: its `request.depends_on` names other
/// tasks of the graph by key, or tasks of the node by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphTask {
    pub key: String,
    pub request: SubmitTaskRequest,
}

/// Most tasks one `submitTasks` call may hold.
pub const MAX_GRAPH: usize = 10_000;

/// Most dependencies one task may have.
pub const MAX_DEPENDENCIES: usize = 1000;

impl SubmitTaskRequest {
    /// A request with defaults for everything but its target and payload.
    pub fn to_capability(capability: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            agent_id: None,
            capability: Some(capability.into()),
            payload,
            priority: None,
            max_attempts: None,
            timeout_ms: None,
            depends_on: Vec::new(),
            deadline: None,
            not_before: None,
            retry: None,
            capabilities: Vec::new(),
            min_proficiency: None,
            strategy: None,
            budget: None,
            session: None,
        }
    }

    pub fn validate(&self, max_payload_bytes: usize) -> Result<(), ApiError> {
        let many = !self.capabilities.is_empty();
        if many && (self.agent_id.is_some() || self.capability.is_some()) {
            return Err(ApiError::invalid(
                "give exactly one of agentId, capability and capabilities",
            ));
        }
        if many {
            if self.capabilities.len() > 16 || self.capabilities.iter().any(|c| c.trim().is_empty()) {
                return Err(ApiError::invalid("capabilities: 1 to 16 non-empty names"));
            }
        } else if self.agent_id.is_some() == self.capability.is_some() {
            return Err(ApiError::invalid(
                "give exactly one of agentId, capability and capabilities",
            ));
        }
        if let Some(m) = self.min_proficiency {
            if !(0.0..=1.0).contains(&m) {
                return Err(ApiError::invalid("minProficiency must be between 0 and 1"));
            }
            if self.agent_id.is_some() {
                return Err(ApiError::invalid(
                    "minProficiency applies to capabilities, not to an agentId",
                ));
            }
        }
        if let Some(s) = &self.session {
            if s.trim().is_empty() || s.len() > 200 {
                return Err(ApiError::invalid("session must be 1 to 200 bytes"));
            }
        }
        if let Some(b) = self.budget {
            if b.max_tokens == Some(0) {
                return Err(ApiError::invalid("maxTokens must be positive"));
            }
            if b.max_cost_usd.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
                return Err(ApiError::invalid("maxCostUsd must be a positive number"));
            }
        }
        match (&self.agent_id, &self.capability) {
            (_, Some(c)) if c.trim().is_empty() => return Err(ApiError::invalid("capability must not be empty")),
            (Some(a), _) if a.trim().is_empty() => return Err(ApiError::invalid("agentId must not be empty")),
            _ => {}
        }
        if let Some(m) = self.max_attempts {
            if !(1..=100).contains(&m) {
                return Err(ApiError::invalid("maxAttempts must be between 1 and 100"));
            }
        }
        if let Some(t) = self.timeout_ms {
            if t <= 0 {
                return Err(ApiError::invalid("timeoutMs must be positive"));
            }
        }
        if self.depends_on.len() > MAX_DEPENDENCIES {
            return Err(ApiError::invalid(format!("at most {MAX_DEPENDENCIES} dependencies")));
        }
        if let (Some(d), Some(n)) = (self.deadline, self.not_before) {
            if d <= n {
                return Err(ApiError::invalid("deadline must be after notBefore"));
            }
        }
        if let Some(r) = self.retry {
            if r.base_ms == 0 || r.max_ms < r.base_ms || !(0.0..=1.0).contains(&r.jitter) {
                return Err(ApiError::invalid(
                    "retry: baseMs must be positive, maxMs at least baseMs, jitter within 0..1",
                ));
            }
        }
        let size = self.payload.to_string().len();
        if size > max_payload_bytes {
            return Err(ApiError::invalid(format!(
                "payload is {size} bytes, above the limit of {max_payload_bytes}"
            )));
        }
        Ok(())
    }
}

/// What was submitted; never changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub id: String,
    /// The agent the submitter aimed at, if any.
    pub target_agent: Option<String>,
    pub capability: Option<String>,
    pub priority: Priority,
    /// Failed attempts allowed before the task is FAILED.
    pub max_attempts: u32,
    pub timeout_ms: Option<u64>,
    #[serde(with = "troupe_runtime::codec::json_text")]
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
    #[serde(default)]
    pub not_before: Option<DateTime<Utc>>,
    #[serde(default)]
    pub retry: Option<RetrySpec>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub min_proficiency: Option<f64>,
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default)]
    pub budget: Option<Budget>,
    #[serde(default)]
    pub session: Option<String>,
}

/// What became of a task so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub state: TaskState,
    /// The agent running it, or that ran it last.
    pub agent_id: Option<String>,
    /// How many times it was started.
    pub attempts: u32,
    /// How many of those starts failed (a stop or a shutdown is not a failure).
    pub failures: u32,
    #[serde(with = "troupe_runtime::codec::json_text_opt")]
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Each failed attempt's error, oldest first.
    #[serde(default)]
    pub attempt_errors: Vec<AttemptError>,
    /// The latest progress its running attempt reported (a process agent's `progress`
    /// line); cleared when an attempt starts, kept when the task ends.
    #[serde(default)]
    pub progress: Option<TaskProgress>,
}

/// How far an attempt got, as its agent said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskProgress {
    /// 0 to 1, when the agent gave one.
    pub fraction: Option<f64>,
    pub note: Option<String>,
    pub at: DateTime<Utc>,
}

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptError {
    pub attempt: u32,
    pub agent_id: Option<String>,
    pub error: String,
    pub at: DateTime<Utc>,
}

impl TaskStatus {
    pub fn queued() -> Self {
        Self {
            state: TaskState::Queued,
            agent_id: None,
            attempts: 0,
            failures: 0,
            result: None,
            error: None,
            started_at: None,
            finished_at: None,
            attempt_errors: Vec::new(),
            progress: None,
        }
    }
}

/// A task as the API shows it: spec and status together, and why it waits if it is queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub spec: TaskSpec,
    pub status: TaskStatus,
    /// What the scheduler sees keeping a QUEUED task from running now (never stored: asked
    /// of the scheduler when the task is read).
    #[serde(default)]
    pub waiting_for: Option<String>,
}

impl TaskRecord {
    pub fn new(spec: TaskSpec, status: TaskStatus) -> Self {
        Self {
            spec,
            status,
            waiting_for: None,
        }
    }

    /// The agent to show for this task: the one that ran it, else the one it targets.
    pub fn shown_agent(&self) -> Option<&str> {
        self.status.agent_id.as_deref().or(self.spec.target_agent.as_deref())
    }
}

/// What the scheduler hands an agent.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub task_id: String,
    pub attempt: u32,
    pub payload: serde_json::Value,
    pub timeout_ms: Option<u64>,
}

/// How an attempt ended.
pub type Outcome = Result<serde_json::Value, String>;

#[cfg(test)]
impl TaskSpec {
    /// A task `id` for capability `echo`, every other field at its default, for tests.
    pub(crate) fn example(id: &str) -> Self {
        Self {
            id: id.into(),
            target_agent: None,
            capability: Some("echo".into()),
            priority: Priority::Normal,
            max_attempts: 3,
            timeout_ms: None,
            payload: serde_json::Value::Null,
            created_at: troupe_runtime::clock::now(),
            depends_on: Vec::new(),
            deadline: None,
            not_before: None,
            retry: None,
            capabilities: Vec::new(),
            min_proficiency: None,
            strategy: Strategy::default(),
            budget: None,
            session: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req() -> SubmitTaskRequest {
        SubmitTaskRequest::to_capability("echo", json!({"a": 1}))
    }

    #[test]
    fn submissions_need_exactly_one_target_and_sane_limits() {
        assert!(req().validate(1024).is_ok());
        let mut both = req();
        both.agent_id = Some("x".into());
        assert!(both.validate(1024).is_err());
        let mut neither = req();
        neither.capability = None;
        assert!(neither.validate(1024).is_err());
        let mut neg = req();
        neg.timeout_ms = Some(-1);
        assert!(neg.validate(1024).is_err());
        let mut big = req();
        big.payload = json!("x".repeat(2000));
        assert!(matches!(big.validate(1024), Err(ApiError::InvalidInput(m)) if m.contains("limit")));
    }

    #[test]
    fn specs_and_statuses_round_trip_through_the_store_encoding() {
        let spec = TaskSpec {
            id: "t".into(),
            target_agent: None,
            capability: Some("c".into()),
            priority: Priority::High,
            max_attempts: 3,
            timeout_ms: None,
            payload: json!({"k": [1, "two", null]}),
            created_at: Utc::now(),
            depends_on: vec!["d".into()],
            deadline: Some(Utc::now()),
            not_before: None,
            retry: Some(RetrySpec {
                base_ms: 10,
                max_ms: 100,
                jitter: 0.5,
            }),
            capabilities: Vec::new(),
            min_proficiency: None,
            strategy: Strategy::Weighted,
            budget: Some(Budget {
                max_tokens: Some(10),
                max_cost_usd: Some(0.5),
            }),
            session: Some("s".into()),
        };
        let bytes = troupe_runtime::codec::encode(&spec).unwrap();
        assert_eq!(troupe_runtime::codec::decode::<TaskSpec>(&bytes).unwrap(), spec);
        let mut status = TaskStatus::queued();
        status.result = Some(json!({"ok": true}));
        let bytes = troupe_runtime::codec::encode(&status).unwrap();
        assert_eq!(troupe_runtime::codec::decode::<TaskStatus>(&bytes).unwrap(), status);
    }
}

/// What a node's agents can take of one capability now: what its heartbeats tell the other
/// members, which place capability tasks by it (the contract the scheduler and the cluster
/// share).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    /// Open agents (not paused, unhealthy or stopping) that serve it.
    pub agents: u32,
    /// Their task slots not in use.
    pub free: u32,
    /// The best place among them in each strategy's order, when one has room: what the
    /// cluster compares to choose the node (each node's scheduler then picks the agent).
    #[serde(default)]
    pub best: Option<Place>,
}

/// An agent's place in one key's orders while it has room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    pub score: u64,
    pub running: u32,
    pub weighted: u64,
}

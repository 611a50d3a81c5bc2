//! GraphQL output types and enums, thin views over the actors' records.

use async_graphql::{Enum, Json, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use troupe_actors::agent::{AgentState as State, AgentView};
use troupe_actors::cluster::{Member, MemberStatus};
use troupe_actors::task::{Priority as P, TaskRecord, TaskState as S};
use troupe_runtime::events::Event as RtEvent;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum TaskState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl From<S> for TaskState {
    fn from(s: S) -> Self {
        match s {
            S::Queued => Self::Queued,
            S::Running => Self::Running,
            S::Succeeded => Self::Succeeded,
            S::Failed => Self::Failed,
            S::Cancelled => Self::Cancelled,
        }
    }
}

impl From<TaskState> for S {
    fn from(s: TaskState) -> Self {
        match s {
            TaskState::Queued => S::Queued,
            TaskState::Running => S::Running,
            TaskState::Succeeded => S::Succeeded,
            TaskState::Failed => S::Failed,
            TaskState::Cancelled => S::Cancelled,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Priority {
    Critical,
    High,
    Normal,
    Low,
}

impl From<P> for Priority {
    fn from(p: P) -> Self {
        match p {
            P::Critical => Self::Critical,
            P::High => Self::High,
            P::Normal => Self::Normal,
            P::Low => Self::Low,
        }
    }
}

impl From<Priority> for P {
    fn from(p: Priority) -> Self {
        match p {
            Priority::Critical => P::Critical,
            Priority::High => P::High,
            Priority::Normal => P::Normal,
            Priority::Low => P::Low,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum AgentState {
    Starting,
    Running,
    Restarting,
    Failed,
    Stopped,
}

impl From<State> for AgentState {
    fn from(s: State) -> Self {
        match s {
            State::Starting => Self::Starting,
            State::Running => Self::Running,
            State::Restarting => Self::Restarting,
            State::Failed => Self::Failed,
            State::Stopped => Self::Stopped,
        }
    }
}

pub struct Agent(pub AgentView);

#[Object]
impl Agent {
    async fn id(&self) -> ID {
        ID(self.0.record.spec.id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.record.spec.name
    }
    /// The node the agent runs on.
    async fn node(&self) -> &str {
        &self.0.record.spec.node
    }
    async fn state(&self) -> AgentState {
        self.0.record.state.into()
    }
    /// `builtin:<kind>` or `exec:<program>`.
    async fn backend(&self) -> String {
        self.0.record.spec.backend.describe()
    }
    async fn capabilities(&self) -> &[String] {
        &self.0.record.spec.capabilities
    }
    async fn max_concurrent_tasks(&self) -> i64 {
        i64::from(self.0.record.spec.max_concurrent_tasks)
    }
    async fn running_tasks(&self) -> i64 {
        i64::from(self.0.running_tasks)
    }
    async fn restarts(&self) -> i64 {
        i64::from(self.0.record.restarts)
    }
    async fn tasks_succeeded(&self) -> i64 {
        self.0.tasks_succeeded as i64
    }
    async fn tasks_failed(&self) -> i64 {
        self.0.tasks_failed as i64
    }
    /// Why the agent last failed, if it ever did.
    async fn last_error(&self) -> Option<&str> {
        self.0.record.last_error.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.record.spec.created_at
    }
}

pub struct Task(pub TaskRecord);

#[Object]
impl Task {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn state(&self) -> TaskState {
        self.0.state.into()
    }
    /// The agent running (or that ran) the task, else the one it targets.
    async fn agent_id(&self) -> Option<ID> {
        self.0.shown_agent().map(|a| ID(a.to_owned()))
    }
    async fn capability(&self) -> Option<&str> {
        self.0.capability.as_deref()
    }
    /// How many attempts have started.
    async fn attempts(&self) -> i64 {
        i64::from(self.0.attempts)
    }
    async fn max_attempts(&self) -> i64 {
        i64::from(self.0.max_attempts)
    }
    async fn priority(&self) -> Priority {
        self.0.priority.into()
    }
    async fn timeout_ms(&self) -> Option<i64> {
        self.0.timeout_ms.map(|t| t as i64)
    }
    async fn payload(&self) -> Json<&serde_json::Value> {
        Json(&self.0.payload)
    }
    async fn result(&self) -> Option<Json<&serde_json::Value>> {
        self.0.result.as_ref().map(Json)
    }
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
}

pub struct Event(pub RtEvent);

#[Object]
impl Event {
    /// Strictly increasing per node; pass the last one seen as `after` to resume.
    async fn seq(&self) -> i64 {
        self.0.seq as i64
    }
    async fn kind(&self) -> &str {
        &self.0.kind
    }
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
    async fn subject(&self) -> Option<ID> {
        self.0.subject.clone().map(ID)
    }
    async fn data(&self) -> Option<Json<&serde_json::Value>> {
        (!self.0.data.is_null()).then_some(Json(&self.0.data))
    }
}

#[derive(SimpleObject)]
pub struct ClusterMember {
    pub name: String,
    pub address: String,
    /// UP when the member answers now, DOWN when it was seen before and does not.
    pub status: String,
}

impl From<Member> for ClusterMember {
    fn from(m: Member) -> Self {
        Self {
            name: m.name,
            address: m.address,
            status: match m.status {
                MemberStatus::Up => "UP".into(),
                MemberStatus::Down => "DOWN".into(),
            },
        }
    }
}

#[derive(SimpleObject)]
pub struct Node {
    pub id: ID,
    pub name: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub members: Vec<ClusterMember>,
    /// The newest event's `seq` on this node: list, then subscribe with `after: lastSeq`.
    pub last_seq: i64,
}

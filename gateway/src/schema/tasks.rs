//! Tasks in GraphQL: the `Task` type, `tasks` / `task`, `submitTask` / `cancelTask` and the
//! `taskUpdates` subscription.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, InputObject, Json, Object, Subscription, ID};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use troupe_actors::service::TaskFilter;
use troupe_actors::task::{Priority as P, SubmitTaskRequest, TaskRecord, TaskState as S};
use troupe_actors::Api;
use troupe_runtime::auth::Role;

use super::page::{cost, page_size, Count, Extra, DEFAULT_PAGE, MAX_PAGE};
use super::Int64;
use crate::auth::RoleGuard;
use crate::error::{coded, OrGql};

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

pub struct Task(pub TaskRecord);

#[Object]
impl Task {
    /// `<uuid>@<node>`: the id names the node that holds the task.
    async fn id(&self) -> ID {
        ID(self.0.spec.id.clone())
    }
    async fn state(&self) -> TaskState {
        self.0.status.state.into()
    }
    /// The agent running (or that ran) the task, else the one it targets.
    async fn agent_id(&self) -> Option<ID> {
        self.0.shown_agent().map(|a| ID(a.to_owned()))
    }
    async fn capability(&self) -> Option<&str> {
        self.0.spec.capability.as_deref()
    }
    /// How many times it was started.
    async fn attempts(&self) -> i32 {
        self.0.status.attempts as i32
    }
    /// How many of those starts failed; a stop or a shutdown is not a failure.
    async fn failed_attempts(&self) -> i32 {
        self.0.status.failures as i32
    }
    /// Failed attempts allowed before the task is FAILED.
    async fn max_attempts(&self) -> i32 {
        self.0.spec.max_attempts as i32
    }
    async fn priority(&self) -> Priority {
        self.0.spec.priority.into()
    }
    async fn timeout_ms(&self) -> Option<Int64> {
        self.0.spec.timeout_ms.map(Int64::from)
    }
    #[graphql(complexity = 5)]
    async fn payload(&self) -> Json<&serde_json::Value> {
        Json(&self.0.spec.payload)
    }
    #[graphql(complexity = 5)]
    async fn result(&self) -> Option<Json<&serde_json::Value>> {
        self.0.status.result.as_ref().map(Json)
    }
    async fn error(&self) -> Option<&str> {
        self.0.status.error.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.spec.created_at
    }
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.status.started_at
    }
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.status.finished_at
    }
}

#[derive(InputObject)]
pub struct SubmitTaskInput {
    /// Run on this agent; give this or `capability`.
    pub agent_id: Option<ID>,
    /// Run on the least-loaded agent with this capability.
    pub capability: Option<String>,
    pub payload: Json<serde_json::Value>,
    pub priority: Option<Priority>,
    /// Failed attempts allowed before the task is FAILED (default 3).
    pub max_attempts: Option<i32>,
    pub timeout_ms: Option<Int64>,
}

impl From<SubmitTaskInput> for SubmitTaskRequest {
    fn from(input: SubmitTaskInput) -> Self {
        SubmitTaskRequest {
            agent_id: input.agent_id.map(|id| id.0),
            capability: input.capability,
            payload: input.payload.0,
            priority: input.priority.map(Into::into),
            max_attempts: input.max_attempts.map(i64::from),
            timeout_ms: input.timeout_ms.map(|t| t.0),
        }
    }
}

#[derive(Default)]
pub struct TasksQuery;

#[Object]
impl TasksQuery {
    /// The cluster's tasks (this node's and every reachable peer's), oldest first.
    #[graphql(
        guard = "RoleGuard(Role::Viewer)",
        complexity = "cost(first, DEFAULT_PAGE, MAX_PAGE, child_complexity)"
    )]
    async fn tasks(
        &self,
        ctx: &Context<'_>,
        state: Option<TaskState>,
        agent_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Task, Extra>> {
        let first = page_size(first, DEFAULT_PAGE, MAX_PAGE)?;
        let has_previous = after.is_some();
        let filter = TaskFilter {
            state: state.map(Into::into),
            agent: agent_id.map(|a| a.0),
        };
        let listing = ctx
            .data::<Api>()?
            .tasks()
            .list(filter.clone(), after, first)
            .await
            .gql()?;
        crate::error::partial(ctx, "tasks", &listing.missing);
        let extra = Extra {
            count: Count::Tasks(filter),
            missing: listing.missing,
        };
        let mut connection = Connection::with_additional_fields(has_previous, listing.more, extra);
        connection
            .edges
            .extend(listing.items.into_iter().map(|t| Edge::new(t.spec.id.clone(), Task(t))));
        Ok(connection)
    }

    /// A task, looked up on the node its id names.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn task(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Task>> {
        Ok(ctx.data::<Api>()?.tasks().get(&id).await.gql()?.map(Task))
    }
}

#[derive(Default)]
pub struct TasksMutation;

#[Object]
impl TasksMutation {
    /// Queues a task for an agent or a capability. With an `idempotencyKey`, a retry gets
    /// the same task instead of a second one.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn submit_task(
        &self,
        ctx: &Context<'_>,
        input: SubmitTaskInput,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Task> {
        let api = ctx.data::<Api>()?;
        Ok(Task(api.tasks().submit(input.into(), idempotency_key).await.gql()?))
    }

    /// Cancels a queued or running task; a running process is killed.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn cancel_task(
        &self,
        ctx: &Context<'_>,
        id: ID,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Task> {
        Ok(Task(
            ctx.data::<Api>()?.tasks().cancel(&id, idempotency_key).await.gql()?,
        ))
    }
}

#[derive(Default)]
pub struct TasksSubscription;

#[Subscription]
impl TasksSubscription {
    /// The task now, then at every change, ending after a terminal state. If the node that
    /// holds the task cannot be reached, the stream ends with an error (code UNAVAILABLE).
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn task_updates(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Task>>> {
        let api = ctx.data::<Api>()?.clone();
        // Take the cursor before reading the task, so no change falls between the two.
        let after = api.last_seq().await.gql()?;
        let first = api
            .tasks()
            .get(&id)
            .await
            .gql()?
            .ok_or_else(|| coded("NOT_FOUND", format!("no task {}", id.0)))?;
        // A task of this node changes through this node's events; a peer's task is polled.
        let changes = super::events::changes_of(&api, &id, api.tasks().holds(&id), after);
        let state = Updates {
            api,
            id: id.0,
            last: None,
            pending: Some(first),
            changes,
            failed: false,
        };
        Ok(futures::stream::unfold(state, Updates::next))
    }
}

struct Updates {
    api: Api,
    id: String,
    last: Option<TaskRecord>,
    pending: Option<TaskRecord>,
    changes: futures::stream::BoxStream<'static, ()>,
    failed: bool,
}

impl Updates {
    async fn next(mut self) -> Option<(async_graphql::Result<Task>, Self)> {
        if self.failed || self.last.as_ref().is_some_and(|t| t.status.state.is_terminal()) {
            return None;
        }
        loop {
            if let Some(task) = self.pending.take() {
                if self.last.as_ref() != Some(&task) {
                    self.last = Some(task.clone());
                    return Some((Ok(Task(task)), self));
                }
            }
            self.changes.next().await?;
            match self.api.tasks().get(&self.id).await {
                Ok(Some(task)) => self.pending = Some(task),
                Ok(None) => {
                    self.failed = true;
                    return Some((Err(coded("NOT_FOUND", format!("task {} is gone", self.id))), self));
                }
                Err(e) => {
                    // The holder is unreachable: say so rather than end as if it finished.
                    self.failed = true;
                    return Some((Err(crate::error::api(e)), self));
                }
            }
        }
    }
}

//! Tasks in GraphQL: the `Task` type, `tasks` / `task`, `submitTask` / `cancelTask` and the
//! `taskUpdates` subscription.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, InputObject, Json, Object, Subscription, ID};
use chrono::{DateTime, Utc};
use futures::Stream;
use troupe_actors::service::TaskFilter;
use troupe_actors::task::{GraphTask, RetrySpec, Strategy as St, SubmitTaskRequest, TaskRecord, TaskState as S};
use troupe_actors::Api;
use troupe_runtime::auth::Role;

use super::page::{cost, page_size, Count, Extra, DEFAULT_PAGE, MAX_PAGE};
use super::shared::Priority;
use super::updates::Follow;
use super::Int64;

mod llm;

use crate::auth::RoleGuard;
use crate::error::OrGql;
use llm::{TaskOutput, TaskStep};

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum TaskState {
    Queued,
    Running,
    /// Its running attempt holds a tool call for an operator's decision (an LLM agent's
    /// approval gate: see `approvals`); RUNNING again once decided. Its agent's slot stays
    /// taken, and the wait does not count against the attempt's `timeoutMs`.
    AwaitingApproval,
    Succeeded,
    Failed,
    Cancelled,
    /// Not finished by its deadline; a running attempt was cancelled.
    Expired,
    /// A task it depends on did not succeed: it never ran.
    DependencyFailed,
    /// Every attempt allowed failed: in the dead-letter queue (`deadLetters`), with each
    /// attempt's error, until `requeueTask`.
    Dead,
}

impl From<S> for TaskState {
    fn from(s: S) -> Self {
        match s {
            S::Queued => Self::Queued,
            S::Running => Self::Running,
            S::AwaitingApproval => Self::AwaitingApproval,
            S::Succeeded => Self::Succeeded,
            S::Failed => Self::Failed,
            S::Cancelled => Self::Cancelled,
            S::Expired => Self::Expired,
            S::DependencyFailed => Self::DependencyFailed,
            S::Dead => Self::Dead,
        }
    }
}

impl From<TaskState> for S {
    fn from(s: TaskState) -> Self {
        match s {
            TaskState::Queued => S::Queued,
            TaskState::Running => S::Running,
            TaskState::AwaitingApproval => S::AwaitingApproval,
            TaskState::Succeeded => S::Succeeded,
            TaskState::Failed => S::Failed,
            TaskState::Cancelled => S::Cancelled,
            TaskState::Expired => S::Expired,
            TaskState::DependencyFailed => S::DependencyFailed,
            TaskState::Dead => S::Dead,
        }
    }
}

pub struct Task(pub TaskRecord);

#[Object]
impl Task {
    /// `<uuid>@<node>`: the id names the node that made the task (the one it was submitted
    /// to, or the node of the agent it is aimed at). Where it is held is `node`: the maker, or
    /// the member whose agent's free slot the placement chose, and another if the cluster
    /// moves it (a lost node, or a node none of whose agents serves it).
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
    /// The agent's name, with `agentId`; null when it has none or the agent is gone.
    async fn agent_name(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        let Some(agent) = self.0.shown_agent() else {
            return Ok(None);
        };
        let store = ctx.data::<Api>()?.store();
        Ok(troupe_actors::names::named(store, agent).await.map(|n| n.name))
    }
    /// What people call it: its capability (or, aimed at an agent, the agent's name) and the
    /// end of its id, "triage · 2a5e1c".
    async fn name(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        Ok(troupe_actors::names::task_label(ctx.data::<Api>()?.store(), &self.0.spec).await)
    }
    async fn capability(&self) -> Option<&str> {
        self.0.spec.capability.as_deref()
    }
    /// The member that holds it, as the replica's directory says: the node whose scheduler
    /// queues and runs it. Its id names the node that made it, which may differ: a submit is
    /// written where it was sent and held where its placement put it (a free slot on another
    /// member's agents), and a lost node's tasks move.
    async fn node(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        let cluster = ctx.data::<Api>()?.cluster();
        Ok(cluster
            .directory()
            .node_of(&self.0.spec.id)
            .unwrap_or_else(|| cluster.name()))
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
    /// Why a QUEUED task is not running yet, as the scheduler sees it now ("no agent has
    /// capability x", "agent a is not running", "dependencies not done: ...", breakers,
    /// backoff, busy agents); null once it runs. Only the member holding the task knows it
    /// now: on another, "queued on <node>, which said at <time>: <reason>" as that member's
    /// newest `TASK_WAITING` event about it said (its log holds one when no agent has what
    /// the task needs; "queued on <node>; <other> said at <time>, when it held it: <reason>"
    /// when a member that held it before it moved said it), or "queued on <node>, whose
    /// scheduler knows why it waits".
    async fn waiting_for(&self) -> Option<&str> {
        self.0.waiting_for.as_deref()
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
    /// Each failed attempt's error, oldest first.
    async fn attempt_errors(&self) -> Vec<AttemptErrorOut> {
        self.0
            .status
            .attempt_errors
            .iter()
            .map(|e| AttemptErrorOut {
                attempt: e.attempt as i32,
                agent_id: e.agent_id.clone().map(ID),
                error: e.error.clone(),
                at: e.at,
            })
            .collect()
    }
    /// The latest progress its running attempt reported (a process agent's `progress`
    /// line; TASK_PROGRESS events are rate-limited, this is always the latest); null until
    /// the attempt reports, cleared when a new attempt starts, kept when the task ends.
    async fn progress(&self) -> Option<TaskProgressOut> {
        self.0.status.progress.as_ref().map(|p| TaskProgressOut {
            fraction: p.fraction,
            note: p.note.clone(),
            at: p.at,
        })
    }
    /// Tasks that must all succeed before this one runs.
    async fn depends_on(&self) -> Vec<ID> {
        self.0.spec.depends_on.iter().cloned().map(ID).collect()
    }
    async fn deadline(&self) -> Option<DateTime<Utc>> {
        self.0.spec.deadline
    }
    async fn not_before(&self) -> Option<DateTime<Utc>> {
        self.0.spec.not_before
    }
    /// The tokens an LLM agent's loop may spend on this task.
    async fn max_tokens(&self) -> Option<Int64> {
        self.0.spec.budget.and_then(|b| b.max_tokens).map(Int64::from)
    }
    /// The cost in US dollars an LLM agent's loop may spend on this task.
    async fn max_cost_usd(&self) -> Option<f64> {
        self.0.spec.budget.and_then(|b| b.max_cost_usd)
    }

    /// The LLM conversation it belongs to, if it names one.
    async fn session(&self) -> Option<&str> {
        self.0.spec.session.as_deref()
    }
    /// An LLM task's committed steps, oldest first: each model reply (its text, the tool
    /// calls it asked for, tokens, cost, latency) and each tool call's result. A loop that
    /// starts again goes on after the last of them. Empty for other tasks.
    #[graphql(complexity = 10)]
    async fn transcript(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<TaskStep>> {
        let api = ctx.data::<Api>()?;
        let steps = troupe_actors::agent::llm_transcript(api.store(), &self.0.spec.id)
            .await
            .map_err(async_graphql::Error::new)?;
        Ok(steps.into_iter().filter_map(TaskStep::of).collect())
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
    /// Tasks of the same node that must all succeed first; the agent then gets
    /// `{"payload": <payload>, "dependencies": {"<id>": <result>, ...}}`.
    pub depends_on: Option<Vec<ID>>,
    /// Not finished by then: EXPIRED (a running attempt is cancelled).
    pub deadline: Option<DateTime<Utc>>,
    /// Not started before then.
    pub not_before: Option<DateTime<Utc>>,
    /// This task's retry backoff instead of the node's.
    pub retry: Option<RetryInput>,
    /// Run on an agent with all of these capabilities (instead of `capability`).
    pub capabilities: Option<Vec<String>>,
    /// The least proficiency (0 to 1) the agent must have in each capability asked for.
    pub min_proficiency: Option<f64>,
    /// How to pick among the capable agents [default: the node's `default_strategy`].
    pub strategy: Option<SchedulingStrategy>,
    /// For an LLM agent: the tokens (input and output) its loop may spend on this task;
    /// past it the task fails with BUDGET_EXCEEDED.
    pub max_tokens: Option<Int64>,
    /// For an LLM agent: the cost in US dollars, at the node's price table (`llm_prices`).
    pub max_cost_usd: Option<f64>,
    /// For an LLM agent: the conversation it keeps across the tasks that name it; this
    /// task begins with what the earlier ones said and were answered (docs/llm-agents.md).
    pub session: Option<String>,
}

/// How the scheduler picks among the agents that can take a task now (docs/semantics.md).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum SchedulingStrategy {
    /// The best `0.5·proficiency + 0.3·recent success rate + 0.2·(1 − load)`.
    Score,
    /// Each capable agent in turn.
    RoundRobin,
    /// The fewest tasks running.
    LeastConnections,
    /// In proportion to the agents' `weight`.
    Weighted,
}

/// Why one attempt of a task failed.
#[derive(async_graphql::SimpleObject)]
pub struct AttemptErrorOut {
    pub attempt: i32,
    pub agent_id: Option<ID>,
    pub error: String,
    pub at: DateTime<Utc>,
}

/// How far a running attempt got, as its agent said.
#[derive(async_graphql::SimpleObject)]
#[graphql(name = "TaskProgress")]
pub struct TaskProgressOut {
    /// 0 to 1, when the agent gave one.
    pub fraction: Option<f64>,
    pub note: Option<String>,
    /// When the agent reported it.
    pub at: DateTime<Utc>,
}

/// Before retry n: `baseMs * 2^(n-1)`, at most `maxMs`, less a random share of up to
/// `jitter` (0 to 1) of it.
#[derive(InputObject)]
pub struct RetryInput {
    pub base_ms: Int64,
    pub max_ms: Int64,
    #[graphql(default)]
    pub jitter: f64,
}

impl SubmitTaskInput {
    pub fn into_request(self) -> async_graphql::Result<SubmitTaskRequest> {
        let retry = match self.retry {
            Some(r) => Some(RetrySpec {
                base_ms: r.base_ms.non_negative("retry.baseMs")?,
                max_ms: r.max_ms.non_negative("retry.maxMs")?,
                jitter: r.jitter,
            }),
            None => None,
        };
        Ok(SubmitTaskRequest {
            agent_id: self.agent_id.map(|id| id.0),
            capability: self.capability,
            payload: self.payload.0,
            priority: self.priority.map(Into::into),
            max_attempts: self.max_attempts.map(i64::from),
            timeout_ms: self.timeout_ms.map(|t| t.0),
            depends_on: self.depends_on.unwrap_or_default().into_iter().map(|d| d.0).collect(),
            deadline: self.deadline,
            not_before: self.not_before,
            retry,
            capabilities: self.capabilities.unwrap_or_default(),
            min_proficiency: self.min_proficiency,
            strategy: self.strategy.map(|s| match s {
                SchedulingStrategy::Score => St::Score,
                SchedulingStrategy::RoundRobin => St::RoundRobin,
                SchedulingStrategy::LeastConnections => St::LeastConnections,
                SchedulingStrategy::Weighted => St::Weighted,
            }),
            session: self.session,
            budget: match (self.max_tokens, self.max_cost_usd) {
                (None, None) => None,
                (tokens, cost) => Some(troupe_actors::task::Budget {
                    max_tokens: tokens.map(|t| t.non_negative("maxTokens")).transpose()?,
                    max_cost_usd: cost,
                }),
            },
        })
    }
}

/// One task of a graph: `dependsOn` names other tasks of the graph by `key`, or tasks of
/// the node by id.
#[derive(InputObject)]
pub struct GraphTaskInput {
    /// The task's name within this call.
    pub key: String,
    pub task: SubmitTaskInput,
}

#[derive(Default)]
pub struct TasksQuery;

#[Object]
impl TasksQuery {
    /// The cluster's tasks, oldest first, from this node's replica.
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
        let first = page_size(ctx, first, DEFAULT_PAGE, MAX_PAGE)?;
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

    /// The dead-letter queue: tasks whose every allowed attempt failed (state DEAD), oldest
    /// first, each with its `attemptErrors`. `requeueTask` gives one another run.
    #[graphql(
        guard = "RoleGuard(Role::Viewer)",
        complexity = "cost(first, DEFAULT_PAGE, MAX_PAGE, child_complexity)"
    )]
    async fn dead_letters(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Task, Extra>> {
        self.tasks(ctx, Some(TaskState::Dead), None, first, after).await
    }

    /// A task, wherever it runs, from this node's replica.
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
        let task = api.tasks().submit(input.into_request()?, idempotency_key).await.gql()?;
        warn_if_nobody_can_run(ctx, &task);
        Ok(Task(task))
    }

    /// Submits a graph of tasks on this node in one commit: all or none. A cycle, a repeated
    /// key or an unknown dependency is INVALID_INPUT. Answers the tasks in the given order.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn submit_tasks(
        &self,
        ctx: &Context<'_>,
        tasks: Vec<GraphTaskInput>,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Vec<Task>> {
        let mut graph = Vec::with_capacity(tasks.len());
        for t in tasks {
            graph.push(GraphTask {
                key: t.key,
                request: t.task.into_request()?,
            });
        }
        let api = ctx.data::<Api>()?;
        let records = api.tasks().submit_graph(graph, idempotency_key).await.gql()?;
        Ok(records.into_iter().map(Task).collect())
    }

    /// Takes a DEAD task out of the dead-letter queue and queues it again with its attempts
    /// renewed (its `attemptErrors` are kept). Any other state is CONFLICT.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn requeue_task(
        &self,
        ctx: &Context<'_>,
        id: ID,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Task> {
        Ok(Task(
            ctx.data::<Api>()?.tasks().requeue(&id, idempotency_key).await.gql()?,
        ))
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
    /// The task now, then at every change (its events, which every member applies) and, for
    /// an LLM task, at each committed step (its `transcript` grew), ending after a terminal
    /// state.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn task_updates(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Task>>> {
        // The record, and how many steps an LLM task committed: a step changes only its
        // transcript, which a subscriber follows too.
        let follow = Follow {
            noun: "task",
            read: |api, id| {
                Box::pin(async move {
                    let Some(task) = api.tasks().get(&id).await? else {
                        return Ok(None);
                    };
                    let steps = troupe_actors::agent::llm_steps_committed(api.store(), &id)
                        .map_err(troupe_actors::ApiError::Unavailable)?;
                    Ok(Some((task, steps)))
                })
            },
            changed: |sent, now| sent != now,
            last: |(task, _)| task.status.state.is_terminal(),
            gone_is_error: true,
            show: |(task, _)| Task(task),
        };
        super::updates::follow(ctx.data::<Api>()?, &id, follow).await
    }

    /// An LLM task's model replies as they stream, piece by piece, from the node running
    /// its agent (on another member only the committed steps are known: `transcript`,
    /// `taskUpdates`). First an item with step 0 and no text, once the stream is live; then
    /// each piece; it ends when the task does. A piece is not kept: a client that needs the
    /// whole reply reads the step once committed.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn task_output(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<TaskOutput>>> {
        llm::output(ctx.data::<Api>()?, id).await
    }
}

/// A task queued for a capability no agent of the cluster has is accepted (an agent may be
/// spawned for it), and the answer says so in `extensions.warnings` (code `NO_AGENT`).
fn warn_if_nobody_can_run(ctx: &Context<'_>, task: &troupe_actors::task::TaskRecord) {
    let Some(reason) = task.waiting_for.as_deref() else {
        return;
    };
    if !troupe_actors::scheduler::no_agent_has(reason) {
        return;
    }
    if let Ok(notes) = ctx.data::<std::sync::Arc<super::notes::Notes>>() {
        notes.warn(
            "NO_AGENT",
            format!(
                "task {} waits: {reason} running in the cluster (a stopped or failed agent does not count); it runs as soon as an agent that has it can take it",
                task.spec.id
            ),
        );
    }
}

//! Agents in GraphQL: the `Agent` type, `agents` / `agent`, the lifecycle mutations
//! (`createAgent`, `spawnAgent`, `startAgent`, `stopAgent`, `pauseAgent`, `resumeAgent`,
//! `restartAgent`, `removeAgent`, `updateAgent`), checkpoints and `agentUpdates`.

mod inputs;
mod live;
mod mutations;

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use troupe_actors::agent::{AgentFilter, AgentState as State, AgentView, Desired};
use troupe_actors::service::AgentLive;
use troupe_actors::Api;
use troupe_runtime::auth::Role;

pub use inputs::SpawnAgentInput;
pub use live::AgentsSubscription;
pub use mutations::AgentsMutation;

use super::page::{cost, page_size, Count, Extra, DEFAULT_PAGE, MAX_PAGE};
use super::shared::{labels, pairs, Label, LabelInput};
use super::Int64;
use crate::auth::RoleGuard;
use crate::error::OrGql;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum AgentState {
    /// Created (createAgent), never started.
    Defined,
    Starting,
    Running,
    /// Takes no tasks; its processes are suspended (SIGSTOP).
    Paused,
    /// A graceful stop: finishing its running tasks within the grace period.
    Stopping,
    Stopped,
    /// Failed; its supervisor is starting it again (perhaps from its last checkpoint).
    Recovering,
    /// Running but silent past its heartbeat interval: it takes no tasks until heard again.
    Unhealthy,
    /// Failed more often than its recovery ladder allows; not restarted.
    Failed,
    /// Never reported any more: a failed agent about to restart is RECOVERING.
    #[graphql(deprecation = "reported as RECOVERING")]
    Restarting,
}

impl From<State> for AgentState {
    fn from(s: State) -> Self {
        match s {
            State::Defined => Self::Defined,
            State::Starting => Self::Starting,
            State::Running => Self::Running,
            State::Paused => Self::Paused,
            State::Stopping => Self::Stopping,
            State::Stopped => Self::Stopped,
            State::Recovering => Self::Recovering,
            State::Unhealthy => Self::Unhealthy,
            State::Failed => Self::Failed,
        }
    }
}

impl From<AgentState> for State {
    /// What a filter by state matches (RESTARTING is reported as RECOVERING).
    fn from(s: AgentState) -> Self {
        match s {
            AgentState::Defined => Self::Defined,
            AgentState::Starting => Self::Starting,
            AgentState::Running => Self::Running,
            AgentState::Paused => Self::Paused,
            AgentState::Stopping => Self::Stopping,
            AgentState::Stopped => Self::Stopped,
            AgentState::Recovering | AgentState::Restarting => Self::Recovering,
            AgentState::Unhealthy => Self::Unhealthy,
            AgentState::Failed => Self::Failed,
        }
    }
}

/// rlimits set on each process of an exec or process agent.
#[derive(SimpleObject)]
pub struct AgentLimits {
    #[graphql(name = "memoryMiB")]
    pub memory_mib: Option<Int64>,
    pub cpu_seconds: Option<Int64>,
    pub open_files: Option<Int64>,
    /// The agent's cgroup CPU limit, in cores.
    pub cpu_cores: Option<f64>,
    /// How the per-process limits are enforced: `rlimit`, or `none` when none are set.
    pub enforcement: String,
    /// Whether this node could put the agent's memory and cpu limits in a cgroup v2, and if
    /// not, why.
    pub cgroup: String,
}

#[derive(SimpleObject)]
pub struct Proficiency {
    pub capability: String,
    pub proficiency: f64,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(SimpleObject)]
pub struct Breaker {
    pub state: BreakerState,
    pub consecutive_failures: i32,
    /// When it last opened.
    pub opened_at: Option<DateTime<Utc>>,
}

/// Model tokens the agent's results reported, summed.
#[derive(SimpleObject)]
pub struct TokenUsage {
    pub prompt_tokens: Int64,
    pub completion_tokens: Int64,
    pub total_tokens: Int64,
}

pub struct Agent {
    view: AgentView,
    /// What the agent's actor says of itself, asked once however many fields need it.
    live: tokio::sync::OnceCell<Option<AgentLive>>,
}

impl From<AgentView> for Agent {
    fn from(view: AgentView) -> Self {
        Self {
            view,
            live: tokio::sync::OnceCell::new(),
        }
    }
}

impl Agent {
    async fn live(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<AgentLive>> {
        let live = self
            .live
            .get_or_try_init(|| async { ctx.data::<Api>()?.agents().live(&self.view.spec.id).await.gql() })
            .await?;
        Ok(live.clone())
    }
}

#[Object]
impl Agent {
    /// `<uuid>@<node>`: the id names the node that made the agent; `node` says where it runs
    /// now.
    async fn id(&self) -> ID {
        ID(self.view.spec.id.clone())
    }
    async fn name(&self) -> &str {
        &self.view.spec.name
    }
    /// The node the agent runs on.
    async fn node(&self) -> &str {
        &self.view.spec.node
    }
    async fn project(&self) -> &str {
        &self.view.spec.project
    }
    async fn labels(&self) -> Vec<Label> {
        labels(&self.view.spec.labels)
    }
    /// Never moved to another node when its node is lost.
    async fn pinned(&self) -> bool {
        self.view.spec.placement.pinned
    }
    /// The node labels a member must have for the agent to be moved there.
    async fn node_labels(&self) -> Vec<Label> {
        labels(&self.view.spec.placement.node_labels)
    }
    /// What was observed last.
    async fn state(&self) -> AgentState {
        self.view.status.state.into()
    }
    /// Whether the user wants it running (false once stopped or before its first start).
    async fn wanted_running(&self) -> bool {
        self.view.spec.desired != Desired::Stopped
    }
    /// The supervisor that starts and restarts it: `agents` (the node's), or
    /// `swarms/<swarm id>/members` for a swarm's member.
    async fn owner(&self) -> String {
        match self.view.spec.owner.swarm() {
            Some(swarm) => format!("swarms/{swarm}/members"),
            None => self.view.spec.owner.supervisor().to_owned(),
        }
    }
    /// `builtin:<kind>`, `exec:<program>`, `process:<program>`, `http:<url>` or `llm:<model>`.
    async fn backend(&self) -> String {
        self.view.spec.backend.describe()
    }
    /// What it takes tasks for: its spec's, then those its backend found (an `mcp` agent's
    /// tools, `mcp:<agent name>/<tool>`, as of its start or its server's last change).
    async fn capabilities(&self) -> Vec<&str> {
        let (spec, found) = (&self.view.spec.capabilities, &self.view.status.discovered);
        spec.iter()
            .chain(found.iter().filter(|c| !spec.contains(c)))
            .map(String::as_str)
            .collect()
    }
    async fn max_concurrent_tasks(&self) -> i32 {
        self.view.spec.max_concurrent_tasks as i32
    }
    async fn limits(&self) -> Option<AgentLimits> {
        let l = self.view.spec.limits;
        let int = |v: Option<u64>| v.map(|v| Int64(v as i64));
        self.view.spec.backend.runs_processes().then(|| AgentLimits {
            memory_mib: int(l.memory_mib),
            cpu_seconds: int(l.cpu_seconds),
            open_files: int(l.open_files),
            cpu_cores: l.cpu_cores,
            enforcement: if l.memory_mib.or(l.cpu_seconds).or(l.open_files).is_some() {
                "rlimit".into()
            } else {
                "none".into()
            },
            cgroup: troupe_actors::agent::describe_cgroup(&l),
        })
    }
    async fn running_tasks(&self) -> i32 {
        self.view.stats.running as i32
    }
    /// How many times its supervisor restarted it.
    async fn restarts(&self) -> i32 {
        self.view.status.restarts as i32
    }
    async fn tasks_succeeded(&self) -> Int64 {
        self.view.stats.succeeded.into()
    }
    async fn tasks_failed(&self) -> Int64 {
        self.view.stats.failed.into()
    }
    /// How good it is at its capabilities, 0 to 1 (those not listed count as 1).
    async fn proficiency(&self) -> Vec<Proficiency> {
        self.view
            .spec
            .proficiency
            .iter()
            .map(|(c, p)| Proficiency {
                capability: c.clone(),
                proficiency: *p,
            })
            .collect()
    }
    /// Its last messages, answered or dead, oldest first: the newest 50, from this node's
    /// replica (the node delivering them writes them in the background, at most every
    /// 250 ms: they survive restarts and follow the agent when it moves).
    async fn messages(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<super::messages::AgentMessage>> {
        let history = ctx.data::<Api>()?.messages().history(&self.view.spec.id).await.gql()?;
        Ok(history.into_iter().map(Into::into).collect())
    }
    /// Messages in its mailbox not yet answered or dead-lettered, the one it is handling
    /// included (the mailbox's capacity counts those queued behind it); from this node's
    /// replica.
    async fn messages_waiting(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        Ok(ctx.data::<Api>()?.messages().waiting(&self.view.spec.id).await.gql()? as i32)
    }
    /// The topic patterns it subscribes to.
    async fn topics(&self) -> &[String] {
        &self.view.spec.topics
    }
    /// Its share under the WEIGHTED strategy.
    async fn weight(&self) -> f64 {
        self.view.spec.weight
    }
    /// Its circuit breaker: OPEN after `breaker_failures` consecutive failed attempts (it
    /// gets no tasks), HALF_OPEN after `breaker_cooldown_ms` (one trial task), CLOSED again
    /// on a success. Each change is an event (AGENT_BREAKER_OPENED, _HALF_OPEN, _CLOSED).
    /// Held by the scheduler of the agent's node: for a peer's agent, as that node's last
    /// sample said (`observedAt`), as `health` is.
    async fn breaker(&self, ctx: &Context<'_>) -> async_graphql::Result<Breaker> {
        let b = self
            .live(ctx)
            .await?
            .and_then(|l| l.stats)
            .unwrap_or(self.view.stats)
            .breaker;
        Ok(Breaker {
            state: match b.state {
                troupe_actors::agent::BreakerState::Closed => BreakerState::Closed,
                troupe_actors::agent::BreakerState::Open => BreakerState::Open,
                troupe_actors::agent::BreakerState::HalfOpen => BreakerState::HalfOpen,
            },
            consecutive_failures: b.consecutive_failures as i32,
            opened_at: b.opened_at,
        })
    }
    async fn token_usage(&self) -> TokenUsage {
        let s = &self.view.stats;
        TokenUsage {
            prompt_tokens: s.prompt_tokens.into(),
            completion_tokens: s.completion_tokens.into(),
            total_tokens: (s.prompt_tokens + s.completion_tokens).into(),
        }
    }
    /// What an LLM agent spent, from the usage its tasks committed (null for other
    /// agents): its budgets are checked against these.
    async fn llm_spend(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<LlmSpend>> {
        if !matches!(self.view.spec.backend, troupe_actors::agent::BackendSpec::Llm(_)) {
            return Ok(None);
        }
        LlmSpend::of(ctx, &self.view.spec.id).await.map(Some)
    }
    /// Why the agent last failed or went unhealthy, if it ever did.
    async fn last_error(&self) -> Option<&str> {
        self.view.status.last_error.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.view.spec.created_at
    }
    /// When its status last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.view.status.updated_at
    }
    /// Its kept checkpoints, oldest first.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn checkpoints(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<live::Checkpoint>> {
        let list = ctx
            .data::<Api>()?
            .agents()
            .checkpoints(&self.view.spec.id)
            .await
            .gql()?;
        Ok(list.into_iter().map(live::Checkpoint).collect())
    }
    /// RSS and CPU of its processes (observed at `observedAt`); null when it runs none or is
    /// not running.
    async fn usage(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<live::AgentUsage>> {
        Ok(self.live(ctx).await?.and_then(|l| l.usage).map(live::AgentUsage))
    }
    /// Its processes' CPU and memory over the last `minutes` (at most the hour or so the
    /// node keeps), oldest first, one point each `history_interval_ms` as observed on the
    /// node that runs it; empty for an agent that runs no process.
    async fn usage_history(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 60)] minutes: i32,
    ) -> async_graphql::Result<Vec<crate::history::agents::Point>> {
        let minutes =
            u32::try_from(minutes).map_err(|_| crate::error::coded("INVALID_INPUT", "minutes must not be negative"))?;
        let from = troupe_runtime::clock::now() - chrono::Duration::minutes(i64::from(minutes));
        let history = ctx.data::<std::sync::Arc<crate::history::History>>()?;
        Ok(history.agents.of(&self.view.spec.id, from))
    }
    /// The process groups running for it now (the whole group is paused, sampled and killed
    /// together); empty when it runs none.
    async fn process_groups(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Int64>> {
        Ok(self
            .live(ctx)
            .await?
            .map(|l| l.process_groups.into_iter().map(|g| Int64(i64::from(g))).collect())
            .unwrap_or_default())
    }
    /// Heartbeats and figures over its recent attempts.
    async fn health(&self, ctx: &Context<'_>) -> async_graphql::Result<live::AgentHealth> {
        Ok(live::AgentHealth::new(&self.view, self.live(ctx).await?))
    }
    /// When `usage`, `processGroups` and `health` were observed on the node that runs the
    /// agent: now for an agent of the node asked; for a peer's, that node's last sample
    /// (taken at most a second before one of its heartbeat answers), so reading it asks no
    /// peer. Null when it is not running (or its node has not reported it yet).
    async fn observed_at(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<DateTime<Utc>>> {
        Ok(self.live(ctx).await?.and_then(|l| l.seen_at))
    }
}

/// How many agents are in one state.
#[derive(SimpleObject)]
pub struct AgentStateCount {
    pub state: AgentState,
    pub count: Int64,
}

#[derive(Default)]
pub struct AgentsQuery;

#[Object]
impl AgentsQuery {
    /// How many agents of the cluster are in each state (the states with any), from this
    /// node's replica in one pass: what `agents(state:) { totalCount }` counts, for every
    /// state at once.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn agent_state_counts(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<AgentStateCount>> {
        let counts = ctx.data::<Api>()?.agents().count_by_state().await.gql()?;
        let mut out: Vec<AgentStateCount> = counts
            .into_iter()
            .map(|(state, n)| AgentStateCount {
                state: state.into(),
                count: Int64(n as i64),
            })
            .collect();
        out.sort_by_key(|c| c.state as u8);
        Ok(out)
    }

    /// The cluster's agents, by id, from this node's replica; `name`, `project`,
    /// `labels` (every pair must match), `state` and `capability` narrow the list.
    #[graphql(
        guard = "RoleGuard(Role::Viewer)",
        complexity = "cost(first, DEFAULT_PAGE, MAX_PAGE, child_complexity)"
    )]
    // Each argument is one of the field's GraphQL arguments.
    #[allow(clippy::too_many_arguments)]
    async fn agents(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        project: Option<String>,
        labels: Option<Vec<LabelInput>>,
        state: Option<AgentState>,
        capability: Option<String>,
        #[graphql(desc = "Only agents of this name (names need not be unique).")] name: Option<String>,
    ) -> async_graphql::Result<Connection<String, Agent, Extra>> {
        let first = page_size(ctx, first, DEFAULT_PAGE, MAX_PAGE)?;
        let has_previous = after.is_some();
        let filter = AgentFilter {
            name,
            project,
            labels: pairs(labels),
            capability,
            state: state.map(State::from),
        };
        let listing = ctx
            .data::<Api>()?
            .agents()
            .list(after, first, filter.clone())
            .await
            .gql()?;
        crate::error::partial(ctx, "agents", &listing.missing);
        let extra = Extra {
            count: Count::Agents(filter),
            missing: listing.missing,
        };
        let mut connection = Connection::with_additional_fields(has_previous, listing.more, extra);
        connection.edges.extend(
            listing
                .items
                .into_iter()
                .map(|v| Edge::new(v.spec.id.clone(), Agent::from(v))),
        );
        Ok(connection)
    }

    /// The lines an exec, process or mcp agent wrote (stderr, an exec task's stdout, a
    /// process's `log` lines, an mcp agent's command's stderr), oldest first: those with `seq` above `after`, or its last ones without
    /// it; at most `limit` (default 200, at most 1,000). An agent keeps its last 1,000
    /// lines, a task attempt its first 500.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn agent_logs(
        &self,
        ctx: &Context<'_>,
        id: ID,
        after: Option<Int64>,
        limit: Option<i32>,
    ) -> async_graphql::Result<Vec<live::LogLine>> {
        let limit = crate::schema::page::page_size(ctx, limit, 200, 1000)?;
        let after = crate::schema::events::cursor(after)?;
        let lines = ctx.data::<Api>()?.agents().logs(&id, after, limit).await.gql()?;
        Ok(lines.into_iter().map(live::LogLine::from).collect())
    }

    /// What the LLM agents of a project spent (tokens input and output, US dollars at the
    /// node's price table when each step was committed; today is the UTC day).
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn project_llm_spend(&self, ctx: &Context<'_>, project: String) -> async_graphql::Result<LlmSpend> {
        LlmSpend::of(ctx, &format!("project:{project}")).await
    }

    /// An agent, wherever it runs, from this node's replica.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn agent(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Agent>> {
        Ok(ctx.data::<Api>()?.agents().get(&id).await.gql()?.map(Agent::from))
    }
}

/// What an LLM agent spent: tokens are input and output together; costs in US dollars at
/// the node's price table when each step was committed; today is the UTC day.
#[derive(async_graphql::SimpleObject)]
pub struct LlmSpend {
    pub tokens: Int64,
    pub cost_usd: f64,
    pub tokens_today: Int64,
    pub cost_usd_today: f64,
}

impl LlmSpend {
    /// What `who` spent: an agent's id, `swarm:<id>` or `project:<name>`.
    pub async fn of(ctx: &Context<'_>, who: &str) -> async_graphql::Result<Self> {
        let api = ctx.data::<Api>()?;
        let (all, today) = troupe_actors::agent::llm_spent_by(api.store(), who)
            .await
            .map_err(async_graphql::Error::new)?;
        Ok(Self {
            tokens: all.tokens().into(),
            cost_usd: all.cost_usd,
            tokens_today: today.tokens().into(),
            cost_usd_today: today.cost_usd,
        })
    }
}

//! Agents in GraphQL: the `Agent` type, `agents` / `agent`, `spawnAgent` / `stopAgent`.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, InputObject, Object, OneofObject, ID};
use chrono::{DateTime, Utc};
use troupe_actors::agent::{AgentState as State, AgentView, BackendSpec, BuiltinKind, ExecBackend, SpawnAgentRequest};
use troupe_actors::{Api, ApiError};
use troupe_runtime::auth::Role;

use super::page::{cost, page_size, Count, Extra, DEFAULT_PAGE, MAX_PAGE};
use super::Int64;
use crate::auth::RoleGuard;
use crate::error::OrGql;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum AgentState {
    Starting,
    Running,
    /// Failed; its supervisor is about to start it again.
    Restarting,
    Stopped,
    /// Failed more often than its restart intensity allows; not restarted.
    Failed,
}

impl From<State> for AgentState {
    fn from(s: State) -> Self {
        match s {
            State::Starting => Self::Starting,
            State::Running => Self::Running,
            State::Restarting => Self::Restarting,
            State::Stopped => Self::Stopped,
            State::Failed => Self::Failed,
        }
    }
}

pub struct Agent(pub AgentView);

#[Object]
impl Agent {
    /// `<uuid>@<node>`: the id names the node that holds the agent.
    async fn id(&self) -> ID {
        ID(self.0.spec.id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.spec.name
    }
    /// The node the agent runs on.
    async fn node(&self) -> &str {
        &self.0.spec.node
    }
    /// What was observed last.
    async fn state(&self) -> AgentState {
        self.0.status.state.into()
    }
    /// Whether the user wants it running (false once stopped).
    async fn wanted_running(&self) -> bool {
        self.0.spec.desired == troupe_actors::agent::Desired::Running
    }
    /// The supervisor that starts and restarts it.
    async fn owner(&self) -> &str {
        self.0.spec.owner.supervisor()
    }
    /// `builtin:<kind>` or `exec:<program>`.
    async fn backend(&self) -> String {
        self.0.spec.backend.describe()
    }
    async fn capabilities(&self) -> &[String] {
        &self.0.spec.capabilities
    }
    async fn max_concurrent_tasks(&self) -> i32 {
        self.0.spec.max_concurrent_tasks as i32
    }
    async fn running_tasks(&self) -> i32 {
        self.0.stats.running as i32
    }
    /// How many times its supervisor restarted it.
    async fn restarts(&self) -> i32 {
        self.0.status.restarts as i32
    }
    async fn tasks_succeeded(&self) -> Int64 {
        self.0.stats.succeeded.into()
    }
    async fn tasks_failed(&self) -> Int64 {
        self.0.stats.failed.into()
    }
    /// Why the agent last failed, if it ever did.
    async fn last_error(&self) -> Option<&str> {
        self.0.status.last_error.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.spec.created_at
    }
    /// When its status last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.status.updated_at
    }
}

#[derive(InputObject)]
pub struct EnvVarInput {
    pub name: String,
    pub value: String,
}

#[derive(InputObject)]
pub struct ExecBackendInput {
    pub command: Vec<String>,
    pub timeout_ms: Option<Int64>,
    pub env: Option<Vec<EnvVarInput>>,
}

#[derive(InputObject)]
pub struct BuiltinBackendInput {
    /// echo | sleep | fail | panic
    pub kind: String,
}

#[derive(OneofObject)]
pub enum BackendInput {
    Exec(ExecBackendInput),
    Builtin(BuiltinBackendInput),
}

#[derive(InputObject)]
pub struct SpawnAgentInput {
    pub name: String,
    pub backend: BackendInput,
    pub capabilities: Option<Vec<String>>,
    pub max_concurrent_tasks: Option<i32>,
    /// The node to run on; this node when omitted.
    pub node: Option<String>,
}

impl TryFrom<SpawnAgentInput> for SpawnAgentRequest {
    type Error = ApiError;

    fn try_from(input: SpawnAgentInput) -> Result<Self, ApiError> {
        let backend = match input.backend {
            BackendInput::Builtin(b) => BackendSpec::Builtin(BuiltinKind::parse(&b.kind)?),
            BackendInput::Exec(e) => {
                let timeout_ms = match e.timeout_ms {
                    Some(Int64(t)) if t <= 0 => return Err(ApiError::invalid("timeoutMs must be positive")),
                    t => t.map(|t| t.0 as u64),
                };
                BackendSpec::Exec(ExecBackend {
                    command: e.command,
                    timeout_ms,
                    env: e
                        .env
                        .unwrap_or_default()
                        .into_iter()
                        .map(|v| (v.name, v.value))
                        .collect(),
                })
            }
        };
        Ok(SpawnAgentRequest {
            name: input.name,
            backend,
            capabilities: input.capabilities.unwrap_or_default(),
            max_concurrent_tasks: input.max_concurrent_tasks.map(i64::from),
            node: input.node,
        })
    }
}

#[derive(Default)]
pub struct AgentsQuery;

#[Object]
impl AgentsQuery {
    /// The cluster's agents (this node's and every reachable peer's), by id.
    #[graphql(
        guard = "RoleGuard(Role::Viewer)",
        complexity = "cost(first, DEFAULT_PAGE, MAX_PAGE, child_complexity)"
    )]
    async fn agents(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Agent, Extra>> {
        let first = page_size(first, DEFAULT_PAGE, MAX_PAGE)?;
        let has_previous = after.is_some();
        let listing = ctx.data::<Api>()?.agents().list(after, first).await.gql()?;
        crate::error::partial(ctx, "agents", &listing.missing);
        let extra = Extra {
            count: Count::Agents,
            missing: listing.missing,
        };
        let mut connection = Connection::with_additional_fields(has_previous, listing.more, extra);
        connection.edges.extend(
            listing
                .items
                .into_iter()
                .map(|v| Edge::new(v.spec.id.clone(), Agent(v))),
        );
        Ok(connection)
    }

    /// An agent, looked up on the node its id names.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn agent(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Agent>> {
        Ok(ctx.data::<Api>()?.agents().get(&id).await.gql()?.map(Agent))
    }
}

#[derive(Default)]
pub struct AgentsMutation;

#[Object]
impl AgentsMutation {
    /// Starts a supervised agent on this node, or on `input.node`. With an
    /// `idempotencyKey`, a retry gets the same agent instead of a second one.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn spawn_agent(
        &self,
        ctx: &Context<'_>,
        input: SpawnAgentInput,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Agent> {
        let request = SpawnAgentRequest::try_from(input).gql()?;
        let api = ctx.data::<Api>()?;
        Ok(Agent(api.agents().spawn(request, idempotency_key).await.gql()?))
    }

    /// Stops an agent for good; its running tasks go back to the queue without losing an
    /// attempt.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn stop_agent(
        &self,
        ctx: &Context<'_>,
        id: ID,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Agent> {
        Ok(Agent(
            ctx.data::<Api>()?.agents().stop(&id, idempotency_key).await.gql()?,
        ))
    }
}

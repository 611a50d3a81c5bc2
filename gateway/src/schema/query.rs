//! Queries. Lists are Relay connections paged by id; `events` pages by sequence number.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Object, ID};
use troupe_actors::Api;
use troupe_runtime::auth::Role;
use troupe_runtime::events::EventFilter;

use super::types::{Agent, ClusterMember, Event, Node, Task, TaskState};
use crate::auth::RoleGuard;
use crate::error::{coded, OrGql};

const DEFAULT_PAGE: i32 = 50;
const MAX_PAGE: i32 = 500;

pub(crate) fn page_size(first: Option<i32>, default: i32, max: i32) -> async_graphql::Result<usize> {
    match first.unwrap_or(default) {
        n if n < 0 => Err(coded("INVALID_INPUT", "first must not be negative")),
        n => Ok(n.min(max) as usize),
    }
}

pub(crate) fn cursor(after: Option<i64>) -> async_graphql::Result<Option<u64>> {
    match after {
        Some(n) if n < 0 => Err(coded("INVALID_INPUT", "after must not be negative")),
        other => Ok(other.map(|n| n as u64)),
    }
}

pub(crate) fn kinds_filter(kinds: Option<Vec<String>>) -> EventFilter {
    EventFilter {
        kinds: kinds.map(|k| k.into_iter().collect()),
        subject: None,
    }
}

/// `totalCount` of the agents connection, counted only when asked for.
pub struct AgentTotal;

#[Object]
impl AgentTotal {
    async fn total_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        Ok(ctx.data::<Api>()?.count_agents().await.gql()? as i64)
    }
}

/// `totalCount` of a tasks connection (with its filter), counted only when asked for.
pub struct TaskTotal {
    state: Option<troupe_actors::task::TaskState>,
    agent: Option<String>,
}

#[Object]
impl TaskTotal {
    async fn total_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        Ok(ctx
            .data::<Api>()?
            .count_tasks(self.state, self.agent.clone())
            .await
            .gql()? as i64)
    }
}

pub struct Query;

#[Object]
impl Query {
    /// This node and the cluster it belongs to.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn node(&self, ctx: &Context<'_>) -> async_graphql::Result<Node> {
        let api = ctx.data::<Api>()?;
        Ok(Node {
            id: ID(api.node_id().to_owned()),
            name: api.node_name().to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: api.started_at(),
            members: api.members().into_iter().map(ClusterMember::from).collect(),
            last_seq: api
                .store()
                .last_seq()
                .await
                .map_err(|e| coded("INTERNAL", e.to_string()))? as i64,
        })
    }

    /// The cluster's agents (this node's and every connected peer's), by id.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn agents(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Agent, AgentTotal>> {
        let first = page_size(first, DEFAULT_PAGE, MAX_PAGE)?;
        let has_previous = after.is_some();
        let (views, more) = ctx.data::<Api>()?.agents(after, first).await.gql()?;
        let mut connection = Connection::with_additional_fields(has_previous, more, AgentTotal);
        connection
            .edges
            .extend(views.into_iter().map(|v| Edge::new(v.record.spec.id.clone(), Agent(v))));
        Ok(connection)
    }

    /// An agent of this node or of a connected peer.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn agent(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Agent>> {
        Ok(ctx.data::<Api>()?.agent(&id).await.gql()?.map(Agent))
    }

    /// The cluster's tasks (this node's and every connected peer's), oldest first.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn tasks(
        &self,
        ctx: &Context<'_>,
        state: Option<TaskState>,
        agent_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Task, TaskTotal>> {
        let first = page_size(first, DEFAULT_PAGE, MAX_PAGE)?;
        let has_previous = after.is_some();
        let total = TaskTotal {
            state: state.map(Into::into),
            agent: agent_id.map(|a| a.0),
        };
        let (tasks, more) = ctx
            .data::<Api>()?
            .tasks(total.state, total.agent.clone(), after, first)
            .await
            .gql()?;
        let mut connection = Connection::with_additional_fields(has_previous, more, total);
        connection
            .edges
            .extend(tasks.into_iter().map(|t| Edge::new(t.id.clone(), Task(t))));
        Ok(connection)
    }

    /// A task of this node or of a connected peer.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn task(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Task>> {
        Ok(ctx.data::<Api>()?.task(&id).await.gql()?.map(Task))
    }

    /// Events with `seq` above `after` (default 0), oldest first, optionally of some kinds.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<i64>,
        kinds: Option<Vec<String>>,
        first: Option<i32>,
    ) -> async_graphql::Result<Vec<Event>> {
        let first = page_size(first, 100, 1000)?;
        let after = cursor(after)?.unwrap_or(0);
        let events = ctx
            .data::<Api>()?
            .events(after, kinds_filter(kinds), first)
            .await
            .gql()?;
        Ok(events.into_iter().map(Event).collect())
    }
}

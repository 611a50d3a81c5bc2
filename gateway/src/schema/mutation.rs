//! Mutations. Each is committed to the store before it answers.

use async_graphql::{Context, Object, ID};
use troupe_actors::agent::SpawnAgentRequest;
use troupe_actors::Api;
use troupe_runtime::auth::Role;

use super::inputs::{SpawnAgentInput, SubmitTaskInput};
use super::types::{Agent, Task};
use crate::auth::RoleGuard;
use crate::error::OrGql;

pub struct Mutation;

#[Object]
impl Mutation {
    /// Starts a supervised agent on this node, or on `input.node`.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn spawn_agent(&self, ctx: &Context<'_>, input: SpawnAgentInput) -> async_graphql::Result<Agent> {
        let request = SpawnAgentRequest::try_from(input).gql()?;
        Ok(Agent(ctx.data::<Api>()?.spawn_agent(request).await.gql()?))
    }

    /// Stops an agent for good; its running tasks are re-queued.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn stop_agent(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Agent> {
        Ok(Agent(ctx.data::<Api>()?.stop_agent(&id).await.gql()?))
    }

    /// Queues a task for an agent or a capability.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn submit_task(&self, ctx: &Context<'_>, input: SubmitTaskInput) -> async_graphql::Result<Task> {
        Ok(Task(ctx.data::<Api>()?.submit_task(input.into()).await.gql()?))
    }

    /// Cancels a queued or running task; a running process is killed.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn cancel_task(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Task> {
        Ok(Task(ctx.data::<Api>()?.cancel_task(&id).await.gql()?))
    }
}

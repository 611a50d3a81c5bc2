//! The agent mutations. Each takes an optional `idempotencyKey`: a retry with the same key
//! gets the first answer instead of acting twice.

use async_graphql::{Context, Object, ID};
use troupe_actors::agent::AgentUpdate;
use troupe_actors::service::AgentAction;
use troupe_actors::Api;
use troupe_runtime::auth::Role;

use super::inputs::{SpawnAgentInput, UpdateAgentInput};
use super::live::Checkpoint;
use super::Agent;
use crate::auth::RoleGuard;
use crate::error::OrGql;

#[derive(Default)]
pub struct AgentsMutation;

/// Names need not be unique, but a name two agents share no longer finds either (the command
/// line asks for an id then): the answer that made the second says so in
/// `extensions.warnings` (code `NAME_TAKEN`), naming the other.
async fn warn_if_the_name_is_taken(ctx: &Context<'_>, made: &troupe_actors::agent::AgentView) {
    let Ok(api) = ctx.data::<Api>() else { return };
    let others = api.agents().others_named(&made.spec.name, &made.spec.id);
    let Some(other) = others.first() else {
        return;
    };
    if let Ok(notes) = ctx.data::<std::sync::Arc<crate::schema::notes::Notes>>() {
        notes.warn(
            "NAME_TAKEN",
            format!(
                "agent {other} has the name {} too: names need not be unique, but where a name stands for an agent (the command line) give its id",
                made.spec.name
            ),
        );
    }
}

/// An agent spawned (`start`) or only defined, with the warning of a name another has.
async fn made(
    ctx: &Context<'_>,
    input: SpawnAgentInput,
    start: bool,
    key: Option<String>,
) -> async_graphql::Result<Agent> {
    let request = input.into_request(start).gql()?;
    let made = ctx.data::<Api>()?.agents().spawn(request, key).await.gql()?;
    warn_if_the_name_is_taken(ctx, &made).await;
    Ok(Agent::from(made))
}

async fn act(ctx: &Context<'_>, id: ID, action: AgentAction, key: Option<String>) -> async_graphql::Result<Agent> {
    Ok(Agent::from(
        ctx.data::<Api>()?.agents().act(&id, action, key).await.gql()?,
    ))
}

#[Object]
impl AgentsMutation {
    /// Creates a supervised agent and starts it, on this node or on `input.node`. When
    /// another agent has its name, the answer says so in `extensions.warnings` (`NAME_TAKEN`).
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn spawn_agent(
        &self,
        ctx: &Context<'_>,
        input: SpawnAgentInput,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Agent> {
        made(ctx, input, true, idempotency_key).await
    }

    /// Defines an agent without starting it (state DEFINED); `startAgent` starts it.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn create_agent(
        &self,
        ctx: &Context<'_>,
        input: SpawnAgentInput,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Agent> {
        made(ctx, input, false, idempotency_key).await
    }

    /// Starts a DEFINED, STOPPED or FAILED agent under its supervisor.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn start_agent(
        &self,
        ctx: &Context<'_>,
        id: ID,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Agent> {
        act(ctx, id, AgentAction::Start, idempotency_key).await
    }

    /// Stops an agent. Graceful (the default): it takes no new tasks and its running tasks get
    /// the grace period (`agent_stop_grace_ms`) to finish. What still runs then, or at once
    /// when not graceful, goes back to the queue without losing an attempt.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn stop_agent(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(default = true)] graceful: bool,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Agent> {
        act(ctx, id, AgentAction::Stop { graceful }, idempotency_key).await
    }

    /// The agent takes no new tasks and its processes are suspended (SIGSTOP); it stays
    /// paused across restarts until `resumeAgent`.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn pause_agent(
        &self,
        ctx: &Context<'_>,
        id: ID,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Agent> {
        act(ctx, id, AgentAction::Pause, idempotency_key).await
    }

    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn resume_agent(
        &self,
        ctx: &Context<'_>,
        id: ID,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Agent> {
        act(ctx, id, AgentAction::Resume, idempotency_key).await
    }

    /// Stops the agent (its tasks go back to the queue, not charged) and starts it again with
    /// its current spec.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn restart_agent(
        &self,
        ctx: &Context<'_>,
        id: ID,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Agent> {
        act(ctx, id, AgentAction::Restart, idempotency_key).await
    }

    /// Stops the agent if it runs and deletes it with its checkpoints; answers its last view.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn remove_agent(
        &self,
        ctx: &Context<'_>,
        id: ID,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Agent> {
        act(ctx, id, AgentAction::Remove, idempotency_key).await
    }

    /// Changes the agent's spec; the change applies at its next start.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn update_agent(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateAgentInput,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Agent> {
        let update = AgentUpdate::try_from(input).gql()?;
        act(ctx, id, AgentAction::Update(update), idempotency_key).await
    }

    /// Takes the agent's state through its backend (the `counter` builtin, process agents)
    /// and keeps it; INVALID_INPUT when its backend keeps no state.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn checkpoint_agent(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(default)] description: String,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Checkpoint> {
        let api = ctx.data::<Api>()?;
        Ok(Checkpoint(
            api.agents().checkpoint(&id, description, idempotency_key).await.gql()?,
        ))
    }

    /// Puts a checkpoint's state back into the running agent (or at its next start).
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn rollback_agent(
        &self,
        ctx: &Context<'_>,
        id: ID,
        checkpoint_id: ID,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Agent> {
        let action = AgentAction::Rollback {
            checkpoint: checkpoint_id.0,
        };
        act(ctx, id, action, idempotency_key).await
    }
}

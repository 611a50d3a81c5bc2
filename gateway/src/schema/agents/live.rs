//! What an agent's actor says of itself (usage, health), its checkpoints, and the
//! `agentUpdates` subscription.

use async_graphql::{Context, Object, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use troupe_actors::agent::{AgentView, Usage};
use troupe_actors::service::AgentLive;
use troupe_actors::Api;
use troupe_runtime::auth::Role;

use super::Agent;
use crate::auth::RoleGuard;
use crate::error::{coded, OrGql};
use crate::schema::Int64;

pub struct Checkpoint(pub troupe_actors::agent::Checkpoint);

#[Object]
impl Checkpoint {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn agent_id(&self) -> ID {
        ID(self.0.agent_id.clone())
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn description(&self) -> &str {
        &self.0.description
    }
    /// The size of the saved state, as JSON text.
    async fn size_bytes(&self) -> Int64 {
        self.0.size_bytes.into()
    }
}

pub struct AgentUsage(pub Usage);

#[Object]
impl AgentUsage {
    /// Resident memory of the agent's processes now.
    async fn rss_bytes(&self) -> Int64 {
        self.0.rss_bytes.into()
    }
    /// CPU time (user + system) of the agent's processes alive now.
    async fn cpu_seconds(&self) -> f64 {
        self.0.cpu_seconds
    }
    async fn processes(&self) -> i32 {
        self.0.processes as i32
    }
}

#[derive(SimpleObject)]
pub struct AgentHealth {
    /// False while UNHEALTHY (silent past its heartbeat interval) or not running.
    pub healthy: bool,
    /// When a process agent last showed a sign of life.
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub tasks_in_flight: i32,
    pub restarts: i32,
    /// Over the last attempts (up to 100) on this node since the scheduler started.
    pub recent_attempts: i32,
    pub success_rate: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
}

impl AgentHealth {
    pub fn new(view: &AgentView, live: Option<AgentLive>) -> Self {
        let recent = view.stats.recent;
        Self {
            healthy: live.as_ref().is_some_and(|l| l.healthy),
            last_heartbeat: live.and_then(|l| l.last_heartbeat),
            tasks_in_flight: view.stats.running as i32,
            restarts: view.status.restarts as i32,
            recent_attempts: recent.attempts as i32,
            success_rate: recent.success_rate,
            latency_p50_ms: recent.latency_p50_ms,
            latency_p95_ms: recent.latency_p95_ms,
        }
    }
}

#[derive(Default)]
pub struct AgentsSubscription;

#[Subscription]
impl AgentsSubscription {
    /// The agent now, then after every change of it; ends when the agent is removed.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn agent_updates(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Agent>>> {
        let api = ctx.data::<Api>()?.clone();
        // The cursor before the read, so no change falls between the two.
        let after = api.last_seq().await.gql()?;
        let first = api
            .agents()
            .get(&id)
            .await
            .gql()?
            .ok_or_else(|| coded("NOT_FOUND", format!("no agent {}", id.0)))?;
        let changes = crate::schema::events::changes_of(&api, &id, api.agents().holds(&id), after);
        let state = (api, id.0, Some(first), None::<AgentView>, changes);
        Ok(futures::stream::unfold(
            state,
            |(api, id, mut pending, mut last, mut changes)| async move {
                loop {
                    if let Some(view) = pending.take() {
                        if last.as_ref() != Some(&view) {
                            last = Some(view.clone());
                            return Some((Ok(Agent::from(view)), (api, id, None, last, changes)));
                        }
                    }
                    changes.next().await?;
                    match api.agents().get(&id).await {
                        Ok(Some(view)) => pending = Some(view),
                        Ok(None) => return None,
                        Err(e) => {
                            return Some((
                                Err::<Agent, _>(e).gql(),
                                (api, id, None, last, futures::stream::empty().boxed()),
                            ))
                        }
                    }
                }
            },
        ))
    }
}

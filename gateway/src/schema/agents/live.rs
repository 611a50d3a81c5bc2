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
use crate::error::OrGql;
use crate::schema::updates::Follow;
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

/// A line an exec or process agent wrote (docs/agents.md, "Logs").
#[derive(SimpleObject)]
pub struct LogLine {
    /// Increasing with each line of the agent: a cursor for `agentLogs(after:)`.
    pub seq: Int64,
    pub at: DateTime<Utc>,
    /// `stdout`, `stderr`, or `log` (a process agent's `log` line, prefixed by its level).
    pub stream: String,
    pub line: String,
    /// The task whose attempt wrote it (an exec agent's lines).
    pub task_id: Option<ID>,
}

impl From<troupe_actors::agent::LogLine> for LogLine {
    fn from(l: troupe_actors::agent::LogLine) -> Self {
        Self {
            seq: l.seq.into(),
            at: l.at,
            stream: l.stream,
            line: l.line,
            task_id: l.task.map(ID),
        }
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
    /// From the agent as this node's replica has it, and what its node says of it now
    /// (its scheduler's live counters included).
    pub fn new(view: &AgentView, live: Option<AgentLive>) -> Self {
        let stats = live.as_ref().and_then(|l| l.stats).unwrap_or(view.stats);
        let recent = stats.recent;
        Self {
            healthy: live.as_ref().is_some_and(|l| l.healthy),
            last_heartbeat: live.and_then(|l| l.last_heartbeat),
            tasks_in_flight: stats.running as i32,
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
        let follow = Follow {
            noun: "agent",
            read: |api, id| Box::pin(async move { api.agents().get(&id).await }),
            changed: |sent, now| sent != now,
            last: |_| false,
            gone_is_error: false,
            show: Agent::from,
        };
        crate::schema::updates::follow(ctx.data::<Api>()?, &id, follow).await
    }

    /// The lines the agent writes from now on, or after `after` (a `seq` of
    /// `agentLogs`), as this node applies them.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn agent_log_lines(
        &self,
        ctx: &Context<'_>,
        id: ID,
        after: Option<Int64>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<LogLine>>> {
        let after = crate::schema::events::cursor(after)?;
        let lines = ctx.data::<Api>()?.agents().follow_logs(&id, after).await.gql()?;
        Ok(lines.map(|l| l.map(LogLine::from).gql()))
    }
}

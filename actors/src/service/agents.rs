//! The agents service: create, act on (start, stop, pause, ...), checkpoint, look up, list
//! and count agents, wherever they live: a request about an agent goes to the agents service
//! of the node that holds it.

mod lifecycle;
mod local;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::context::Context;
use super::listing::{Counted, Listing};
use crate::agent::{AgentFilter, AgentPolicy, AgentView, Checkpoint, Probe, SpawnAgentRequest, Usage};
use crate::cluster::remote::{service, At, Located};
use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::slots::Slots;

service! {
    service Agents as "agents" (AgentsMsg, AgentsRequest, AgentsResponse, AgentsLocal);
    /// Spawns an agent on this node.
    keyed Spawn => spawn(request: Box<SpawnAgentRequest>) -> AgentView;
    /// Acts on an agent of this node (start, stop, pause, ...).
    keyed Act => act(id: String, action: AgentAction) -> AgentView;
    /// Takes a checkpoint of an agent of this node.
    keyed Checkpoint => checkpoint(id: String, description: String) -> Checkpoint;
    call Checkpoints => checkpoints(id: String) -> Vec<Checkpoint>;
    call Live => live(id: String) -> Option<AgentLive>;
}

/// What can be done to an existing agent (the agent room's own word for it).
pub use crate::agent::Action as AgentAction;

/// What an agent's actor says of itself now: usage of its processes and health.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentLive {
    pub usage: Option<Usage>,
    /// When the backend last showed a sign of life (process agents).
    pub last_heartbeat: Option<chrono::DateTime<chrono::Utc>>,
    pub healthy: bool,
    pub paused: bool,
    pub process_groups: Vec<u32>,
    /// Its counters as its node's scheduler holds them now: the tasks it runs, its breaker
    /// and the figures of its recent attempts live there only.
    #[serde(default)]
    pub stats: Option<crate::agent::AgentStats>,
}

impl AgentLive {
    pub(crate) fn from_probe(p: Probe) -> Self {
        let now = troupe_runtime::clock::now();
        Self {
            usage: p.usage,
            last_heartbeat: p
                .silent_for
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .map(|d| now - d),
            healthy: p.healthy,
            paused: p.paused,
            process_groups: p.process_groups,
            stats: None,
        }
    }
}

#[derive(Clone)]
pub struct Agents {
    pub(crate) ctx: Arc<Context>,
    /// Where this node's agents and their supervisors are found.
    pub(crate) slots: Slots,
    /// What every agent's child spec shares (restarts, shutdown, secrets).
    pub(crate) policy: AgentPolicy,
}

impl Located for Agents {
    fn cluster(&self) -> &Cluster {
        &self.ctx.cluster
    }
}

impl Agents {
    /// Spawns an agent on this node, or on `request.node`.
    pub async fn spawn(&self, mut request: SpawnAgentRequest, key: Option<String>) -> Result<AgentView, ApiError> {
        request.validate()?;
        let node = request.node.take();
        At::on(self, node.as_deref()).spawn(Box::new(request), key).await
    }

    /// Whether this node holds the agent.
    pub fn holds(&self, id: &str) -> bool {
        self.ctx.cluster.holds(id)
    }

    /// Acts on an agent wherever it lives.
    pub async fn act(&self, id: &str, action: AgentAction, key: Option<String>) -> Result<AgentView, ApiError> {
        At::holding(self, id).act(id.to_owned(), action, key).await
    }

    /// Stops an agent; its running tasks go back to the queue without losing an attempt.
    pub async fn stop(&self, id: &str, key: Option<String>) -> Result<AgentView, ApiError> {
        self.act(id, AgentAction::Stop { graceful: false }, key).await
    }

    /// Takes a checkpoint of the agent's state through its backend and keeps it.
    pub async fn checkpoint(&self, id: &str, description: String, key: Option<String>) -> Result<Checkpoint, ApiError> {
        At::holding(self, id).checkpoint(id.to_owned(), description, key).await
    }

    /// The agent's checkpoints, oldest first.
    pub async fn checkpoints(&self, id: &str) -> Result<Vec<Checkpoint>, ApiError> {
        At::holding(self, id).checkpoints(id.to_owned()).await
    }

    /// What the agent's actor says of itself now; `None` when it is not running.
    pub async fn live(&self, id: &str) -> Result<Option<AgentLive>, ApiError> {
        At::holding(self, id).live(id.to_owned()).await
    }

    /// An agent, wherever it runs, from this node's replica. One this replica does not hold
    /// yet may have been spawned elsewhere a moment ago: before saying there is none, this
    /// node catches up with what the cluster committed (a linearizable read).
    pub async fn get(&self, id: &str) -> Result<Option<AgentView>, ApiError> {
        if let Some(found) = self.get_local(id).await? {
            return Ok(Some(found));
        }
        self.ctx.store.linearize().await?;
        self.get_local(id).await
    }

    /// The cluster's agents in id order after the cursor, from this node's replica.
    pub async fn list(
        &self,
        after: Option<String>,
        first: usize,
        filter: AgentFilter,
    ) -> Result<Listing<AgentView>, ApiError> {
        let (items, more) = self.list_local(after, first, &filter).await?;
        Ok(Listing::local(items, more))
    }

    /// How many agents the cluster has that pass the filter, from this node's replica.
    pub async fn count(&self, filter: AgentFilter) -> Result<Counted, ApiError> {
        Ok(Counted::local(self.count_local(&filter).await?))
    }
}

impl AgentsLocal for Agents {
    // A peer's request is checked like a local one.
    async fn spawn(&self, request: Box<SpawnAgentRequest>, key: Option<String>) -> Result<AgentView, ApiError> {
        request.validate()?;
        self.spawn_local(*request, key.as_deref()).await
    }

    async fn act(&self, id: String, action: AgentAction, key: Option<String>) -> Result<AgentView, ApiError> {
        // Run to the end even if the caller goes away (a client gone, an HTTP timeout): a
        // stop abandoned half-way would leave the agent closed but running.
        let me = self.clone();
        tokio::spawn(async move { me.act_local(&id, action, key.as_deref()).await })
            .await
            .map_err(|e| ApiError::Internal(format!("the agent mutation did not finish: {e}")))?
    }

    async fn checkpoint(&self, id: String, description: String, key: Option<String>) -> Result<Checkpoint, ApiError> {
        self.checkpoint_local(&id, description, key.as_deref()).await
    }

    async fn checkpoints(&self, id: String) -> Result<Vec<Checkpoint>, ApiError> {
        Ok(crate::agent::checkpoints::list(&self.ctx.store, &id).await?)
    }

    async fn live(&self, id: String) -> Result<Option<AgentLive>, ApiError> {
        self.live_local(&id).await
    }
}

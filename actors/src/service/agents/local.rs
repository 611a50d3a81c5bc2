//! The agents service's work on this node's own agents: each a delegation to the agent
//! room's [`Registry`], lent the service's handles.

use crate::agent::{AgentFilter, AgentView, Owner, Registry, SpawnAgentRequest};
use crate::error::ApiError;
use crate::tables::AGENTS;

use super::Agents;

impl Agents {
    /// This node's agents, as the agent room keeps them.
    pub(super) fn registry(&self) -> Registry<'_> {
        Registry {
            node: &self.ctx.node_name,
            store: &self.ctx.store,
            slots: &self.slots,
            policy: &self.policy,
            idempotency: &self.ctx.idempotency,
            serving: &self.ctx.serving,
        }
    }

    pub(crate) async fn spawn_local(&self, req: SpawnAgentRequest, key: Option<&str>) -> Result<AgentView, ApiError> {
        self.registry().spawn(req, key).await
    }

    pub(crate) async fn create_local(
        &self,
        req: SpawnAgentRequest,
        owner: Owner,
        guard: Option<troupe_runtime::idempotency::Guard>,
    ) -> Result<AgentView, ApiError> {
        self.registry().create(req, owner, guard).await
    }

    pub(crate) async fn owned(&self, owner: &Owner) -> Result<Vec<AgentView>, ApiError> {
        self.registry().owned(owner).await
    }

    pub(crate) async fn get_local(&self, id: &str) -> Result<Option<AgentView>, ApiError> {
        self.registry().get(id).await
    }

    /// The cluster's agents in id order, after the cursor, from this node's replica; the
    /// flag says whether more follow.
    pub(crate) async fn list_local(
        &self,
        after: Option<String>,
        first: usize,
        filter: &AgentFilter,
    ) -> Result<(Vec<AgentView>, bool), ApiError> {
        let (page, more) =
            crate::tables::page(&self.ctx.store, AGENTS, after, first, crate::agent::matching(filter)).await?;
        Ok((self.registry().views(page).await, more))
    }

    pub(crate) async fn count_local(&self, filter: &AgentFilter) -> Result<u64, ApiError> {
        self.registry().count(filter).await
    }

    /// How many agents of the cluster are in each state, from this node's replica, in one
    /// pass.
    pub async fn count_by_state(&self) -> Result<std::collections::HashMap<crate::agent::AgentState, u64>, ApiError> {
        self.registry().count_by_state().await
    }
}

impl Agents {
    /// The agent room's handle that starts here the agents the cluster moved to this node.
    pub(crate) fn adopter(&self) -> crate::agent::Adopter {
        crate::agent::Adopter {
            node: self.ctx.node_name.clone(),
            store: self.ctx.store.clone(),
            slots: self.slots.clone(),
            policy: self.policy.clone(),
            idempotency: self.ctx.idempotency.clone(),
            serving: self.ctx.serving.clone(),
        }
    }
}

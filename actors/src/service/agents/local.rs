//! The agents service's work on this node's own agents: each a delegation to the agent
//! room's [`Registry`], lent the context's handles.

use ractor::ActorRef;
use troupe_runtime::supervision::SupervisorMsg;

use crate::agent::{AgentFilter, AgentView, Owner, Registry, SpawnAgentRequest, Supervisors};
use crate::error::ApiError;
use crate::service::context::Context;
use crate::service::listing::page_local;
use crate::tables::AGENTS;

use super::Agents;

impl Agents {
    /// This node's agents, as the agent room keeps them.
    pub(super) fn registry(&self) -> Registry<'_> {
        Registry {
            node: &self.ctx.node_name,
            store: &self.ctx.store,
            slots: &self.ctx.slots,
            policy: &self.ctx.agent_policy,
            idempotency: &self.ctx.idempotency,
            supervisors: &*self.ctx,
            draining: &self.ctx.draining,
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

    /// This node's agents in id order, after the cursor; the flag says whether more follow.
    pub(crate) async fn list_local(
        &self,
        after: Option<String>,
        first: usize,
        filter: &AgentFilter,
    ) -> Result<(Vec<AgentView>, bool), ApiError> {
        let (page, more) = page_local(&self.ctx.store, AGENTS, after, first, crate::agent::matching(filter)).await?;
        Ok((self.registry().views(page).await, more))
    }

    pub(crate) async fn count_local(&self, filter: &AgentFilter) -> Result<u64, ApiError> {
        self.registry().count(filter).await
    }
}

impl Supervisors for Context {
    fn of(&self, owner: &Owner) -> Result<ActorRef<SupervisorMsg>, ApiError> {
        self.supervisor_of(owner)
    }
}

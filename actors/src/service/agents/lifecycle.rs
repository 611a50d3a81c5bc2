//! The agents service acting on this node's agents: each a delegation to the agent room
//! (`agent::lifecycle`, `agent::checkpoints`).

use super::{AgentAction, AgentLive, Agents};
use crate::agent::{AgentView, Checkpoint, Owner};
use crate::error::ApiError;

impl Agents {
    pub(crate) async fn act_local(
        &self,
        id: &str,
        action: AgentAction,
        key: Option<&str>,
    ) -> Result<AgentView, ApiError> {
        self.registry().act(id, action, key).await
    }

    pub(crate) async fn checkpoint_local(
        &self,
        id: &str,
        description: String,
        key: Option<&str>,
    ) -> Result<Checkpoint, ApiError> {
        self.registry().checkpoint(id, description, key).await
    }

    pub(crate) async fn live_local(&self, id: &str) -> Result<Option<AgentLive>, ApiError> {
        let Some(probe) = self.registry().live(id).await? else {
            return Ok(None);
        };
        let mut live = AgentLive::from_probe(probe);
        live.stats = self.registry().get(id).await?.map(|view| view.stats);
        Ok(Some(live))
    }

    pub(crate) async fn move_to(&self, id: &str, owner: Owner, capability: &str) -> Result<(), ApiError> {
        self.registry().move_to(id, owner, capability).await
    }
}

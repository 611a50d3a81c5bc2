//! The swarms service: create, scale, retopologise and destroy swarms, their memory and their
//! tasks. A swarm lives on one node, members and coordinator included (its id says which);
//! a request about a peer's swarm is sent to that peer's swarms service, and `swarms` lists
//! the whole cluster's.

use std::sync::Arc;

use troupe_runtime::supervision::SupervisorMsg;

use super::agents::Agents;
use super::context::{ask, Context};
use crate::agent::Owner;
use crate::error::ApiError;
use crate::swarm::{CoordinatorMsg, SwarmSpec, SwarmView};

/// Sends the call to the node holding `$id` when it is a peer, and answers with its answer;
/// on the holder, the method goes on with its own work.
macro_rules! on_peer {
    ($self:ident, $id:expr, $call:ident($($arg:expr),* $(,)?)) => {
        if let Some(node) = $self.ctx.peer_holding($id) {
            return crate::cluster::remote::Peer($self, node).$call($($arg),*).await;
        }
    };
}

mod change;
mod create;
mod destroy;
mod peer;
mod port;
mod work;

#[derive(Clone)]
pub struct Swarms {
    pub(crate) ctx: Arc<Context>,
    /// One writer at a time per swarm's memory, spec and status, and per swarm task record.
    pub(crate) locks: crate::swarm::Locks,
    /// Wakes swarm conductors waiting on tasks and members.
    pub(crate) watch: crate::swarm::Watch,
}

impl Swarms {
    /// Whether this node holds the swarm (or swarm task) with this id.
    pub fn holds(&self, id: &str) -> bool {
        self.ctx.holds(id)
    }

    /// Refuses an agent of a peer: a swarm's members live on its node.
    fn local(&self, agent: &str) -> Result<(), ApiError> {
        match self.ctx.peer_holding(agent) {
            Some(node) => Err(ApiError::invalid(format!(
                "agent {agent} lives on node {node}: a swarm's members live on the swarm's node"
            ))),
            None => Ok(()),
        }
    }

    fn agents(&self) -> Agents {
        Agents { ctx: self.ctx.clone() }
    }

    /// A swarm of this node with its members.
    pub async fn get(&self, id: &str) -> Result<SwarmView, ApiError> {
        on_peer!(self, id, get(id.to_owned()));
        let spec = crate::swarm::load_spec(&self.ctx.store, id).await?;
        let status = crate::swarm::load_status(&self.ctx.store, id).await?;
        let members = self
            .agents()
            .owned(&Owner::Swarm(id.to_owned()))
            .await?
            .into_iter()
            .map(|v| v.spec.id)
            .collect();
        let teams = crate::swarm::teams_of(&self.ctx.store, Some(id)).await?;
        Ok(SwarmView {
            spec,
            status,
            members,
            teams,
        })
    }

    /// The supervisor a swarm's subtree runs under: its parent swarm's for a sub-team, else
    /// the node's `swarms`.
    fn parent_supervisor(&self, spec: &SwarmSpec) -> Result<ractor::ActorRef<SupervisorMsg>, ApiError> {
        match &spec.lead {
            Some(lead) => {
                self.ctx.slots.swarm_supervisors.get(&lead.swarm).ok_or_else(|| {
                    ApiError::Unavailable(format!("the supervisor of swarm {} is not running", lead.swarm))
                })
            }
            None => self
                .ctx
                .slots
                .swarms
                .get()
                .ok_or_else(|| ApiError::Unavailable("the swarms supervisor is not running".into())),
        }
    }

    /// The team `agent` leads, if any.
    async fn led_by(&self, agent: &str) -> Result<Option<String>, ApiError> {
        let teams = crate::swarm::teams(&self.ctx.store, None).await?;
        Ok(teams
            .into_iter()
            .find(|(_, _, leader)| leader == agent)
            .map(|(_, team, _)| team))
    }

    /// The cluster's swarms (of the nodes that answer), sub-teams included, in id order.
    pub async fn list(&self) -> Result<Vec<SwarmView>, ApiError> {
        let gathered = crate::cluster::remote::Everywhere(self).list().await?;
        let mut all: Vec<SwarmView> = gathered.answers.into_iter().flatten().collect();
        all.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
        Ok(all)
    }

    async fn list_local(&self) -> Result<Vec<SwarmView>, ApiError> {
        let ids = crate::swarm::ids(&self.ctx.store).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.get(&id).await?);
        }
        Ok(out)
    }

    fn coordinator(&self, id: &str) -> Result<ractor::ActorRef<CoordinatorMsg>, ApiError> {
        self.ctx
            .slots
            .coordinators
            .get(id)
            .filter(|c| c.get_status() == ractor::ActorStatus::Running)
            .ok_or_else(|| ApiError::Unavailable(format!("the coordinator of swarm {id} is not running")))
    }

    /// Fails the swarm's coordinator (an injected fault: `--fault-injection` only).
    pub async fn crash_coordinator(&self, id: &str) -> Result<(), ApiError> {
        on_peer!(self, id, crash_coordinator(id.to_owned()));
        if !self.ctx.fleet.settings.fault_injection {
            return Err(ApiError::Forbidden(
                "fault injection is disabled on this node; start it with --fault-injection".into(),
            ));
        }
        let coordinator = self.coordinator(id)?;
        ask(&coordinator, CoordinatorMsg::Crash, "the swarm's coordinator").await
    }

    async fn owner_of(&self, agent: &str) -> Result<Owner, ApiError> {
        self.local(agent)?;
        let view = self.agents().get(agent).await?;
        Ok(view
            .ok_or_else(|| ApiError::NotFound(format!("no agent {agent}")))?
            .spec
            .owner)
    }
}

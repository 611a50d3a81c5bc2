//! A swarm of this node as the room reads it: its view, its queue, the actors that run it,
//! and who owns or leads what.

use ractor::ActorRef;
use troupe_runtime::supervision::SupervisorMsg;

use super::{CoordinatorMsg, Port, SwarmSpec, SwarmView};
use crate::agent::Owner;
use crate::call::ask;
use crate::error::ApiError;

impl Port {
    /// A swarm with its members, from this node's replica (wherever the swarm runs).
    pub(crate) async fn view(&self, id: &str) -> Result<SwarmView, ApiError> {
        let spec = super::load_spec(&self.store, id).await?;
        let status = super::load_status(&self.store, id).await?;
        let members = self.members.of(id).await?.into_iter().map(|v| v.spec.id).collect();
        let teams = super::teams_of(&self.store, &self.node, Some(id)).await?;
        Ok(SwarmView {
            spec,
            status,
            members,
            teams,
        })
    }

    /// The cluster's swarms, sub-teams included, in id order, from this node's replica.
    pub(crate) async fn views(&self) -> Result<Vec<SwarmView>, ApiError> {
        let ids = super::ids(&self.store, None).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.view(&id).await?);
        }
        Ok(out)
    }

    /// Tasks running on the swarm's members, and their slots.
    pub(crate) async fn queue(&self, id: &str) -> Result<(u32, u32), ApiError> {
        let members = self.members.of(id).await?;
        let running: u32 = members.iter().map(|m| m.stats.running).sum();
        let slots: u32 = members.iter().map(|m| m.spec.max_concurrent_tasks).sum();
        Ok((running, slots))
    }

    /// Fails the swarm's coordinator (an injected fault: `--fault-injection` only).
    pub(crate) async fn crash_coordinator(&self, id: &str) -> Result<(), ApiError> {
        if !self.fault_injection {
            return Err(ApiError::Forbidden(
                "fault injection is disabled on this node; start it with --fault-injection".into(),
            ));
        }
        let coordinator = self.coordinator(id)?;
        ask(&coordinator, CoordinatorMsg::Crash, "the swarm's coordinator").await
    }

    pub(super) fn coordinator(&self, id: &str) -> Result<ActorRef<CoordinatorMsg>, ApiError> {
        self.slots
            .coordinators
            .get(id)
            .filter(|c| c.get_status() == ractor::ActorStatus::Running)
            .ok_or_else(|| ApiError::Unavailable(format!("the coordinator of swarm {id} is not running")))
    }

    /// The supervisor a swarm's subtree runs under: its parent swarm's for a sub-team, else
    /// the node's `swarms`.
    pub(super) fn parent_supervisor(&self, spec: &SwarmSpec) -> Result<ActorRef<SupervisorMsg>, ApiError> {
        match &spec.lead {
            Some(lead) => {
                self.slots.swarm_supervisors.get(&lead.swarm).ok_or_else(|| {
                    ApiError::Unavailable(format!("the supervisor of swarm {} is not running", lead.swarm))
                })
            }
            None => self
                .slots
                .swarms
                .get()
                .ok_or_else(|| ApiError::Unavailable("the swarms supervisor is not running".into())),
        }
    }

    /// Forgets the actors of a swarm whose subtree stopped.
    pub(super) fn forget_actors(&self, id: &str) {
        self.slots.members.remove(id);
        self.slots.coordinators.remove(id);
        self.slots.swarm_supervisors.remove(id);
    }

    /// The team `agent` leads, if any.
    pub(super) async fn led_by(&self, agent: &str) -> Result<Option<String>, ApiError> {
        let teams = super::teams(&self.store, None).await?;
        Ok(teams
            .into_iter()
            .find(|(_, _, leader)| leader == agent)
            .map(|(_, team, _)| team))
    }

    /// Refuses an agent of a peer: a swarm's members live on its node.
    pub(super) fn local(&self, agent: &str) -> Result<(), ApiError> {
        match self.members.holder(agent) {
            Some(node) => Err(ApiError::invalid(format!(
                "agent {agent} lives on node {node}: a swarm's members live on the swarm's node"
            ))),
            None => Ok(()),
        }
    }

    pub(super) async fn owner_of(&self, agent: &str) -> Result<Owner, ApiError> {
        self.local(agent)?;
        self.members
            .owner(agent)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no agent {agent}")))
    }
}

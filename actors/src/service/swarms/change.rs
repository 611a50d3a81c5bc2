//! Changes to a running swarm's spec and status: its size (scale, adopt, release) and its
//! topology.

use serde_json::json;
use troupe_runtime::events::NewEvent;

use super::Swarms;
use crate::agent::Owner;
use crate::error::ApiError;
use crate::service::context::ask;
use crate::swarm::{change_records, CoordinatorMsg, SwarmSpec, SwarmView, Topology};

impl Swarms {
    /// Sets the swarm's size (within its bounds) and waits for its coordinator to reach it.
    pub async fn scale(&self, id: &str, size: u32, reason: &str) -> Result<SwarmView, ApiError> {
        on_peer!(self, id, scale(id.to_owned(), size, reason.to_owned()));
        let held = self.locks.hold_spec(id).await;
        change_records(&self.ctx.store, &held, |spec, _| {
            if size < spec.min_agents || size > spec.max_agents {
                return Err(ApiError::invalid(format!(
                    "swarm {} takes {} to {} members, not {size}",
                    spec.name, spec.min_agents, spec.max_agents
                )));
            }
            if size > spec.size && spec.templates.is_empty() {
                return Err(ApiError::invalid("a swarm without templates cannot grow"));
            }
            Ok(Some(resize(spec, size, reason)))
        })
        .await?;
        // The coordinator takes the lock itself (autoscale): it is asked once this is free.
        drop(held);
        let coordinator = self.coordinator(id)?;
        ask(&coordinator, CoordinatorMsg::Reconcile, "the swarm's coordinator").await??;
        self.get(id).await
    }

    pub async fn set_topology(&self, id: &str, topology: Topology) -> Result<SwarmView, ApiError> {
        on_peer!(self, id, set_topology(id.to_owned(), topology));
        let held = self.locks.hold_spec(id).await;
        change_records(&self.ctx.store, &held, |spec, status| {
            let from = std::mem::replace(&mut spec.topology, topology);
            status.active = match topology {
                Topology::Adaptive => status.active,
                t => t,
            };
            let data = json!({ "from": from.as_str(), "to": topology.as_str(), "reason": "setTopology" });
            Ok(Some(NewEvent::new("SWARM_TOPOLOGY_CHANGED", Some(id.to_owned()), data)))
        })
        .await?;
        drop(held);
        self.get(id).await
    }

    /// Makes an agent of this node a member; the swarm's size grows by one. The swarm's spec
    /// lock is held throughout, so two adoptions count twice and one agent is adopted once.
    pub async fn adopt(&self, id: &str, agent: &str) -> Result<SwarmView, ApiError> {
        on_peer!(self, id, adopt(id.to_owned(), agent.to_owned()));
        let held = self.locks.hold_spec(id).await;
        crate::swarm::load_spec(&self.ctx.store, id).await?;
        self.adoptable(agent).await?;
        let (spec, _) = change_records(&self.ctx.store, &held, |spec, _| {
            if spec.size >= spec.max_agents {
                return Err(ApiError::Conflict(format!(
                    "swarm {} is at maxAgents ({})",
                    spec.name, spec.max_agents
                )));
            }
            Ok(Some(resize(spec, spec.size + 1, &format!("adopted agent {agent}"))))
        })
        .await?;
        self.agents()
            .move_to(agent, Owner::Swarm(id.to_owned()), &spec.queue_capability())
            .await?;
        drop(held);
        self.get(id).await
    }

    /// Gives a member back to the node; the swarm's size shrinks by one (under the swarm's
    /// spec lock throughout, as [`Self::adopt`]).
    pub async fn release(&self, id: &str, agent: &str) -> Result<SwarmView, ApiError> {
        on_peer!(self, id, release(id.to_owned(), agent.to_owned()));
        let held = self.locks.hold_spec(id).await;
        crate::swarm::load_spec(&self.ctx.store, id).await?;
        if self.owner_of(agent).await? != Owner::Swarm(id.to_owned()) {
            return Err(ApiError::Conflict(format!(
                "agent {agent} is not a member of swarm {id}"
            )));
        }
        let (spec, _) = change_records(&self.ctx.store, &held, |spec, _| {
            if spec.size <= spec.min_agents {
                return Err(ApiError::Conflict(format!(
                    "swarm {} is at minAgents ({})",
                    spec.name, spec.min_agents
                )));
            }
            Ok(Some(resize(spec, spec.size - 1, &format!("released agent {agent}"))))
        })
        .await?;
        self.agents()
            .move_to(agent, Owner::Node, &spec.queue_capability())
            .await?;
        drop(held);
        self.get(id).await
    }

    /// Refuses an agent that is not this node's own.
    async fn adoptable(&self, agent: &str) -> Result<(), ApiError> {
        if self.owner_of(agent).await? != Owner::Node {
            return Err(ApiError::Conflict(format!("agent {agent} already belongs to a swarm")));
        }
        Ok(())
    }
}

/// Sets the swarm's size; the event that says so and why.
fn resize(spec: &mut SwarmSpec, size: u32, reason: &str) -> NewEvent {
    let from = std::mem::replace(&mut spec.size, size);
    let data = json!({ "from": from, "to": size, "reason": reason });
    NewEvent::new("SWARM_SCALED", Some(spec.id.clone()), data)
}

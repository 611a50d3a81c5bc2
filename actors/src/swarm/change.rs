//! Changes to a running swarm's spec and status: its size (scale, adopt, release) and its
//! topology, each under the swarm's spec lock.

use serde_json::json;
use troupe_runtime::events::NewEvent;

use super::{change_records, CoordinatorMsg, Port, SwarmSpec, SwarmView, Topology};
use crate::agent::Owner;
use crate::call::ask;
use crate::error::ApiError;

impl Port {
    /// Sets the swarm's size (within its bounds) and waits for its coordinator to reach it.
    pub(crate) async fn scale(&self, id: &str, size: u32, reason: &str) -> Result<SwarmView, ApiError> {
        let held = self.locks.hold_spec(id).await;
        change_records(&self.store, &held, |spec, _| {
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
        self.view(id).await
    }

    pub(crate) async fn set_topology(&self, id: &str, topology: Topology) -> Result<SwarmView, ApiError> {
        let held = self.locks.hold_spec(id).await;
        change_records(&self.store, &held, |spec, status| {
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
        self.view(id).await
    }

    /// Makes an agent of this node a member; the swarm's size grows by one. The swarm's spec
    /// lock is held throughout, so two adoptions count twice and one agent is adopted once.
    pub(crate) async fn adopt(&self, id: &str, agent: &str) -> Result<SwarmView, ApiError> {
        let held = self.locks.hold_spec(id).await;
        super::load_spec(&self.store, id).await?;
        self.adoptable(agent).await?;
        let (spec, _) = change_records(&self.store, &held, |spec, _| {
            if spec.size >= spec.max_agents {
                return Err(ApiError::Conflict(format!(
                    "swarm {} is at maxAgents ({})",
                    spec.name, spec.max_agents
                )));
            }
            Ok(Some(resize(spec, spec.size + 1, &format!("adopted agent {agent}"))))
        })
        .await?;
        self.members
            .move_to(agent, Owner::Swarm(id.to_owned()), &spec.queue_capability())
            .await?;
        drop(held);
        self.view(id).await
    }

    /// Gives a member back to the node; the swarm's size shrinks by one (under the swarm's
    /// spec lock throughout, as [`Self::adopt`]).
    pub(crate) async fn release(&self, id: &str, agent: &str) -> Result<SwarmView, ApiError> {
        let held = self.locks.hold_spec(id).await;
        super::load_spec(&self.store, id).await?;
        if self.owner_of(agent).await? != Owner::Swarm(id.to_owned()) {
            return Err(ApiError::Conflict(format!(
                "agent {agent} is not a member of swarm {id}"
            )));
        }
        let (spec, _) = change_records(&self.store, &held, |spec, _| {
            if spec.size <= spec.min_agents {
                return Err(ApiError::Conflict(format!(
                    "swarm {} is at minAgents ({})",
                    spec.name, spec.min_agents
                )));
            }
            Ok(Some(resize(spec, spec.size - 1, &format!("released agent {agent}"))))
        })
        .await?;
        self.members
            .move_to(agent, Owner::Node, &spec.queue_capability())
            .await?;
        drop(held);
        self.view(id).await
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

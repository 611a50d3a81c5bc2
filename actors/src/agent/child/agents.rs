//! The supervisor of a set of agents: the node's `agents` (a child of `core`), or a swarm's
//! `members` (a child of the swarm's supervisor).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{ActorProcessingErr, ActorRef};
use troupe_runtime::store::Store;
use troupe_runtime::supervision::{Backoff, ChildSpec, Nest, StartOrder, Strategy, SupervisorArgs, SupervisorMsg};

use super::{AgentChild, AgentPolicy};
use crate::agent::checkpoints;
use crate::agent::spec::{AgentSpec, Desired, Owner};
use crate::agent::status::{AgentState, AgentStatus};
use crate::agent::Slots;
use crate::tables::{AGENTS, AGENT_STATUS};

/// Each start rebuilds the supervisor with every agent it owns that the user wants running
/// (or paused) and that was not given up on (a FAILED agent stays FAILED until someone acts
/// on it). It never escalates: each agent has its own intensity.
pub struct AgentsChild {
    /// This node's name: it runs the agents it holds.
    pub node: String,
    pub store: Store,
    pub slots: Slots,
    pub policy: AgentPolicy,
    pub backoff: Backoff,
    /// Whose agents these are.
    pub owner: Owner,
    /// One for one (the node's), or as the swarm asks.
    pub strategy: Strategy,
}

impl Nest for AgentsChild {
    fn id(&self) -> &str {
        self.owner.supervisor()
    }

    fn start_timeout(&self) -> Duration {
        // Reading every agent's spec from the store is bounded by the store, not by agents.
        Duration::from_secs(60)
    }

    fn args(&self) -> BoxFuture<'static, Result<SupervisorArgs, ActorProcessingErr>> {
        let (store, slots, policy) = (self.store.clone(), self.slots.clone(), self.policy.clone());
        let node = self.node.clone();
        let (owner, strategy, backoff) = (self.owner.clone(), self.strategy, self.backoff);
        Box::pin(async move {
            // Lifecycle records of the previous incarnation land before we read.
            store.flush().await?;
            let wanted = owner.clone();
            let node = node.clone();
            let owned = store
                .view(move |v| {
                    let mut out = Vec::new();
                    v.scan(AGENTS, None, |id, bytes| {
                        // Every member's agents are in the store; this node runs its own.
                        if !crate::cluster::directory::held_in(v, id, &node)? {
                            return Ok(true);
                        }
                        let spec: AgentSpec = troupe_runtime::codec::decode(bytes)?;
                        if spec.owner == wanted && spec.desired != Desired::Stopped {
                            let status: AgentStatus = match v.get(AGENT_STATUS, id)? {
                                Some(b) => troupe_runtime::codec::decode(&b)?,
                                None => AgentStatus::new(AgentState::Starting),
                            };
                            if status.state != AgentState::Failed {
                                let latest = checkpoints::latest_in(v, id)?;
                                out.push((spec, status, latest));
                            }
                        }
                        Ok(true)
                    })?;
                    Ok(out)
                })
                .await?;
            let children = owned
                .into_iter()
                .map(|(spec, status, latest)| {
                    let child = Arc::new(AgentChild::new(
                        spec,
                        status,
                        slots.clone(),
                        store.clone(),
                        policy.clone(),
                    ));
                    child.set_latest_checkpoint(latest);
                    slots.handles.insert(child.clone());
                    child as Arc<dyn ChildSpec>
                })
                .collect();
            Ok(SupervisorArgs {
                name: owner.supervisor().into(),
                strategy,
                intensity: None,
                backoff,
                children,
                start_order: StartOrder::Concurrent,
                store,
            })
        })
    }

    fn started(&self, supervisor: &ActorRef<SupervisorMsg>) -> BoxFuture<'static, ()> {
        match self.owner.swarm() {
            None => self.slots.agents.set(supervisor.clone()),
            Some(swarm) => self.slots.members.set(swarm, supervisor.clone()),
        }
        Box::pin(async {})
    }
}

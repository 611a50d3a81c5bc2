//! The supervisor of a set of agents: the node's `agents` (a child of `core`), or a swarm's
//! `members` (a child of the swarm's supervisor).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr};
use troupe_runtime::store::Store;
use troupe_runtime::supervision::{Backoff, ChildSpec, Shutdown, StartOrder, Strategy, Supervisor, SupervisorArgs};

use super::{AgentChild, AgentPolicy};
use crate::agent::checkpoints;
use crate::agent::spec::{AgentSpec, Desired, Owner};
use crate::agent::status::{AgentState, AgentStatus};
use crate::slots::Slots;
use crate::tables::{AGENTS, AGENT_STATUS};

/// Each start rebuilds the supervisor with every agent it owns that the user wants running
/// (or paused) and that was not given up on (a FAILED agent stays FAILED until someone acts
/// on it). It never escalates: each agent has its own intensity.
pub struct AgentsChild {
    pub store: Store,
    pub slots: Slots,
    pub policy: AgentPolicy,
    pub backoff: Backoff,
    /// Whose agents these are.
    pub owner: Owner,
    /// One for one (the node's), or as the swarm asks.
    pub strategy: Strategy,
}

impl ChildSpec for AgentsChild {
    fn id(&self) -> &str {
        self.owner.supervisor()
    }

    fn kind(&self) -> &str {
        "SUPERVISOR"
    }

    fn shutdown(&self) -> Shutdown {
        Shutdown::Infinity
    }

    fn is_supervisor(&self) -> bool {
        true
    }

    fn start_timeout(&self) -> Duration {
        // Reading every agent's spec from the store is bounded by the store, not by agents.
        Duration::from_secs(60)
    }

    fn start(self: Arc<Self>, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>> {
        Box::pin(async move {
            // Lifecycle records of the previous incarnation land before we read.
            self.store.flush().await?;
            let owner = self.owner.clone();
            let owned = self
                .store
                .view(move |v| {
                    let mut out = Vec::new();
                    v.scan(AGENTS, None, |id, bytes| {
                        let spec: AgentSpec = troupe_runtime::codec::decode(bytes)?;
                        if spec.owner == owner && spec.desired != Desired::Stopped {
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
                        self.slots.clone(),
                        self.store.clone(),
                        self.policy.clone(),
                    ));
                    child.set_latest_checkpoint(latest);
                    self.slots.handles.insert(child.clone());
                    child as Arc<dyn ChildSpec>
                })
                .collect();
            let args = SupervisorArgs {
                name: self.owner.supervisor().into(),
                strategy: self.strategy,
                intensity: None,
                backoff: self.backoff,
                children,
                start_order: StartOrder::Concurrent,
                store: self.store.clone(),
            };
            let (sup, _) = Actor::spawn_linked(None, Supervisor, args, supervisor).await?;
            match self.owner.swarm() {
                None => self.slots.agents.set(sup.clone()),
                Some(swarm) => self.slots.members.set(swarm, sup.clone()),
            }
            Ok(sup.get_cell())
        })
    }
}

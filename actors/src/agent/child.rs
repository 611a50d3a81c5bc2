//! How the supervision tree (re)creates agents: one [`AgentChild`] per agent, and the
//! [`AgentsChild`] that rebuilds the node's agents supervisor from the agents it owns.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr};
use serde_json::json;
use troupe_runtime::store::{Batch, Op, Store};
use troupe_runtime::supervision::{
    Backoff, ChildEvent, ChildSpec, Intensity, Shutdown, StartOrder, Strategy, Supervisor, SupervisorArgs,
};

use super::actor::AgentActor;
use super::spec::{AgentSpec, Desired, Owner};
use super::status::{gauge_moved, AgentState, AgentStatus};
use crate::scheduler::{Down, SchedulerMsg};
use crate::slots::Slots;
use crate::tables::{AGENTS, AGENT_STATUS};

/// What every agent's child spec shares.
#[derive(Debug, Clone, Copy)]
pub struct AgentPolicy {
    /// Each agent's own restart intensity: past it, that agent alone is FAILED.
    pub intensity: Intensity,
    pub shutdown: Shutdown,
}

pub struct AgentChild {
    spec: Arc<AgentSpec>,
    status: Mutex<AgentStatus>,
    /// The pid of the actor running now, so a down report names the right incarnation.
    current: Mutex<Option<u64>>,
    slots: Slots,
    policy: AgentPolicy,
}

impl AgentChild {
    pub fn new(spec: AgentSpec, status: AgentStatus, slots: Slots, policy: AgentPolicy) -> Self {
        Self {
            spec: Arc::new(spec),
            status: Mutex::new(status),
            current: Mutex::new(None),
            slots,
            policy,
        }
    }

    pub fn status(&self) -> AgentStatus {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ChildSpec for AgentChild {
    fn id(&self) -> &str {
        &self.spec.id
    }

    fn kind(&self) -> &str {
        "AGENT"
    }

    fn intensity(&self) -> Option<Intensity> {
        Some(self.policy.intensity)
    }

    fn shutdown(&self) -> Shutdown {
        self.policy.shutdown
    }

    fn start(self: Arc<Self>, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>> {
        Box::pin(async move {
            let scheduler = self.slots.scheduler.get().ok_or("the scheduler is not running")?;
            let actor = AgentActor {
                spec: self.spec.clone(),
                scheduler,
            };
            let (agent, _) = Actor::spawn_linked(None, actor, (), supervisor).await?;
            *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(agent.get_id().pid());
            Ok(agent.get_cell())
        })
    }

    fn lifecycle(&self, event: &ChildEvent, batch: &mut Batch) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let before = status.state;
        match event {
            ChildEvent::Started => status.state = AgentState::Running,
            ChildEvent::Restarted { .. } => {
                // The status keeps the agent's own count; the supervisor's starts again when
                // the supervisor is rebuilt.
                status.state = AgentState::Running;
                status.restarts += 1;
            }
            ChildEvent::Failed { reason, restarting } => {
                status.state = if *restarting {
                    AgentState::Restarting
                } else {
                    AgentState::Failed
                };
                status.last_error = Some(reason.clone());
            }
            ChildEvent::Stopped => status.state = AgentState::Stopped,
        }
        status.updated_at = troupe_runtime::clock::now();
        gauge_moved(Some(before), Some(status.state));
        let down = match event {
            ChildEvent::Failed { reason, .. } => Some(Down::Failed(reason.clone())),
            ChildEvent::Stopped => Some(Down::Stopped),
            _ => None,
        };
        let incarnation = *self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(down), Some(scheduler), Some(incarnation)) = (down, self.slots.scheduler.get(), incarnation) {
            let _ = scheduler.cast(SchedulerMsg::AgentDown {
                id: self.spec.id.clone(),
                incarnation,
                down,
            });
        }
        match troupe_runtime::codec::encode(&*status) {
            Ok(bytes) => batch.push(Op::Put {
                table: AGENT_STATUS,
                key: self.spec.id.clone(),
                value: bytes,
            }),
            Err(e) => tracing::error!(agent = %self.spec.id, error = %e, "cannot encode agent status"),
        }
    }

    fn event_data(&self) -> serde_json::Value {
        let restarts = self.status.lock().map(|s| s.restarts).unwrap_or(0);
        json!({ "name": self.spec.name, "node": self.spec.node, "agentRestarts": restarts })
    }
}

/// The node's agents supervisor as a child of `core`: each start rebuilds it with every
/// agent it owns that the user wants running and that was not given up on (a FAILED agent
/// stays FAILED until someone acts on it). It never escalates: each agent has its own
/// intensity.
pub struct AgentsChild {
    pub store: Store,
    pub slots: Slots,
    pub policy: AgentPolicy,
    pub backoff: Backoff,
}

impl ChildSpec for AgentsChild {
    fn id(&self) -> &str {
        "agents"
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
            let owned = self
                .store
                .view(|v| {
                    let mut out = Vec::new();
                    v.scan(AGENTS, None, |id, bytes| {
                        let spec: AgentSpec = troupe_runtime::codec::decode(bytes)?;
                        if spec.owner == Owner::Node && spec.desired == Desired::Running {
                            let status: AgentStatus = match v.get(AGENT_STATUS, id)? {
                                Some(b) => troupe_runtime::codec::decode(&b)?,
                                None => AgentStatus::new(AgentState::Starting),
                            };
                            if status.state != AgentState::Failed {
                                out.push((spec, status));
                            }
                        }
                        Ok(true)
                    })?;
                    Ok(out)
                })
                .await?;
            let children = owned
                .into_iter()
                .map(|(spec, status)| {
                    Arc::new(AgentChild::new(spec, status, self.slots.clone(), self.policy)) as Arc<dyn ChildSpec>
                })
                .collect();
            let args = SupervisorArgs {
                name: Owner::Node.supervisor().into(),
                strategy: Strategy::OneForOne,
                intensity: None,
                backoff: self.backoff,
                children,
                start_order: StartOrder::Concurrent,
                store: self.store.clone(),
            };
            let (sup, _) = Actor::spawn_linked(None, Supervisor, args, supervisor).await?;
            self.slots.agents.set(sup.clone());
            Ok(sup.get_cell())
        })
    }
}

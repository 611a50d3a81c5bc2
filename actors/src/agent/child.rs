//! How the supervision tree (re)creates agents: one [`AgentChild`] per agent, and the
//! [`AgentsChild`] that rebuilds the whole agents supervisor from the store.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr};
use serde_json::json;
use troupe_runtime::store::{Batch, Op, Store, Table};
use troupe_runtime::supervision::{Backoff, ChildEvent, ChildSpec, Intensity, Strategy, Supervisor, SupervisorArgs};

use super::actor::AgentActor;
use super::spec::{AgentRecord, AgentSpec, AgentState};
use crate::scheduler::SchedulerMsg;
use crate::services::Services;

pub struct AgentChild {
    spec: Arc<AgentSpec>,
    record: Mutex<AgentRecord>,
    current: Mutex<Option<ActorId>>,
    services: Services,
}

impl AgentChild {
    pub fn new(record: AgentRecord, services: Services) -> Self {
        Self {
            spec: Arc::new(record.spec.clone()),
            record: Mutex::new(record),
            current: Mutex::new(None),
            services,
        }
    }

    pub fn record(&self) -> AgentRecord {
        self.record
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

impl ChildSpec for AgentChild {
    fn id(&self) -> &str {
        &self.spec.id
    }

    fn kind(&self) -> &str {
        "AGENT"
    }

    fn start(self: Arc<Self>, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>> {
        Box::pin(async move {
            let scheduler = self.services.scheduler.get().ok_or("the scheduler is not running")?;
            let actor = AgentActor {
                spec: self.spec.clone(),
                scheduler,
            };
            let (agent, _) = Actor::spawn_linked(None, actor, (), supervisor).await?;
            if let Ok(mut current) = self.current.lock() {
                *current = Some(agent.get_id());
            }
            Ok(agent.get_cell())
        })
    }

    fn lifecycle(&self, event: &ChildEvent, batch: &mut Batch) {
        let Ok(mut record) = self.record.lock() else {
            return;
        };
        match event {
            ChildEvent::Started => record.state = AgentState::Running,
            ChildEvent::Restarted { .. } => {
                record.state = AgentState::Running;
                record.restarts += 1;
            }
            ChildEvent::Failed { reason, restarting } => {
                record.state = if *restarting {
                    AgentState::Restarting
                } else {
                    AgentState::Failed
                };
                record.last_error = Some(reason.clone());
            }
            ChildEvent::Stopped => record.state = AgentState::Stopped,
        }
        record.updated_at = troupe_runtime::clock::now();
        if matches!(event, ChildEvent::Failed { .. } | ChildEvent::Stopped) {
            let actor = self.current.lock().ok().and_then(|c| *c);
            if let (Some(scheduler), Some(actor)) = (self.services.scheduler.get(), actor) {
                let reason = match event {
                    ChildEvent::Failed { reason, .. } => reason.clone(),
                    _ => "stopped".into(),
                };
                let _ = scheduler.cast(SchedulerMsg::AgentDown {
                    id: self.spec.id.clone(),
                    actor,
                    reason,
                });
            }
        }
        match troupe_runtime::codec::encode(&*record) {
            Ok(bytes) => batch.push(Op::Put {
                table: Table::Agents,
                key: self.spec.id.clone(),
                value: bytes,
            }),
            Err(e) => tracing::error!(agent = %self.spec.id, error = %e, "cannot encode agent record"),
        }
    }

    fn event_data(&self) -> serde_json::Value {
        let restarts = self.record.lock().map(|r| r.restarts).unwrap_or(0);
        json!({ "name": self.spec.name, "node": self.spec.node, "agentRestarts": restarts })
    }
}

/// The agents supervisor as a child of the node: each start rebuilds it with every agent the
/// store says should run.
pub struct AgentsChild {
    pub store: Store,
    pub services: Services,
    pub intensity: Intensity,
    pub backoff: Backoff,
}

impl ChildSpec for AgentsChild {
    fn id(&self) -> &str {
        "agents"
    }

    fn kind(&self) -> &str {
        "SERVICE"
    }

    fn start(self: Arc<Self>, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>> {
        Box::pin(async move {
            let mut children: Vec<Arc<dyn ChildSpec>> = Vec::new();
            let mut after = None;
            loop {
                let page = self.store.scan(Table::Agents, after.clone(), 10_000, |_| true).await?;
                let Some((last, _)) = page.last() else { break };
                after = Some(last.clone());
                for (_, bytes) in page {
                    let record: AgentRecord = troupe_runtime::codec::decode(&bytes)?;
                    if record.state != AgentState::Stopped {
                        children.push(Arc::new(AgentChild::new(record, self.services.clone())));
                    }
                }
            }
            let args = SupervisorArgs {
                name: "agents".into(),
                strategy: Strategy::OneForOne,
                intensity: self.intensity,
                backoff: self.backoff,
                children,
                store: self.store.clone(),
            };
            let (sup, _) = Actor::spawn_linked(None, Supervisor, args, supervisor).await?;
            self.services.agents.set(sup.clone());
            Ok(sup.get_cell())
        })
    }
}

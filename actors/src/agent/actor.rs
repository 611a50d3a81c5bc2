//! The agent actor: takes assignments from the scheduler and runs each attempt in a task it
//! owns. When the actor dies its state is dropped, which aborts every attempt still running
//! (and so kills their processes).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;

use super::builtin;
use super::exec::{self, ExecContext};
use super::spec::{AgentSpec, Backend, BuiltinKind};
use crate::scheduler::SchedulerMsg;
use crate::task::{Assignment, Outcome};

pub enum AgentMsg {
    Run(Assignment),
    Cancel(String),
    Done(String),
}

impl ractor::Message for AgentMsg {}

pub struct AgentActor {
    pub spec: Arc<AgentSpec>,
    pub scheduler: ActorRef<SchedulerMsg>,
}

/// Attempts in flight; dropping it aborts them.
#[derive(Default)]
pub struct Running(HashMap<String, JoinHandle<()>>);

impl Drop for Running {
    fn drop(&mut self) {
        for (_, h) in self.0.drain() {
            h.abort();
        }
    }
}

impl Actor for AgentActor {
    type Msg = AgentMsg;
    type State = Running;
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<AgentMsg>, _: ()) -> Result<Running, ActorProcessingErr> {
        tracing::debug!(agent = %self.spec.id, "agent starting");
        self.scheduler.cast(SchedulerMsg::AgentUp {
            id: self.spec.id.clone(),
            capabilities: self.spec.capabilities.clone(),
            max_concurrent: self.spec.max_concurrent_tasks,
            actor: myself,
        })?;
        Ok(Running::default())
    }

    async fn post_stop(&self, myself: ActorRef<AgentMsg>, _running: &mut Running) -> Result<(), ActorProcessingErr> {
        // A stopped agent's attempts are aborted with its state; the scheduler re-queues them.
        // (A panicking agent skips post_stop; its supervisor reports that one.)
        let _ = self.scheduler.cast(SchedulerMsg::AgentDown {
            id: self.spec.id.clone(),
            actor: myself.get_id(),
            reason: "stopped".into(),
        });
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<AgentMsg>,
        msg: AgentMsg,
        running: &mut Running,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AgentMsg::Run(a) => {
                if self.spec.backend == Backend::Builtin(BuiltinKind::Panic) {
                    panic!("builtin panic agent {} panicked on task {}", self.spec.id, a.task_id);
                }
                let task_id = a.task_id.clone();
                let spec = self.spec.clone();
                let scheduler = self.scheduler.clone();
                let span = tracing::info_span!("attempt", agent = %spec.id, task = %a.task_id, attempt = a.attempt);
                let work = async move {
                    let outcome = attempt(&spec, &a).await;
                    match &outcome {
                        Ok(_) => tracing::debug!("attempt succeeded"),
                        Err(error) => tracing::info!(%error, "attempt failed"),
                    }
                    let _ = scheduler.cast(SchedulerMsg::Finished {
                        task_id: a.task_id.clone(),
                        attempt: a.attempt,
                        agent_id: spec.id.clone(),
                        outcome,
                    });
                    let _ = myself.cast(AgentMsg::Done(a.task_id));
                };
                let handle = tokio::spawn(tracing::Instrument::instrument(work, span));
                running.0.insert(task_id, handle);
            }
            AgentMsg::Cancel(task_id) => {
                if let Some(h) = running.0.remove(&task_id) {
                    h.abort();
                }
            }
            AgentMsg::Done(task_id) => {
                running.0.remove(&task_id);
            }
        }
        Ok(())
    }
}

async fn attempt(spec: &AgentSpec, a: &Assignment) -> Outcome {
    let backend_timeout = match &spec.backend {
        Backend::Exec(e) => e.timeout_ms,
        Backend::Builtin(_) => None,
    };
    let work = async {
        match &spec.backend {
            Backend::Builtin(kind) => builtin::run(*kind, &a.payload).await,
            Backend::Exec(e) => {
                let ctx = ExecContext {
                    agent_id: &spec.id,
                    task_id: &a.task_id,
                    attempt: a.attempt,
                };
                exec::run(e, ctx, &a.payload).await
            }
        }
    };
    match a.timeout_ms.or(backend_timeout) {
        Some(ms) => tokio::time::timeout(Duration::from_millis(ms), work)
            .await
            .unwrap_or_else(|_| Err(format!("timed out after {ms} ms"))),
        None => work.await,
    }
}

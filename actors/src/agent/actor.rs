//! The agent actor: holds its backend object, takes assignments from the scheduler and runs
//! each attempt in a task it owns. When the actor dies its state is dropped, which aborts
//! every attempt still running (and so kills their processes).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;

use super::backend::{self, Backend};
use super::spec::AgentSpec;
use crate::scheduler::{Down, SchedulerMsg};
use crate::task::Assignment;

pub enum AgentMsg {
    Run(Assignment),
    /// Stops that attempt, if it is the one running.
    Cancel {
        task_id: String,
        attempt: u32,
    },
    /// An attempt's task finished (so its handle can go).
    Done {
        task_id: String,
        attempt: u32,
    },
}

impl ractor::Message for AgentMsg {}

pub struct AgentActor {
    pub spec: Arc<AgentSpec>,
    pub scheduler: ActorRef<SchedulerMsg>,
}

/// Attempts in flight by task, with their attempt number; dropping it aborts them.
#[derive(Default)]
pub struct Running(HashMap<String, (u32, JoinHandle<()>)>);

impl Drop for Running {
    fn drop(&mut self) {
        for (_, (_, h)) in self.0.drain() {
            h.abort();
        }
    }
}

pub struct State {
    backend: Box<dyn Backend>,
    running: Running,
}

impl Actor for AgentActor {
    type Msg = AgentMsg;
    type State = State;
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<AgentMsg>, _: ()) -> Result<State, ActorProcessingErr> {
        tracing::debug!(agent = %self.spec.id, "agent starting");
        let mut backend = backend::build(&self.spec);
        backend
            .start()
            .await
            .map_err(|e| format!("the {} backend did not start: {e}", self.spec.backend.describe()))?;
        self.scheduler.cast(SchedulerMsg::AgentUp {
            id: self.spec.id.clone(),
            capabilities: self.spec.capabilities.clone(),
            max_concurrent: self.spec.max_concurrent_tasks,
            actor: myself,
        })?;
        Ok(State {
            backend,
            running: Running::default(),
        })
    }

    async fn post_stop(&self, myself: ActorRef<AgentMsg>, state: &mut State) -> Result<(), ActorProcessingErr> {
        // Stopped on purpose: the running attempts are aborted here and their tasks go back
        // to the queue without losing an attempt. (A crashed agent skips post_stop; its
        // supervisor reports that one as a failure.)
        state.running.0.drain().for_each(|(_, (_, h))| h.abort());
        state.backend.stop().await;
        let _ = self.scheduler.cast(SchedulerMsg::AgentDown {
            id: self.spec.id.clone(),
            incarnation: myself.get_id().pid(),
            down: Down::Stopped,
        });
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<AgentMsg>,
        msg: AgentMsg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AgentMsg::Run(a) => {
                let (task_id, attempt) = (a.task_id.clone(), a.attempt);
                let timeout = a.timeout_ms.or(state.backend.default_timeout_ms());
                let work = state.backend.run(a);
                let agent_id = self.spec.id.clone();
                let scheduler = self.scheduler.clone();
                let span = tracing::info_span!("attempt", agent = %agent_id, task = %task_id, attempt);
                let id = task_id.clone();
                let job = async move {
                    let outcome = match timeout {
                        Some(ms) => tokio::time::timeout(Duration::from_millis(ms), work)
                            .await
                            .unwrap_or_else(|_| Err(format!("timed out after {ms} ms"))),
                        None => work.await,
                    };
                    match &outcome {
                        Ok(_) => tracing::debug!("attempt succeeded"),
                        Err(error) => tracing::info!(%error, "attempt failed"),
                    }
                    let _ = scheduler.cast(SchedulerMsg::Finished {
                        task_id: id.clone(),
                        attempt,
                        agent_id,
                        outcome,
                    });
                    let _ = myself.cast(AgentMsg::Done { task_id: id, attempt });
                };
                let handle = tokio::spawn(tracing::Instrument::instrument(job, span));
                if let Some((_, older)) = state.running.0.insert(task_id, (attempt, handle)) {
                    older.abort();
                }
            }
            AgentMsg::Cancel { task_id, attempt } | AgentMsg::Done { task_id, attempt } => {
                // Only the attempt named: a late message about an earlier attempt of the same
                // task must not touch the current one.
                if state.running.0.get(&task_id).is_some_and(|(a, _)| *a == attempt) {
                    if let Some((_, h)) = state.running.0.remove(&task_id) {
                        h.abort();
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ractor::{Actor, ActorProcessingErr, ActorRef};
    use serde_json::json;
    use tokio::sync::mpsc;

    use super::*;
    use crate::agent::spec::{BackendSpec, BuiltinKind, Desired, Owner};

    /// Stands in for the scheduler: hands every finished attempt to the test.
    struct Collector(mpsc::UnboundedSender<(String, u32)>);

    impl Actor for Collector {
        type Msg = SchedulerMsg;
        type State = ();
        type Arguments = ();

        async fn pre_start(&self, _: ActorRef<SchedulerMsg>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }

        async fn handle(
            &self,
            _: ActorRef<SchedulerMsg>,
            msg: SchedulerMsg,
            _: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            if let SchedulerMsg::Finished { task_id, attempt, .. } = msg {
                let _ = self.0.send((task_id, attempt));
            }
            Ok(())
        }
    }

    fn sleeper() -> Arc<AgentSpec> {
        Arc::new(AgentSpec {
            id: "a1@test".into(),
            name: "sleeper".into(),
            node: "test".into(),
            backend: BackendSpec::Builtin(BuiltinKind::Sleep),
            capabilities: vec![],
            max_concurrent_tasks: 2,
            owner: Owner::Node,
            desired: Desired::Running,
            created_at: troupe_runtime::clock::now(),
        })
    }

    fn run(attempt: u32) -> AgentMsg {
        AgentMsg::Run(Assignment {
            task_id: "t1".into(),
            attempt,
            payload: json!({ "ms": 1000 }),
            timeout_ms: None,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_done_of_an_earlier_attempt_leaves_the_current_attempt_cancellable() {
        let (tx, mut finished) = mpsc::unbounded_channel();
        let (scheduler, _) = Actor::spawn(None, Collector(tx), ()).await.unwrap();
        let actor = AgentActor {
            spec: sleeper(),
            scheduler,
        };
        let (agent, _) = Actor::spawn(None, actor, ()).await.unwrap();
        agent.cast(run(1)).unwrap();
        agent.cast(run(2)).unwrap();
        // Attempt 1's end is reported late, after attempt 2 began; then attempt 2 is cancelled.
        agent
            .cast(AgentMsg::Done {
                task_id: "t1".into(),
                attempt: 1,
            })
            .unwrap();
        agent
            .cast(AgentMsg::Cancel {
                task_id: "t1".into(),
                attempt: 2,
            })
            .unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(finished.try_recv().ok(), None, "the cancelled attempt ran to its end");
    }
}

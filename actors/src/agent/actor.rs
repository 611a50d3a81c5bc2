//! The agent actor: holds its backend object, takes assignments from the scheduler and runs
//! each attempt in a task it owns. When the actor dies its state is dropped, which aborts
//! every attempt still running (and so kills their processes).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::Value;
use tokio::task::JoinHandle;

use super::backend::{self, sample, Backend, Link, Signal, Usage};
use super::child::Restore;
use super::secrets::Secrets;
use super::spec::{AgentSpec, Desired};
use super::status::AgentState;
use crate::scheduler::{Down, SchedulerMsg};
use crate::task::{Assignment, Outcome};

/// How often the usage of an agent's processes is sampled for `/metrics`.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How long a process gets to finish after `shutdown` when its agent stops.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How an agent tells its handle that its state changed: (state, event kind, reason).
pub type Reporter = Arc<dyn Fn(AgentState, &str, Option<String>) + Send + Sync>;

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
    /// The backend's own news (health, a lost process).
    Signal(Signal),
    /// Suspends (true) or resumes (false) the agent: no new tasks, processes stopped.
    Pause(bool, RpcReplyPort<Result<(), String>>),
    /// A graceful stop began: no new tasks from now on, and a paused agent's processes are
    /// continued so its running tasks can finish.
    Drain(RpcReplyPort<()>),
    Checkpoint(RpcReplyPort<Result<Value, String>>),
    Restore(Value, RpcReplyPort<Result<(), String>>),
    Probe(RpcReplyPort<Probe>),
    Sample,
    /// A message for the agent; the reply is the backend's answer.
    Message {
        from: Option<String>,
        payload: Value,
        /// How long the backend may take to answer: what is left of the message's timeout.
        timeout: Duration,
        reply: RpcReplyPort<Result<Value, String>>,
    },
}

impl ractor::Message for AgentMsg {}

/// What the agent can say about itself now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Probe {
    pub usage: Option<Usage>,
    /// How long ago the backend last showed a sign of life (process agents).
    pub silent_for: Option<Duration>,
    pub healthy: bool,
    pub paused: bool,
    pub process_groups: Vec<u32>,
}

pub struct AgentActor {
    pub spec: Arc<AgentSpec>,
    pub scheduler: ActorRef<SchedulerMsg>,
    pub report: Reporter,
    /// Where the agent's own messages go.
    pub outbox: Option<tokio::sync::mpsc::UnboundedSender<crate::agent::Outgoing>>,
    /// What the backend may use as its API key.
    pub secrets: Arc<Secrets>,
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
    paused: bool,
    healthy: bool,
    draining: bool,
}

impl AgentActor {
    /// Tells the scheduler whether the agent takes tasks now.
    fn open(&self, myself: &ActorRef<AgentMsg>, state: &State) {
        let _ = self.scheduler.cast(SchedulerMsg::AgentOpen {
            id: self.spec.id.clone(),
            incarnation: myself.get_id().pid(),
            open: !state.paused && state.healthy && !state.draining,
        });
    }

    fn suspend(&self, state: &mut State, paused: bool) {
        let signal = if paused { libc::SIGSTOP } else { libc::SIGCONT };
        for group in state.backend.process_groups() {
            backend::signal_group(group, signal);
        }
        state.backend.pause(paused);
        state.paused = paused;
    }

    fn publish_usage(&self, usage: Usage) {
        let agent = self.spec.id.clone();
        metrics::gauge!("troupe_agent_rss_bytes", "agent" => agent.clone()).set(usage.rss_bytes as f64);
        metrics::gauge!("troupe_agent_cpu_seconds", "agent" => agent).set(usage.cpu_seconds);
    }
}

impl Actor for AgentActor {
    type Msg = AgentMsg;
    type State = State;
    type Arguments = Option<Restore>;

    async fn pre_start(
        &self,
        myself: ActorRef<AgentMsg>,
        restore: Option<Restore>,
    ) -> Result<State, ActorProcessingErr> {
        tracing::debug!(agent = %self.spec.id, "agent starting");
        let mut backend = backend::build(&self.spec, &self.secrets);
        backend
            .start(Link(Some(myself.clone())))
            .await
            .map_err(|e| format!("the {} backend did not start: {e}", self.spec.backend.describe()))?;
        if let Some(r) = restore {
            backend
                .restore(r.state)
                .await
                .map_err(|e| format!("restoring checkpoint {} failed: {e}", r.checkpoint))?;
        }
        let mut state = State {
            backend,
            running: Running::default(),
            paused: false,
            healthy: true,
            draining: false,
        };
        if self.spec.desired == Desired::Paused {
            self.suspend(&mut state, true);
        }
        self.scheduler.cast(SchedulerMsg::AgentUp {
            id: self.spec.id.clone(),
            capabilities: self.spec.capabilities.clone(),
            skills: self.spec.skills(),
            max_concurrent: self.spec.max_concurrent_tasks,
            open: !state.paused,
            actor: myself.clone(),
        })?;
        if self.spec.backend.runs_processes() {
            myself.cast(AgentMsg::Sample)?;
            myself.send_interval(SAMPLE_EVERY, || AgentMsg::Sample);
        }
        Ok(state)
    }

    async fn post_stop(&self, myself: ActorRef<AgentMsg>, state: &mut State) -> Result<(), ActorProcessingErr> {
        // Stopped on purpose: the running attempts are aborted here and their tasks go back
        // to the queue without losing an attempt. (A crashed agent skips post_stop; its
        // supervisor reports that one as a failure.)
        state.running.0.drain().for_each(|(_, (_, h))| h.abort());
        state.backend.stop(STOP_GRACE).await;
        if self.spec.backend.runs_processes() {
            self.publish_usage(Usage::default());
        }
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
            AgentMsg::Run(a) => self.run(myself, a, state),
            AgentMsg::Cancel { task_id, attempt } | AgentMsg::Done { task_id, attempt } => {
                // Only the attempt named: a late message about an earlier attempt of the same
                // task must not touch the current one.
                if state.running.0.get(&task_id).is_some_and(|(a, _)| *a == attempt) {
                    if let Some((_, h)) = state.running.0.remove(&task_id) {
                        h.abort();
                    }
                }
            }
            AgentMsg::Signal(Signal::Lost(reason)) => return Err(reason.into()),
            AgentMsg::Signal(Signal::Outgoing(mut out)) => {
                out.from = self.spec.id.clone();
                match &self.outbox {
                    Some(outbox) => {
                        if let Err(e) = outbox.send(out) {
                            let _ = e.0.answer.send(Err("the node is not taking messages".into()));
                        }
                    }
                    None => {
                        let _ = out.answer.send(Err("the node is not taking messages".into()));
                    }
                }
            }
            AgentMsg::Signal(Signal::Progress {
                task_id,
                attempt,
                fraction,
                note,
            }) => {
                let _ = self.scheduler.cast(SchedulerMsg::Progress {
                    task_id,
                    attempt,
                    agent_id: self.spec.id.clone(),
                    fraction,
                    note,
                });
            }
            AgentMsg::Signal(Signal::Unhealthy(reason)) => {
                if state.healthy {
                    state.healthy = false;
                    self.open(&myself, state);
                    (self.report)(AgentState::Unhealthy, "AGENT_UNHEALTHY", Some(reason));
                }
            }
            AgentMsg::Signal(Signal::Healthy) => {
                if !state.healthy {
                    state.healthy = true;
                    self.open(&myself, state);
                    let now = if state.paused {
                        AgentState::Paused
                    } else {
                        AgentState::Running
                    };
                    (self.report)(now, "AGENT_HEALTHY", None);
                }
            }
            AgentMsg::Pause(paused, reply) => {
                if paused != state.paused {
                    self.suspend(state, paused);
                    self.open(&myself, state);
                }
                let _ = reply.send(Ok(()));
            }
            AgentMsg::Drain(reply) => {
                state.draining = true;
                if state.paused {
                    self.suspend(state, false);
                }
                self.open(&myself, state);
                let _ = reply.send(());
            }
            AgentMsg::Checkpoint(reply) => {
                let _ = reply.send(state.backend.checkpoint().await);
            }
            AgentMsg::Restore(saved, reply) => {
                let _ = reply.send(state.backend.restore(saved).await);
            }
            AgentMsg::Message {
                from,
                payload,
                timeout,
                reply,
            } => {
                let answer = state.backend.message(from, payload, timeout);
                tokio::spawn(async move {
                    let _ = reply.send(answer.await);
                });
            }
            AgentMsg::Probe(reply) => {
                let groups = state.backend.process_groups();
                let usage = self.spec.backend.runs_processes().then(|| sample(&groups));
                let _ = reply.send(Probe {
                    usage,
                    silent_for: state.backend.silent_for(),
                    healthy: state.healthy,
                    paused: state.paused,
                    process_groups: groups,
                });
            }
            AgentMsg::Sample => self.publish_usage(sample(&state.backend.process_groups())),
        }
        Ok(())
    }
}

impl AgentActor {
    fn run(&self, myself: ActorRef<AgentMsg>, a: Assignment, state: &mut State) {
        let (task_id, attempt) = (a.task_id.clone(), a.attempt);
        if state.paused || state.draining {
            // The start crossed a pause or a graceful stop: it goes back unbegun (the
            // scheduler already knows the agent is closed, so it goes elsewhere or waits).
            let why = match state.paused {
                true => format!("agent {} was paused before the task reached it", self.spec.id),
                false => format!("agent {} was stopping before the task reached it", self.spec.id),
            };
            tracing::info!(agent = %self.spec.id, task = %task_id, attempt, "{why}: handed back");
            let _ = self.scheduler.cast(SchedulerMsg::Declined {
                task_id,
                attempt,
                agent_id: self.spec.id.clone(),
                why,
            });
            return;
        }
        let timeout = match state.backend.own_timeouts() {
            true => None,
            false => a.timeout_ms.or(state.backend.default_timeout_ms()),
        };
        let work = state.backend.run(a);
        let agent_id = self.spec.id.clone();
        let scheduler = self.scheduler.clone();
        let span = tracing::info_span!("attempt", agent = %agent_id, task = %task_id, attempt);
        let id = task_id.clone();
        let job = async move {
            let outcome = settle(work, timeout).await;
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
}

/// Runs an attempt to its outcome within its timeout. A panic inside the backend's future is
/// a failed attempt: left to unwind, it would end the spawned job before it reports, and the
/// task would stay RUNNING for ever.
async fn settle(work: BoxFuture<'static, Outcome>, timeout: Option<u64>) -> Outcome {
    let work = AssertUnwindSafe(work).catch_unwind();
    let caught = match timeout {
        Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), work).await {
            Ok(caught) => caught,
            Err(_) => return Err(format!("timed out after {ms} ms")),
        },
        None => work.await,
    };
    caught.unwrap_or_else(|panic| Err(format!("the attempt panicked: {}", panic_message(panic.as_ref()))))
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ractor::{Actor, ActorProcessingErr, ActorRef};
    use serde_json::json;
    use tokio::sync::mpsc;

    use super::*;
    use crate::agent::spec::{BackendSpec, BuiltinKind, Owner};

    /// Stands in for the scheduler: hands every finished attempt to the test, and every
    /// start handed back to the second channel, if any.
    struct Collector(
        mpsc::UnboundedSender<(String, u32)>,
        Option<mpsc::UnboundedSender<(String, u32)>>,
    );

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
            match msg {
                SchedulerMsg::Finished { task_id, attempt, .. } => {
                    let _ = self.0.send((task_id, attempt));
                }
                SchedulerMsg::Declined { task_id, attempt, .. } => {
                    if let Some(declined) = &self.1 {
                        let _ = declined.send((task_id, attempt));
                    }
                }
                _ => {}
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
            project: "default".into(),
            labels: Default::default(),
            limits: Default::default(),
            restart: None,
            proficiency: Default::default(),
            weight: 1.0,
            topics: Vec::new(),
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
        let (scheduler, _) = Actor::spawn(None, Collector(tx, None), ()).await.unwrap();
        let actor = AgentActor {
            spec: sleeper(),
            scheduler,
            report: Arc::new(|_, _, _| {}),
            outbox: None,
            secrets: Default::default(),
        };
        let (agent, _) = Actor::spawn(None, actor, None).await.unwrap();
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

    #[tokio::test]
    async fn a_panicking_attempt_is_a_failed_attempt() {
        let work: BoxFuture<'static, Outcome> = Box::pin(async { panic!("boom at {}", 3) });
        let outcome = settle(work, Some(1_000)).await;
        assert_eq!(outcome, Err("the attempt panicked: boom at 3".to_string()));
        let work: BoxFuture<'static, Outcome> = Box::pin(async { panic!("plain") });
        assert_eq!(settle(work, None).await, Err("the attempt panicked: plain".to_string()));
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_past_its_timeout_fails() {
        let work: BoxFuture<'static, Outcome> = Box::pin(std::future::pending());
        assert_eq!(settle(work, Some(50)).await, Err("timed out after 50 ms".to_string()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_start_that_reaches_a_paused_or_stopping_agent_is_handed_back_not_run() {
        let (tx, mut finished) = mpsc::unbounded_channel();
        let (back, mut declined) = mpsc::unbounded_channel();
        let (scheduler, _) = Actor::spawn(None, Collector(tx, Some(back)), ()).await.unwrap();
        let actor = AgentActor {
            spec: sleeper(),
            scheduler,
            report: Arc::new(|_, _, _| {}),
            outbox: None,
            secrets: Default::default(),
        };
        let (agent, _) = Actor::spawn(None, actor, None).await.unwrap();
        // The scheduler cast the start before it learnt of the pause.
        ractor::call!(agent, AgentMsg::Pause, true).unwrap().unwrap();
        agent.cast(run(1)).unwrap();
        let back = tokio::time::timeout(Duration::from_secs(30), declined.recv()).await;
        assert_eq!(
            back.ok().flatten(),
            Some(("t1".to_string(), 1)),
            "the start was not handed back"
        );
        ractor::call!(agent, AgentMsg::Pause, false).unwrap().unwrap();
        ractor::call!(agent, AgentMsg::Drain).unwrap();
        agent.cast(run(2)).unwrap();
        let back = tokio::time::timeout(Duration::from_secs(30), declined.recv()).await;
        assert_eq!(
            back.ok().flatten(),
            Some(("t1".to_string(), 2)),
            "the start was not handed back"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(finished.try_recv().ok(), None, "a handed-back start ran");
    }
}

//! The agent actor: holds its backend object, takes assignments from the scheduler and runs
//! each attempt in a task it owns. When the actor dies its state is dropped, which aborts
//! every attempt still running (and so kills their processes).

mod attempt;

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::Value;

use super::backend::{self, sample, Backend, Link, Outbox, Signal, Usage};
use super::child::Restore;
use super::ladder::{self, Health};
use super::spec::{AgentSpec, Desired};
use super::status::AgentState;
use crate::scheduler::report::{Down, Report, Reports};
use crate::task::Assignment;
use attempt::Running;

/// How often the usage of an agent's processes is sampled for `/metrics`.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How long a process gets to finish after `shutdown` when its agent stops.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How an agent tells its handle that its state changed: (state, event kind, reason).
pub type Reporter = Arc<dyn Fn(AgentState, &str, Option<String>) + Send + Sync>;
/// Records the capabilities the agent's backend found (an MCP server's tools).
pub type Discoverer = Arc<dyn Fn(Vec<String>) + Send + Sync>;

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
    /// The watchdog's question: answered at once by a loop that is not stuck.
    Ping(RpcReplyPort<()>),
    /// An injected hang (fault experiments): the loop takes no other message until the
    /// gate opens (true) or its sender is dropped; `held` is told when the hold begins.
    Hang {
        gate: tokio::sync::watch::Receiver<bool>,
        held: tokio::sync::oneshot::Sender<()>,
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
    /// Where the agent says it is up, open, down, and how its attempts ended.
    pub reports: Reports,
    pub report: Reporter,
    pub discovered: Discoverer,
    /// Where the agent's errands go (its own messages, its swarm's memory, its team's work).
    pub outbox: Option<Outbox>,
    /// What the backend may use (keys, the store, the price table).
    pub lent: backend::Lent,
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
        let _ = self.reports.send_message(Report::Open {
            id: self.spec.id.clone(),
            incarnation: myself.get_id().pid(),
            open: !state.paused && state.healthy && !state.draining,
        });
    }

    /// The backend says the agent is heard from (or not): it is closed to tasks while it is
    /// not, and each change is reported.
    fn health(&self, myself: &ActorRef<AgentMsg>, state: &mut State, healthy: bool, reason: Option<String>) {
        let mut now = Health {
            healthy: state.healthy,
            paused: state.paused,
        };
        if let Some(step) = ladder::health(&mut now, healthy) {
            state.healthy = now.healthy;
            self.open(myself, state);
            (self.report)(step.state, step.kind, reason);
        }
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
        let mut backend = backend::build(&self.spec, &self.lent);
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
        let found = state.backend.capabilities();
        (self.discovered)(found.clone());
        self.reports.send_message(Report::Up {
            id: self.spec.id.clone(),
            name: self.spec.name.clone(),
            capabilities: self.spec.capabilities.iter().cloned().chain(found).collect(),
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
        let _ = self.reports.send_message(Report::Down {
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
            AgentMsg::Signal(Signal::Errand(errand)) => match &self.outbox {
                Some(outbox) => outbox(self.spec.id.clone(), errand),
                None => {
                    let _ = errand.answer.send(Err("the node is not taking messages".into()));
                }
            },
            AgentMsg::Signal(Signal::Progress {
                task_id,
                attempt,
                fraction,
                note,
                held,
            }) => {
                let _ = self.reports.send_message(Report::Progress {
                    task_id,
                    attempt,
                    agent_id: self.spec.id.clone(),
                    fraction,
                    note,
                    held,
                });
            }
            AgentMsg::Signal(Signal::Unhealthy(reason)) => self.health(&myself, state, false, Some(reason)),
            AgentMsg::Signal(Signal::Healthy) => self.health(&myself, state, true, None),
            AgentMsg::Signal(Signal::CapabilitiesChanged) => {
                let found = state.backend.capabilities();
                (self.discovered)(found.clone());
                let _ = self.reports.send_message(Report::Capabilities {
                    id: self.spec.id.clone(),
                    incarnation: myself.get_id().pid(),
                    capabilities: self.spec.capabilities.iter().cloned().chain(found).collect(),
                });
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
            AgentMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            AgentMsg::Hang { mut gate, held } => {
                let _ = held.send(());
                tracing::warn!(agent = %self.spec.id, "injected hang: the agent takes no message until released");
                while !*gate.borrow() {
                    if gate.changed().await.is_err() {
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

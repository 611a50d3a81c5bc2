//! The scheduler actor: turns messages into engine inputs and carries out the effects the
//! engine returns (hand attempts to agents, persist transitions, arm timers). Its writes are
//! handed to the store without waiting (the writer keeps their order) but watched: a write
//! that does not become durable fails the actor, whose restart recovers from the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::Value;
use troupe_runtime::store::Store;

use super::engine::{BreakerPolicy, Down, Effect, Engine, Limits, Now, Reported, RetryPolicy, Settled};
use crate::agent::{AgentMsg, AgentStats};
use crate::error::ApiError;
use crate::task::{Outcome, TaskSpec, TaskStatus};

mod dispatch;
mod ended;
mod figures;
mod handoff;
mod record;
mod recover;

pub enum SchedulerMsg {
    /// The watchdog's ping: answered at once unless the loop is stuck.
    Ping(ractor::RpcReplyPort<()>),
    /// Holds the loop until released (fault injection: HANG).
    Hold(
        tokio::sync::watch::Receiver<bool>,
        tokio::sync::mpsc::UnboundedSender<()>,
    ),
    /// A task already durable as QUEUED.
    Enqueue(Box<(TaskSpec, TaskStatus)>),
    /// Cancels a task; answers its final status (durable) or why not.
    Cancel(String, RpcReplyPort<Result<TaskStatus, ApiError>>),
    Finished {
        task_id: String,
        attempt: u32,
        agent_id: String,
        outcome: Outcome,
    },
    /// The agent reports how far an attempt got (a process agent's `progress` line), and
    /// whether it waits for an approval.
    Progress {
        task_id: String,
        attempt: u32,
        agent_id: String,
        fraction: Option<f64>,
        note: Option<String>,
        held: bool,
    },
    /// The agent did not begin an attempt it was handed (paused or stopping when it came).
    Declined {
        task_id: String,
        attempt: u32,
        agent_id: String,
        why: String,
    },
    AgentUp {
        id: String,
        /// Its name, for the texts people read.
        name: String,
        capabilities: Vec<String>,
        skills: crate::agent::Skills,
        max_concurrent: u32,
        /// Whether it takes tasks now (a paused agent starts closed).
        open: bool,
        actor: ActorRef<AgentMsg>,
    },
    /// The agent's incarnation takes tasks again (true) or takes none for now (false:
    /// paused, unhealthy, stopping).
    AgentOpen {
        id: String,
        incarnation: u64,
        open: bool,
    },
    /// The agent's incarnation serves these capabilities now.
    AgentCapabilities {
        id: String,
        incarnation: u64,
        capabilities: Vec<String>,
    },
    /// The agent's actor `incarnation` (its pid) is gone; ignored if a newer one registered.
    AgentDown {
        id: String,
        incarnation: u64,
        down: Down,
    },
    /// The agent was removed for good.
    AgentRemoved(String),
    Wake,
    Counters(Vec<String>, RpcReplyPort<HashMap<String, AgentStats>>),
    /// Stops starting tasks (shutdown); answers how many run.
    Drain(RpcReplyPort<usize>),
    Running(RpcReplyPort<usize>),
    /// How many of them (of one agent, or of all) work now: not held for an operator's
    /// approval.
    Working(Option<String>, RpcReplyPort<usize>),
    /// What this node's agents can take of a capability now.
    Room(String, RpcReplyPort<super::Room>),
    /// Publishes what room this node's agents have for every capability (see
    /// [`super::Rooms`]).
    PublishRooms,
    /// Makes sure a task the store has QUEUED here is queued in the engine: a submit whose
    /// answer was replayed (its idempotency key) may be one whose enqueue never came (its
    /// write's outcome was unknown when it was made).
    EnsureQueued(String),
    /// Takes over these open tasks, which the cluster placed here (moved from a lost node,
    /// handed off by a node whose agents do not serve them, or submitted on a peer that
    /// placed them here).
    Adopt(Vec<String>),
    /// Why each of these tasks waits, for those queued here (see `engine/waiting.rs`).
    WaitingFor(Vec<String>, RpcReplyPort<HashMap<String, String>>),
    /// Gives every running task back to the queue, not charged (shutdown past its grace);
    /// answers once that is durable.
    Requeue(RpcReplyPort<Result<(), ApiError>>),
    /// A transition did not become durable.
    WriteFailed(String),
    /// The ends this scheduler handed over before the flush numbered so landed (`None`: the
    /// flush did not land); see `actor/ended.rs`.
    EndsLanded(Option<u64>),
}

impl ractor::Message for SchedulerMsg {}

/// What the store says of dependencies that are not open: each one's result if it
/// succeeded, else `None` (failed, cancelled, expired, or unknown).
pub(super) fn settled_in(
    v: &troupe_runtime::store::View<'_>,
    deps: &[String],
) -> Result<Vec<Settled>, troupe_runtime::store::StoreError> {
    let mut out = Vec::with_capacity(deps.len());
    for dep in deps {
        let status = v
            .get(crate::tables::TASK_STATUS, dep)?
            .map(|b| troupe_runtime::codec::decode::<TaskStatus>(&b))
            .transpose()?;
        let result = status
            .filter(|s| s.state == crate::task::TaskState::Succeeded)
            .map(|s| s.result.unwrap_or(Value::Null));
        out.push((dep.clone(), result));
    }
    Ok(out)
}

pub struct SchedulerArgs {
    /// This node's name: it runs the tasks it holds.
    pub node: String,
    pub store: Store,
    pub retry: RetryPolicy,
    pub breaker: BreakerPolicy,
    /// The most payload bytes kept in memory ([`PAYLOAD_CACHE_BYTES`] by default).
    pub payload_cache_bytes: usize,
    /// Where the count of open tasks is kept for admission (see `max_open_tasks`).
    pub open: Arc<AtomicUsize>,
    /// Where the room of this node's agents is published for the heartbeat.
    pub rooms: super::Rooms,
    /// What the peers' heartbeats said of their agents' room (`None`: a node alone, or a
    /// test): where tasks no agent here can run are handed.
    pub peers: Option<super::PeerRooms>,
}

pub struct State {
    node: String,
    store: Store,
    engine: Engine,
    myself: ActorRef<SchedulerMsg>,
    agents: HashMap<String, ActorRef<AgentMsg>>,
    /// The timeout of every open task; payloads stay on disk until an attempt starts.
    work: HashMap<String, Option<u64>>,
    /// Payloads of recently queued tasks, up to [`PAYLOAD_CACHE_BYTES`], so the common case
    /// (a task dispatched soon after it was queued) needs no read; the rest are read from the
    /// store when their attempt starts.
    cached: HashMap<String, Value>,
    cached_bytes: usize,
    cache_budget: usize,
    stats: HashMap<String, AgentStats>,
    /// The transitions of the message being handled, written together.
    pending: troupe_runtime::store::Batch,
    /// Agents whose counters changed since the last write.
    dirty_stats: std::collections::HashSet<String>,
    recent: HashMap<String, figures::Window>,
    /// The tasks that ended here a moment ago, whose ends may not have landed yet.
    ended: ended::Ended,
    pub(super) open: Arc<AtomicUsize>,
    rooms: super::Rooms,
    peers: Option<super::PeerRooms>,
}

#[derive(Debug, Default)]
pub struct Scheduler;

pub(crate) fn now() -> Now {
    Now {
        at: tokio::time::Instant::now(),
        wall: troupe_runtime::clock::now(),
    }
}

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = State;
    type Arguments = SchedulerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SchedulerMsg>,
        args: SchedulerArgs,
    ) -> Result<State, ActorProcessingErr> {
        // Whatever an earlier incarnation handed the writer lands before we read.
        args.store.flush().await?;
        let mut state = State {
            node: args.node,
            store: args.store,
            engine: Engine::new(args.retry).with_breaker(args.breaker),
            myself,
            agents: HashMap::new(),
            work: HashMap::new(),
            cached: HashMap::new(),
            cached_bytes: 0,
            cache_budget: args.payload_cache_bytes,
            stats: HashMap::new(),
            pending: troupe_runtime::store::Batch::new(),
            dirty_stats: std::collections::HashSet::new(),
            recent: HashMap::new(),
            ended: ended::Ended::default(),
            open: args.open,
            rooms: args.rooms,
            peers: args.peers,
        };
        state.recover().await?;
        state.open.store(state.engine.open(), Ordering::SeqCst);
        state.rooms.set(state.engine.rooms());
        state
            .myself
            .send_interval(super::ROOMS_EVERY, || SchedulerMsg::PublishRooms);
        tracing::info!(queued = state.engine.queued(), "scheduler started");
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<SchedulerMsg>,
        msg: SchedulerMsg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        let now = now();
        let effects = match msg {
            SchedulerMsg::Ping(reply) => {
                let _ = reply.send(());
                return Ok(());
            }
            SchedulerMsg::Hold(release, held) => {
                crate::liveness::held("scheduler", release, held).await;
                return Ok(());
            }
            SchedulerMsg::Enqueue(task) => {
                let (spec, status) = *task;
                if state.engine.status(&spec.id).is_some() {
                    // A restarted scheduler found it in the store already.
                    return Ok(());
                }
                let (spec, status) = if state.ended.holds(&spec.id) {
                    // It ended here a moment ago: it came first another way (`EnsureQueued`,
                    // for a submit answered twice) and ran, or it was requeued since. Once
                    // this node's writes landed, the store tells which.
                    match state.queued_in_store(spec.id).await? {
                        Some(queued) => queued,
                        None => return Ok(()),
                    }
                } else {
                    (spec, status)
                };
                state.admit(spec, status).await?
            }
            SchedulerMsg::Cancel(id, reply) => {
                state.cancel(id, reply, now).await?;
                return Ok(());
            }
            SchedulerMsg::EnsureQueued(id) => {
                if state.engine.status(&id).is_some() {
                    return Ok(());
                }
                let Some((spec, status)) = state.queued_in_store(id).await? else {
                    return Ok(());
                };
                tracing::warn!(task = %spec.id, "a task queued in the store was not in the queue: queued now");
                state.admit(spec, status).await?
            }
            SchedulerMsg::Finished {
                task_id,
                attempt,
                agent_id,
                outcome,
            } => {
                state.observe(&task_id, attempt, &agent_id, &outcome, now);
                state.engine.finished(&task_id, attempt, &agent_id, outcome, now)
            }
            SchedulerMsg::Declined {
                task_id,
                attempt,
                agent_id,
                why,
            } => state.engine.declined(&task_id, attempt, &agent_id, &why, now),
            SchedulerMsg::Progress {
                task_id,
                attempt,
                agent_id,
                fraction,
                note,
                held,
            } => {
                let reported = Reported { fraction, note, held };
                state.engine.progress(&task_id, attempt, &agent_id, reported, now)
            }
            SchedulerMsg::AgentUp {
                id,
                name,
                capabilities,
                skills,
                max_concurrent,
                open,
                actor,
            } => {
                tracing::debug!(agent = %id, open, "agent registered");
                let incarnation = actor.get_id().pid();
                state.agents.insert(id.clone(), actor);
                state.engine.name_agent(&id, &name);
                let mut effects =
                    state
                        .engine
                        .agent_up_with(&id, capabilities, skills, max_concurrent, incarnation, now);
                if !open {
                    effects.extend(state.engine.set_open(&id, incarnation, false, now));
                }
                effects
            }
            SchedulerMsg::AgentOpen { id, incarnation, open } => state.engine.set_open(&id, incarnation, open, now),
            SchedulerMsg::AgentCapabilities {
                id,
                incarnation,
                capabilities,
            } => state.engine.set_capabilities(&id, incarnation, capabilities, now),
            SchedulerMsg::AgentDown { id, incarnation, down } => {
                let effects = state.engine.agent_down(&id, incarnation, down, now);
                if state.agents.get(&id).is_some_and(|a| a.get_id().pid() == incarnation) {
                    state.agents.remove(&id);
                }
                effects
            }
            SchedulerMsg::AgentRemoved(id) => {
                state.recent.remove(&id);
                state.stats.remove(&id);
                state.dirty_stats.remove(&id);
                state.engine.agent_removed(&id, now)
            }
            SchedulerMsg::Wake => state.engine.wake(now),
            SchedulerMsg::Counters(ids, reply) => {
                let out = ids
                    .into_iter()
                    .map(|id| {
                        let mut c = state.stats.get(&id).copied().unwrap_or_default();
                        c.running = state.engine.running_on(&id);
                        c.breaker = state.engine.breaker_of(&id);
                        c.recent = state.recent.get(&id).map(figures::Window::figures).unwrap_or_default();
                        (id, c)
                    })
                    .collect();
                let _ = reply.send(out);
                return Ok(());
            }
            SchedulerMsg::Drain(reply) => {
                state.engine.drain();
                // The tasks queued here go to members whose agents serve them now, not once
                // this node is back (or declared DOWN): a few hand-offs of `AT_ONCE`, each
                // one entry, committed before the node's stop goes on.
                for _ in 0..handoff::DRAIN_HAND_OFFS {
                    if state.hand_off_unserved(now).await == 0 {
                        break;
                    }
                }
                let _ = reply.send(state.engine.running());
                return Ok(());
            }
            SchedulerMsg::Running(reply) => {
                let _ = reply.send(state.engine.running());
                return Ok(());
            }
            SchedulerMsg::Working(agent, reply) => {
                let _ = reply.send(state.engine.working(agent.as_deref()));
                return Ok(());
            }
            SchedulerMsg::PublishRooms => {
                state.rooms.set(state.engine.rooms());
                let _ = state.hand_off_unserved(now).await;
                return Ok(());
            }
            SchedulerMsg::Adopt(ids) => {
                state.adopt(ids).await?;
                return Ok(());
            }
            SchedulerMsg::Room(capability, reply) => {
                let _ = reply.send(state.engine.room(&capability));
                return Ok(());
            }
            SchedulerMsg::WaitingFor(tasks, reply) => {
                let why = tasks
                    .into_iter()
                    .filter_map(|t| state.engine.waiting_for(&t, now).map(|why| (t, why)))
                    .collect();
                let _ = reply.send(why);
                return Ok(());
            }
            SchedulerMsg::Requeue(reply) => {
                state.engine.drain();
                let effects = state.engine.requeue_running("the node is shutting down", now);
                state.apply(effects, now).await?;
                let store = state.store.clone();
                tokio::spawn(async move {
                    let _ = reply.send(store.flush().await.map_err(ApiError::from));
                });
                return Ok(());
            }
            SchedulerMsg::EndsLanded(upto) => {
                state.ends_landed(upto);
                return Ok(());
            }
            SchedulerMsg::WriteFailed(reason) => {
                return Err(format!("a task transition was not written: {reason}").into());
            }
        };
        state.apply(effects, now).await?;
        Ok(())
    }
}

/// The most payload bytes the scheduler keeps in memory.
pub const PAYLOAD_CACHE_BYTES: usize = 64 * 1024 * 1024;

impl State {
    /// Takes `spec` into the queue with `status`.
    async fn admit(&mut self, spec: TaskSpec, status: TaskStatus) -> Result<Vec<Effect>, ActorProcessingErr> {
        self.work.insert(spec.id.clone(), spec.timeout_ms);
        self.cache(&spec.id, &spec.payload);
        let settled = self.settled(&spec.depends_on).await?;
        // Reading may have taken a moment: the decision is made at the time it lands.
        Ok(self.engine.enqueue_with(Limits::from(&spec), status, settled, now()))
    }

    /// succeeded. Read after a flush, so a dependency that ended a moment ago is seen ended.
    async fn settled(&self, deps: &[String]) -> Result<Vec<Settled>, ActorProcessingErr> {
        let closed: Vec<String> = deps
            .iter()
            .filter(|d| self.engine.status(d).is_none())
            .cloned()
            .collect();
        if closed.is_empty() {
            return Ok(Vec::new());
        }
        self.store.flush().await?;
        Ok(self.store.view(move |v| settled_in(v, &closed)).await?)
    }

    async fn cancel(
        &mut self,
        id: String,
        reply: RpcReplyPort<Result<TaskStatus, ApiError>>,
        now: Now,
    ) -> Result<(), ActorProcessingErr> {
        let mut cancelled = self.engine.cancel(&id, now);
        // Placed or moved here a moment ago, its arrival not taken up yet (it is open in the
        // store and held here): taken up first, then cancelled. Answered "already QUEUED"
        // before. What this scheduler handed the writer lands first: a task that ended here
        // a moment ago is not read back as open. Any other id (unknown, ended, another
        // member's) is answered below without this scheduler waiting for the writer: a
        // cancel of an unknown id held every task of the node behind a flush.
        if cancelled.is_none() && self.open_here(&id).await? {
            self.store.flush().await?;
            self.adopt(vec![id.clone()]).await?;
            cancelled = self.engine.cancel(&id, now);
        }
        let Some((status, effects)) = cancelled else {
            // Not open here: finished (perhaps a moment ago, its record still on its way to
            // disk) or unknown. Flushing first makes the finished record visible.
            let store = self.store.clone();
            tokio::spawn(async move {
                let answer = match store.flush().await {
                    Ok(()) => record::stored_status(&store, &id).await,
                    Err(e) => Err(e.into()),
                };
                let answer = match answer {
                    Ok(Some(s)) => Err(ApiError::Conflict(format!("task {id} is already {}", s.state.as_str()))),
                    Ok(None) => Err(ApiError::NotFound(format!("no task {id}"))),
                    Err(e) => Err(e),
                };
                let _ = reply.send(answer);
            });
            return Ok(());
        };
        self.apply(effects, now).await?;
        let store = self.store.clone();
        tokio::spawn(async move {
            let _ = reply.send(store.flush().await.map(|_| status).map_err(ApiError::from));
        });
        Ok(())
    }
}

//! The supervisor actor: carries out [`RestartLadder`] decisions on real children.
//!
//! ```text
//!             StartChild ─▶ STARTING ──Started──▶ RUNNING ──exit──▶ decide
//!                              ▲                    │                 │
//!   RestartDue (job) ─▶ RESTARTING ◀────restart─────┼─────────────────┤
//!                                                   │                 ├─ remove / give up (FAILED)
//!            TerminateChild ─▶ STOPPING ──Stopped──▶ gone             └─ escalate: stop all, fail
//! ```
//!
//! Starts and stops that take time run as jobs outside the mailbox (see `jobs.rs`) and report
//! back by message, tagged with the child's generation so a late report of an abandoned
//! start is recognised and its actor stopped.

use std::collections::VecDeque;

use indexmap::IndexMap;
use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::child::{ChildEvent, ChildSpec, Shutdown};
use super::decision::{Backoff, Exit, Intensity, RestartLadder, Strategy};
use super::jobs::{self, Start};
use super::tree::{self, SupervisorInfo};

mod fault;
mod lifecycle;
mod reach;
use crate::store::Store;
pub use fault::{CrashPlan, CrashReply, CrashRequest, INJECTED_CRASH, UNRESPONSIVE};
pub use reach::{Reach, ReachReply, ReachRequest};

/// How a start that finished after it was abandoned is undone.
const STALE_STOP: Shutdown = Shutdown::Timeout(std::time::Duration::from_secs(10));

pub enum SupervisorMsg {
    /// Adds and starts a child; answers once it has started, or why it did not.
    StartChild(Arc<dyn ChildSpec>, RpcReplyPort<Result<(), String>>),
    /// Stops a child for good (by its shutdown policy); answers whether it existed.
    TerminateChild(String, RpcReplyPort<bool>),
    /// Ids of the children and whether each is running now.
    Children(RpcReplyPort<Vec<(String, bool)>>),
    /// Whether this supervisor holds the child (running or being restarted).
    Holds(String, RpcReplyPort<bool>),
    /// This supervisor's live subtree.
    Describe(RpcReplyPort<SupervisorInfo>),
    /// This supervisor's live subtree, answered within the time (a parent's Describe).
    DescribeWithin(std::time::Duration, RpcReplyPort<SupervisorInfo>),
    /// A start job's report.
    Started {
        id: String,
        generation: u64,
        result: Result<ActorCell, String>,
    },
    /// A stop job's report.
    Stopped { id: String, generation: u64 },
    /// A lifecycle record did not become durable.
    WriteFailed(String),
    /// Crashes a child of the supervisor named in the request, wherever it is under this
    /// one (see `fault.rs`); answers what its supervisor will do, or `None` when no such
    /// supervisor is found here.
    Crash(CrashRequest, CrashReply),
    /// Pings or holds a running child wherever it is under this one (see `reach.rs`).
    Reach(ReachRequest, ReachReply),
    /// Answers at once: this supervisor's loop takes messages (the watchdog's ping).
    Ping(RpcReplyPort<()>),
    /// Holds this supervisor's loop until `release` turns true (a HANG); `held` is told
    /// once it is held.
    Hold(
        tokio::sync::watch::Receiver<bool>,
        tokio::sync::mpsc::UnboundedSender<()>,
    ),
}

impl ractor::Message for SupervisorMsg {}

/// Whether the initial children start one after the other (each may rely on the ones before
/// it, as OTP's do) or all at once (independent children such as agents).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOrder {
    Sequential,
    Concurrent,
}

pub struct SupervisorArgs {
    pub name: String,
    pub strategy: Strategy,
    /// Restarts this supervisor makes within a window before it escalates; `None` never
    /// escalates (its children have intensities of their own).
    pub intensity: Option<Intensity>,
    pub backoff: Backoff,
    pub children: Vec<Arc<dyn ChildSpec>>,
    pub start_order: StartOrder,
    pub store: Store,
}

#[derive(Debug, Clone)]
pub(super) enum Slot {
    Starting,
    Running(ActorCell),
    Restarting,
    Stopping,
}

impl Slot {
    pub(super) fn as_str(&self) -> &'static str {
        match self {
            Slot::Starting => "STARTING",
            Slot::Running(_) => "RUNNING",
            Slot::Restarting => "RESTARTING",
            Slot::Stopping => "STOPPING",
        }
    }
}

pub(super) struct Child {
    pub spec: Arc<dyn ChildSpec>,
    pub slot: Slot,
    pub restarts: u32,
    generation: u64,
    /// Who asked for this child's first start and waits for its outcome.
    on_started: Option<RpcReplyPort<Result<(), String>>>,
    /// Who asked for this child's stop.
    on_stopped: Vec<RpcReplyPort<bool>>,
}

pub struct State {
    pub(super) name: String,
    pub(super) ladder: RestartLadder,
    /// By id, in start order: lookups stay O(1) with thousands of children.
    pub(super) children: IndexMap<String, Child>,
    store: Store,
    myself: ActorRef<SupervisorMsg>,
    /// Exits of actors not known as running children (yet): a child that dies at once can
    /// be reported before its start job's report arrives.
    early_exits: VecDeque<(ActorId, Exit, String)>,
    /// Children killed for not answering: their exit is a failure.
    killed: std::collections::HashSet<ActorId>,
}

/// How many unmatched exits are remembered.
const EARLY_EXITS: usize = 256;

/// A supervisor actor; spawn it with [`SupervisorArgs`].
#[derive(Debug, Default)]
pub struct Supervisor;

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = State;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<State, ActorProcessingErr> {
        let mut state = State {
            name: args.name,
            ladder: RestartLadder::new(args.strategy, args.intensity, args.backoff),
            children: IndexMap::new(),
            store: args.store,
            myself: myself.clone(),
            early_exits: VecDeque::new(),
            killed: Default::default(),
        };
        for spec in args.children {
            match args.start_order {
                StartOrder::Sequential => match jobs::start(spec.clone(), &myself).await {
                    Ok(cell) => {
                        state
                            .children
                            .insert(spec.id().to_owned(), Child::new(spec.clone(), Slot::Running(cell)));
                        state.record(&spec, ChildEvent::Started);
                    }
                    Err(e) => {
                        state.stop_all().await;
                        return Err(format!("child {} did not start: {e}", spec.id()).into());
                    }
                },
                StartOrder::Concurrent => {
                    let child = Child::new(spec.clone(), Slot::Starting);
                    let start = Start {
                        spec,
                        generation: child.generation,
                    };
                    state.children.insert(start.spec.id().to_owned(), child);
                    jobs::spawn(myself.clone(), vec![], std::time::Duration::ZERO, vec![start]);
                }
            }
        }
        tracing::info!(supervisor = %state.name, children = state.children.len(), "supervisor started");
        Ok(state)
    }

    async fn post_stop(&self, _myself: ActorRef<SupervisorMsg>, state: &mut State) -> Result<(), ActorProcessingErr> {
        state.stop_all().await;
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::StartChild(spec, reply) => {
                if state.position(spec.id()).is_some() {
                    let _ = reply.send(Err(format!("child {} already exists", spec.id())));
                    return Ok(());
                }
                let mut child = Child::new(spec.clone(), Slot::Starting);
                child.on_started = Some(reply);
                let start = Start {
                    spec,
                    generation: child.generation,
                };
                state.children.insert(start.spec.id().to_owned(), child);
                jobs::spawn(state.myself.clone(), vec![], std::time::Duration::ZERO, vec![start]);
            }
            SupervisorMsg::Started { id, generation, result } => state.started(&id, generation, result).await?,
            SupervisorMsg::TerminateChild(id, reply) => state.terminate(&id, reply),
            SupervisorMsg::Stopped { id, generation } => state.stopped(&id, generation),
            SupervisorMsg::Children(reply) => {
                let list = state
                    .children
                    .values()
                    .map(|c| (c.spec.id().to_owned(), matches!(c.slot, Slot::Running(_))))
                    .collect();
                let _ = reply.send(list);
            }
            SupervisorMsg::Holds(id, reply) => {
                let _ = reply.send(state.children.contains_key(&id));
            }
            SupervisorMsg::Describe(reply) => tree::describe(state, tree::DESCRIBE_TIMEOUT, reply),
            SupervisorMsg::DescribeWithin(within, reply) => tree::describe(state, within, reply),
            SupervisorMsg::Crash(request, reply) => state.crash(request, reply),
            SupervisorMsg::Reach(request, reply) => state.reach(request, reply),
            SupervisorMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            SupervisorMsg::Hold(mut release, held) => {
                tracing::warn!(supervisor = %state.name, "holding this supervisor's loop (fault injection: HANG)");
                let _ = held.send(());
                while !*release.borrow_and_update() {
                    if release.changed().await.is_err() {
                        break;
                    }
                }
            }
            SupervisorMsg::WriteFailed(reason) => {
                return Err(format!(
                    "supervisor {}: a lifecycle record was not written: {reason}",
                    state.name
                )
                .into());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, exit, reason) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Exit::Failed, err.to_string()),
            // An injected crash stops the child with its own reason: a failure, as a panic is.
            SupervisionEvent::ActorTerminated(cell, _, Some(reason)) if reason == INJECTED_CRASH => {
                (cell, Exit::Failed, reason)
            }
            SupervisionEvent::ActorTerminated(cell, _, _) if state.killed.remove(&cell.get_id()) => {
                (cell, Exit::Failed, UNRESPONSIVE.to_owned())
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, Exit::Normal, reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        // Exits of children this supervisor is stopping itself are not failures; an exit of
        // an actor not yet known is kept in case its start report is still on its way.
        let Some(pos) = state
            .children
            .values()
            .position(|c| matches!(&c.slot, Slot::Running(c) if c.get_id() == cell.get_id()))
        else {
            if state.early_exits.len() == EARLY_EXITS {
                state.early_exits.pop_front();
            }
            state.early_exits.push_back((cell.get_id(), exit, reason));
            return Ok(());
        };
        state.on_exit(pos, exit, reason).await
    }
}

impl Child {
    fn new(spec: Arc<dyn ChildSpec>, slot: Slot) -> Self {
        Self {
            spec,
            slot,
            restarts: 0,
            generation: 1,
            on_started: None,
            on_stopped: Vec::new(),
        }
    }
}

impl State {
    fn position(&self, id: &str) -> Option<usize> {
        self.children.get_index_of(id)
    }

    async fn started(
        &mut self,
        id: &str,
        generation: u64,
        result: Result<ActorCell, String>,
    ) -> Result<(), ActorProcessingErr> {
        let current = self.position(id).filter(|&p| {
            let c = &self.children[p];
            c.generation == generation && matches!(c.slot, Slot::Starting | Slot::Restarting)
        });
        let Some(pos) = current else {
            // An abandoned start (the child was stopped or restarted meanwhile) came through.
            if let Ok(cell) = result {
                tokio::spawn(async move { jobs::stop(&cell, STALE_STOP).await });
            }
            return Ok(());
        };
        let spec = self.children[pos].spec.clone();
        match result {
            Ok(cell) => {
                let early = self.early_exits.iter().position(|(id, _, _)| *id == cell.get_id());
                let child = &mut self.children[pos];
                let restarted = matches!(child.slot, Slot::Restarting);
                child.slot = Slot::Running(cell);
                if restarted {
                    child.restarts += 1;
                    let restarts = child.restarts;
                    self.record(&spec, ChildEvent::Restarted { restarts });
                } else {
                    self.record(&spec, ChildEvent::Started);
                }
                if let Some(reply) = self.children[pos].on_started.take() {
                    let _ = reply.send(Ok(()));
                }
                // It already exited: handle that now that it is known.
                if let Some((_, exit, reason)) = early.and_then(|i| self.early_exits.remove(i)) {
                    self.on_exit(pos, exit, reason).await?;
                }
            }
            Err(e) => match self.children[pos].on_started.take() {
                Some(reply) if !spec.retries_a_failed_start() => {
                    // A start someone asked for and waits on: they get the error, nothing retries.
                    self.children.shift_remove_index(pos);
                    self.ladder.forget(spec.id());
                    self.record(
                        &spec,
                        ChildEvent::Failed {
                            reason: format!("did not start: {e}"),
                            restarting: false,
                        },
                    );
                    let _ = reply.send(Err(e));
                }
                waiting => {
                    // Whoever waits learns of it now; the child's restart policy takes it on.
                    if let Some(reply) = waiting {
                        let _ = reply.send(Err(e.clone()));
                    }
                    tracing::warn!(supervisor = %self.name, child = %id, error = %e, "start failed");
                    self.on_exit(pos, Exit::Failed, format!("start failed: {e}")).await?;
                }
            },
        }
        Ok(())
    }

    fn terminate(&mut self, id: &str, reply: RpcReplyPort<bool>) {
        let Some(pos) = self.position(id) else {
            let _ = reply.send(false);
            return;
        };
        let child = &mut self.children[pos];
        match std::mem::replace(&mut child.slot, Slot::Stopping) {
            Slot::Running(cell) => {
                child.on_stopped.push(reply);
                let (supervisor, shutdown) = (self.myself.clone(), child.spec.shutdown());
                let (id, generation) = (id.to_owned(), child.generation);
                tokio::spawn(async move {
                    jobs::stop(&cell, shutdown).await;
                    let _ = supervisor.cast(SupervisorMsg::Stopped { id, generation });
                });
            }
            Slot::Stopping => child.on_stopped.push(reply),
            Slot::Starting | Slot::Restarting => {
                // The pending start is abandoned: its report will find no current child.
                let Some((_, child)) = self.children.shift_remove_index(pos) else {
                    return;
                };
                if let Some(waiting) = child.on_started {
                    let _ = waiting.send(Err("stopped before it started".into()));
                }
                self.ladder.forget(id);
                self.record(&child.spec, ChildEvent::Stopped);
                let _ = reply.send(true);
            }
        }
    }

    fn stopped(&mut self, id: &str, generation: u64) {
        let Some(pos) = self
            .position(id)
            .filter(|&p| self.children[p].generation == generation && matches!(self.children[p].slot, Slot::Stopping))
        else {
            return;
        };
        let Some((_, child)) = self.children.shift_remove_index(pos) else {
            return;
        };
        self.ladder.forget(id);
        self.record(&child.spec, ChildEvent::Stopped);
        for reply in child.on_stopped {
            let _ = reply.send(true);
        }
    }
}

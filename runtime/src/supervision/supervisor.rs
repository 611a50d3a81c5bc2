//! The supervisor actor: carries out [`RestartLadder`] decisions on real children.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde_json::json;

use super::decision::{Backoff, Decision, Exit, Intensity, Restart, RestartLadder, Strategy};
use crate::events::NewEvent;
use crate::store::{Batch, Store};

/// How long a supervisor waits for a child it stops.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What happened to a child, told to its spec so domain code can keep its own records.
#[derive(Debug, Clone)]
pub enum ChildEvent {
    Started,
    Failed { reason: String, restarting: bool },
    Restarted { restarts: u32 },
    Stopped,
}

/// How to (re)create one child. Specs are kept for the child's life and used again on every
/// restart, so a child restarts from its arguments, not from a snapshot of its state.
pub trait ChildSpec: Send + Sync + 'static {
    fn id(&self) -> &str;
    /// Prefix of this child's events: `AGENT` gives `AGENT_FAILED`, `AGENT_RESTARTED`, ...
    fn kind(&self) -> &str;
    fn restart(&self) -> Restart {
        Restart::Permanent
    }
    /// Spawns the child linked to `supervisor`.
    fn start(self: Arc<Self>, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>>;
    /// Called after each lifecycle change, before its event is written. The batch is
    /// committed with the event, so the spec can record state atomically with it.
    fn lifecycle(&self, _event: &ChildEvent, _batch: &mut Batch) {}
    /// Extra fields for this child's events.
    fn event_data(&self) -> serde_json::Value {
        json!({})
    }
}

pub enum SupervisorMsg {
    /// Adds and starts a child; fails if the id is taken or the child does not start.
    StartChild(Arc<dyn ChildSpec>, RpcReplyPort<Result<(), String>>),
    /// Stops a child for good; replies whether it existed.
    TerminateChild(String, RpcReplyPort<bool>),
    /// Ids of the children and whether each is running now.
    Children(RpcReplyPort<Vec<(String, bool)>>),
    /// Starts children after a restart's backoff.
    RestartDue(Vec<String>, u32),
}

impl ractor::Message for SupervisorMsg {}

pub struct SupervisorArgs {
    pub name: String,
    pub strategy: Strategy,
    pub intensity: Intensity,
    pub backoff: Backoff,
    pub children: Vec<Arc<dyn ChildSpec>>,
    pub store: Store,
}

struct Child {
    spec: Arc<dyn ChildSpec>,
    cell: Option<ActorCell>,
    restarts: u32,
}

pub struct State {
    name: String,
    ladder: RestartLadder,
    children: Vec<Child>,
    store: Store,
}

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
            children: Vec::new(),
            store: args.store,
        };
        for spec in args.children {
            state.add(&myself, spec).await?;
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
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::StartChild(spec, reply) => {
                let result = if state.position(spec.id()).is_some() {
                    Err(format!("child {} already exists", spec.id()))
                } else {
                    state.add(&myself, spec).await.map_err(|e| e.to_string())
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::TerminateChild(id, reply) => {
                let found = match state.position(&id) {
                    Some(pos) => {
                        let child = state.children.remove(pos);
                        if let Some(cell) = &child.cell {
                            stop(cell).await;
                        }
                        state.record(&child.spec, ChildEvent::Stopped);
                        true
                    }
                    None => false,
                };
                let _ = reply.send(found);
            }
            SupervisorMsg::Children(reply) => {
                let _ = reply.send(
                    state
                        .children
                        .iter()
                        .map(|c| (c.spec.id().to_owned(), c.cell.is_some()))
                        .collect(),
                );
            }
            SupervisorMsg::RestartDue(ids, restarts) => {
                for id in ids {
                    let Some(pos) = state.position(&id) else { continue };
                    // Two restarts can be pending for one child (a sibling failed during its
                    // backoff); the first one started it.
                    if state.children[pos].cell.is_some() {
                        continue;
                    }
                    let spec = state.children[pos].spec.clone();
                    match spec.clone().start(myself.get_cell()).await {
                        Ok(cell) => {
                            let child = &mut state.children[pos];
                            child.cell = Some(cell);
                            child.restarts += 1;
                            let count = child.restarts;
                            state.record(&spec, ChildEvent::Restarted { restarts: count });
                        }
                        Err(e) => {
                            tracing::warn!(supervisor = %state.name, child = %id, error = %e, restarts, "restart failed");
                            state
                                .on_exit(&myself, pos, Exit::Failed, format!("restart failed: {e}"))
                                .await?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, exit, reason) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Exit::Failed, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, Exit::Normal, reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        // Exits of children this supervisor stopped itself are not failures.
        let Some(pos) = state
            .children
            .iter()
            .position(|c| c.cell.as_ref().is_some_and(|c| c.get_id() == cell.get_id()))
        else {
            return Ok(());
        };
        state.children[pos].cell = None;
        state.on_exit(&myself, pos, exit, reason).await
    }
}

impl State {
    fn position(&self, id: &str) -> Option<usize> {
        self.children.iter().position(|c| c.spec.id() == id)
    }

    async fn add(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        spec: Arc<dyn ChildSpec>,
    ) -> Result<(), ActorProcessingErr> {
        let cell = spec.clone().start(myself.get_cell()).await?;
        self.children.push(Child {
            spec: spec.clone(),
            cell: Some(cell),
            restarts: 0,
        });
        self.record(&spec, ChildEvent::Started);
        Ok(())
    }

    async fn on_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        pos: usize,
        exit: Exit,
        reason: String,
    ) -> Result<(), ActorProcessingErr> {
        let spec = self.children[pos].spec.clone();
        let listing: Vec<(String, Restart, bool)> = self
            .children
            .iter()
            .map(|c| (c.spec.id().to_owned(), c.spec.restart(), c.cell.is_some()))
            .collect();
        let decision = self
            .ladder
            .decide(&listing, spec.id(), exit, tokio::time::Instant::now());
        tracing::warn!(supervisor = %self.name, child = %spec.id(), ?exit, %reason, ?decision, "child exited");
        let restarting = matches!(decision, Decision::Restart { .. });
        match exit {
            Exit::Failed => self.record(
                &spec,
                ChildEvent::Failed {
                    reason: reason.clone(),
                    restarting,
                },
            ),
            Exit::Normal if !restarting => self.record(&spec, ChildEvent::Stopped),
            Exit::Normal => {}
        }
        match decision {
            Decision::Remove => {
                self.children.remove(pos);
            }
            Decision::Restart {
                stop: siblings,
                start,
                delay,
                restarts,
            } => {
                for id in &siblings {
                    if let Some(p) = self.position(id) {
                        if let Some(cell) = self.children[p].cell.take() {
                            stop(&cell).await;
                        }
                    }
                }
                // Stopped siblings that are not coming back are gone for good.
                self.children
                    .retain(|c| c.cell.is_some() || start.iter().any(|id| id == c.spec.id()));
                myself.send_after(delay, move || SupervisorMsg::RestartDue(start, restarts));
            }
            Decision::Escalate { restarts } => {
                let window_ms = self.ladder.intensity.window.as_millis() as u64;
                let event = NewEvent::new(
                    "SUPERVISOR_ESCALATED",
                    Some(self.name.clone()),
                    json!({ "child": spec.id(), "reason": reason, "restarts": restarts, "windowMs": window_ms }),
                );
                if let Err(e) = self.store.write(Batch::new().event(event)).await {
                    tracing::error!(supervisor = %self.name, error = %e, "could not record escalation");
                }
                self.stop_all().await;
                return Err(format!("supervisor {} gave up after {restarts} restarts: {reason}", self.name).into());
            }
        }
        Ok(())
    }

    /// Stops every running child, last started first.
    async fn stop_all(&mut self) {
        for child in self.children.iter_mut().rev() {
            if let Some(cell) = child.cell.take() {
                stop(&cell).await;
            }
        }
    }

    /// Writes the event for a lifecycle change, with whatever the spec records beside it.
    fn record(&self, spec: &Arc<dyn ChildSpec>, event: ChildEvent) {
        let mut batch = Batch::new();
        spec.lifecycle(&event, &mut batch);
        let mut data = spec.event_data();
        let suffix = match &event {
            ChildEvent::Started => "STARTED",
            ChildEvent::Failed { reason, restarting } => {
                data["reason"] = json!(reason);
                data["restarting"] = json!(restarting);
                "FAILED"
            }
            ChildEvent::Restarted { restarts } => {
                data["restarts"] = json!(restarts);
                "RESTARTED"
            }
            ChildEvent::Stopped => "STOPPED",
        };
        if matches!(event, ChildEvent::Restarted { .. }) {
            metrics::counter!("troupe_restarts_total").increment(1);
        }
        let kind = format!("{}_{suffix}", spec.kind());
        batch.push(crate::store::Op::Event(NewEvent::new(
            kind,
            Some(spec.id().to_owned()),
            data,
        )));
        // Not awaited: the writer commits in submission order, and a supervisor must not wait
        // for a disk flush per child (it would make spawning thousands of agents crawl).
        let _ = self.store.submit(batch);
    }
}

/// A nested supervisor as a child of another: its children restart together under its own
/// strategy, and its failure is one child failure for its parent.
pub struct SupervisorSpec {
    pub args: Box<dyn Fn() -> SupervisorArgs + Send + Sync>,
    pub id: String,
}

impl ChildSpec for SupervisorSpec {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &str {
        "SERVICE"
    }

    fn start(self: Arc<Self>, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>> {
        Box::pin(async move {
            let (sup, _) = Actor::spawn_linked(None, Supervisor, (self.args)(), supervisor).await?;
            Ok(sup.get_cell())
        })
    }
}

async fn stop(cell: &ActorCell) {
    if let Err(e) = cell
        .stop_and_wait(Some("stopped by supervisor".into()), Some(STOP_TIMEOUT))
        .await
    {
        tracing::warn!(actor = %cell.get_id(), error = %e, "child did not stop in time; killing it");
        cell.kill();
    }
}

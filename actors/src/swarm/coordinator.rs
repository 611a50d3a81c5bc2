//! A swarm's coordinator: it keeps the swarm at its size (starting members it lacks from its
//! templates, removing the newest beyond it), follows its health from its members' states,
//! sweeps expired memory, and conducts its tasks. Every change is an event on the swarm.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::json;
use tokio::task::JoinHandle;
use troupe_runtime::events::NewEvent;
use troupe_runtime::supervision::ChildSpec;

use super::open;
use super::plan::{self, Load};
use super::records::{self, load_spec};
use super::spec::Topology;
use super::work;
use super::Port;
use super::{memory, rules};
use crate::error::ApiError;

/// How often the coordinator looks at its members and memory.
const TICK: Duration = Duration::from_millis(200);

pub enum CoordinatorMsg {
    Tick,
    /// The watchdog's ping: answered at once unless the loop is stuck.
    Ping(ractor::RpcReplyPort<()>),
    /// Holds the loop until released (fault injection: HANG).
    Hold(
        tokio::sync::watch::Receiver<bool>,
        tokio::sync::mpsc::UnboundedSender<()>,
    ),
    /// Brings the members to the swarm's size now; answers when done.
    Reconcile(RpcReplyPort<Result<(), ApiError>>),
    /// Conducts a new swarm task.
    Conduct(String),
    /// Fails the coordinator (an injected fault).
    Crash(RpcReplyPort<()>),
}

impl ractor::Message for CoordinatorMsg {}

/// Records that an ADAPTIVE swarm now hands out its work as `to`, and why (nothing when it
/// already does).
pub(crate) async fn switch(api: &Port, id: &str, to: Topology, reason: &str) -> Result<(), ApiError> {
    let held = api.locks.hold_spec(id).await;
    records::change(&api.store, &held, |_, status| {
        if status.active == to {
            return Ok(None);
        }
        let from = std::mem::replace(&mut status.active, to);
        let data = json!({ "from": from.as_str(), "to": to.as_str(), "reason": reason });
        Ok(Some(NewEvent::new(
            "SWARM_TOPOLOGY_SWITCHED",
            Some(id.to_owned()),
            data,
        )))
    })
    .await?;
    Ok(())
}

/// Why the coordinator's last start failed, kept for whoever waits on the swarm's start: its
/// supervisor passes a failed start on as text only, and `createSwarm` answers with the
/// member's own error (INVALID_INPUT for a program that is not there, not INTERNAL).
#[derive(Clone, Default)]
pub struct StartFailure(Arc<Mutex<Option<ApiError>>>);

impl StartFailure {
    fn set(&self, error: ApiError) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    /// The error of the last failed start, if one failed since the last take.
    pub(crate) fn take(&self) -> Option<ApiError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

pub(crate) struct CoordinatorChild {
    pub api: Port,
    pub id: String,
    pub failure: StartFailure,
}

impl ChildSpec for CoordinatorChild {
    fn id(&self) -> &str {
        "coordinator"
    }

    fn kind(&self) -> &str {
        "SWARM_COORDINATOR"
    }

    fn start_timeout(&self) -> Duration {
        // It starts the members the swarm lacks before it is up.
        Duration::from_secs(90)
    }

    crate::liveness::pinged_and_held!(CoordinatorMsg);

    fn start(self: Arc<Self>, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>> {
        Box::pin(async move {
            let args = (self.api.clone(), self.id.clone(), self.failure.clone());
            let (actor, _) = Actor::spawn_linked(None, Coordinator, args, supervisor)
                .await
                .map_err(troupe_runtime::supervision::start_failed)?;
            Ok(actor.get_cell())
        })
    }

    fn event_data(&self) -> serde_json::Value {
        json!({ "swarm": self.id })
    }
}

pub struct Coordinator;

pub struct State {
    api: Port,
    id: String,
    conductors: HashMap<String, JoinHandle<()>>,
    ticker: Option<JoinHandle<()>>,
}

/// However the coordinator ends, the work it conducts stops with it; its next start takes
/// the open swarm tasks up again.
impl Drop for State {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        for (_, c) in self.conductors.drain() {
            c.abort();
        }
    }
}

impl Actor for Coordinator {
    type Msg = CoordinatorMsg;
    type State = State;
    type Arguments = (Port, String, StartFailure);

    async fn pre_start(
        &self,
        myself: ActorRef<CoordinatorMsg>,
        (api, id, failure): (Port, String, StartFailure),
    ) -> Result<State, ActorProcessingErr> {
        api.slots.coordinators.set(&id, myself.clone());
        let members = api.members.of(&id).await?.len();
        let held = api.locks.hold_spec(&id).await;
        records::change(&api.store, &held, |_, status| {
            status.coordinator_starts += 1;
            let data = json!({ "starts": status.coordinator_starts, "members": members });
            Ok(Some(NewEvent::new("SWARM_COORDINATOR_STARTED", Some(id.clone()), data)))
        })
        .await?;
        drop(held);
        let mut state = State {
            api,
            id,
            conductors: HashMap::new(),
            ticker: None,
        };
        if let Err(e) = state.reconcile().await {
            failure.set(e.clone());
            return Err(e.into());
        }
        for task in open::open_tasks(&state.api.store, &state.id).await? {
            state.conduct(task);
        }
        state.ticker = Some(myself.send_interval(TICK, || CoordinatorMsg::Tick));
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<CoordinatorMsg>,
        msg: CoordinatorMsg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CoordinatorMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            CoordinatorMsg::Hold(release, held) => crate::liveness::held(&state.id, release, held).await,
            CoordinatorMsg::Tick => {
                state.conductors.retain(|_, c| !c.is_finished());
                if let Err(e) = state.tick().await {
                    tracing::warn!(swarm = %state.id, error = %e, "swarm coordinator tick failed");
                }
            }
            CoordinatorMsg::Reconcile(reply) => {
                let _ = reply.send(state.reconcile().await);
            }
            CoordinatorMsg::Conduct(task) => state.conduct(task),
            CoordinatorMsg::Crash(reply) => {
                let _ = reply.send(());
                return Err(format!("swarm {} coordinator crashed (injected fault)", state.id).into());
            }
        }
        Ok(())
    }
}

impl State {
    fn conduct(&mut self, task: String) {
        if self.conductors.get(&task).is_some_and(|c| !c.is_finished()) {
            return;
        }
        let handle = tokio::spawn(work::conduct(self.api.clone(), task.clone()));
        self.conductors.insert(task, handle);
    }

    /// Starts the members the swarm lacks, and removes the newest beyond its size (a member
    /// leading a sub-team stays), as [`plan::members`] says.
    async fn reconcile(&mut self) -> Result<(), ApiError> {
        let spec = load_spec(&self.api.store, &self.id).await?;
        let members: Vec<String> = self
            .api
            .members
            .of(&self.id)
            .await?
            .into_iter()
            .map(|m| m.spec.id)
            .collect();
        let mut leaders = Vec::new();
        if members.len() > spec.size as usize {
            let teams = super::teams(&self.api.store, Some(&self.id)).await?;
            leaders.extend(teams.into_iter().map(|(_, _, leader)| leader));
        }
        let plan = plan::members(&spec, &members, &leaders, |_| member_suffix());
        for req in plan.start {
            self.api.members.start(&self.id, req).await?;
        }
        for extra in &plan.remove {
            self.api.members.remove(extra).await?;
        }
        Ok(())
    }

    async fn tick(&mut self) -> Result<(), ApiError> {
        let members = self.api.members.of(&self.id).await?;
        let states: Vec<_> = members.iter().map(|m| m.status.state).collect();
        let held = self.api.locks.hold_spec(&self.id).await;
        let (spec, status) = records::change(&self.api.store, &held, |spec, status| {
            let (health, reason) = rules::health(&states, spec.min_agents);
            if status.health == health {
                // The same health for another reason (its size changed): said, with no event.
                status.reason = reason;
                return Ok(None);
            }
            let from = std::mem::replace(&mut status.health, health);
            status.reason = reason.clone();
            status.since = troupe_runtime::clock::now();
            let kind = format!("SWARM_{}", health.as_str());
            let data = json!({ "from": from.as_str(), "to": health.as_str(), "reason": reason });
            Ok(Some(NewEvent::new(&kind, Some(self.id.clone()), data)))
        })
        .await?;
        drop(held);
        memory::sweep(&self.api.store, &self.id).await?;
        let now = troupe_runtime::clock::now();
        // The waiting subtasks are counted only when autoscale may move the size.
        if spec
            .autoscale
            .is_some_and(|p| plan::cooled(status.scaled_at, now, p.cooldown_ms))
        {
            let load = Load {
                waiting: open::waiting(&self.api.store, &self.id).await?,
                busy: members.iter().map(|m| m.stats.running as usize).sum(),
                slots: members.iter().map(|m| m.spec.max_concurrent_tasks as usize).sum(),
            };
            self.autoscale(now, load).await?;
        }
        Ok(())
    }

    /// Moves the size as autoscale says on the records as they are now, and brings the
    /// members to it.
    async fn autoscale(&mut self, now: chrono::DateTime<chrono::Utc>, load: Load) -> Result<(), ApiError> {
        let held = self.api.locks.hold_spec(&self.id).await;
        let mut scaled = false;
        records::change(&self.api.store, &held, |spec, status| {
            let Some((size, reason)) = plan::autoscale(spec, status, now, load) else {
                return Ok(None);
            };
            let data = json!({ "from": spec.size, "to": size, "reason": reason });
            spec.size = size;
            status.scaled_at = Some(now);
            scaled = true;
            Ok(Some(NewEvent::new("SWARM_SCALED", Some(self.id.clone()), data)))
        })
        .await?;
        drop(held);
        if scaled {
            self.reconcile().await?;
        }
        Ok(())
    }
}

/// A new member's name ends in five random hex digits, as a Kubernetes pod's does: short
/// enough to read and say ("reviewer-7d4b9"), distinct among a swarm's members.
fn member_suffix() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[id.len() - 5..].to_owned()
}

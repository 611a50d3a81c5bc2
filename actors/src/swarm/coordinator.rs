//! A swarm's coordinator: it keeps the swarm at its size (starting members it lacks from its
//! templates, removing the newest beyond it), follows its health from its members' states,
//! sweeps expired memory, and conducts its tasks. Every change is an event on the swarm.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::json;
use tokio::task::JoinHandle;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{Batch, Store};
use troupe_runtime::supervision::ChildSpec;

use super::spec::{SwarmSpec, SwarmStatus, Topology};
use super::task::{SwarmTask, SwarmTaskState};
use super::work;
use super::{memory, rules};
use crate::agent::Owner;
use crate::error::ApiError;
use crate::service::AgentAction;
use crate::service::Api;
use crate::tables::{SWARMS, SWARM_STATUS, SWARM_TASKS};

/// How often the coordinator looks at its members and memory.
const TICK: Duration = Duration::from_millis(200);

pub enum CoordinatorMsg {
    Tick,
    /// Brings the members to the swarm's size now; answers when done.
    Reconcile(RpcReplyPort<Result<(), ApiError>>),
    /// Conducts a new swarm task.
    Conduct(String),
    /// Fails the coordinator (an injected fault).
    Crash(RpcReplyPort<()>),
}

impl ractor::Message for CoordinatorMsg {}

pub(crate) async fn load_spec(store: &Store, id: &str) -> Result<SwarmSpec, ApiError> {
    let bytes = store
        .get(SWARMS, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no swarm {id}")))?;
    Ok(troupe_runtime::codec::decode(&bytes)?)
}

async fn save_status(store: &Store, id: &str, status: &SwarmStatus, event: NewEvent) -> Result<(), ApiError> {
    let batch = Batch::new()
        .put(SWARM_STATUS, id.to_owned(), troupe_runtime::codec::encode(status)?)
        .event(event);
    store.write(batch).await?;
    Ok(())
}

/// Records that an ADAPTIVE swarm now hands out its work as `to`, and why (nothing when it
/// already does).
pub(crate) async fn switch(api: &Api, id: &str, to: Topology, reason: &str) -> Result<(), ApiError> {
    let mut status = work::status(api.store(), id).await?;
    if status.active == to {
        return Ok(());
    }
    let from = status.active;
    status.active = to;
    let data = json!({ "from": from.as_str(), "to": to.as_str(), "reason": reason });
    save_status(
        api.store(),
        id,
        &status,
        NewEvent::new("SWARM_TOPOLOGY_SWITCHED", Some(id.to_owned()), data),
    )
    .await
}

pub(crate) struct CoordinatorChild {
    pub api: Api,
    pub id: String,
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

    fn start(self: Arc<Self>, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>> {
        Box::pin(async move {
            let args = (self.api.clone(), self.id.clone());
            let (actor, _) = Actor::spawn_linked(None, Coordinator, args, supervisor).await?;
            Ok(actor.get_cell())
        })
    }

    fn event_data(&self) -> serde_json::Value {
        json!({ "swarm": self.id })
    }
}

pub struct Coordinator;

pub struct State {
    api: Api,
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
    type Arguments = (Api, String);

    async fn pre_start(
        &self,
        myself: ActorRef<CoordinatorMsg>,
        (api, id): (Api, String),
    ) -> Result<State, ActorProcessingErr> {
        api.slots().coordinators.set(&id, myself.clone());
        let store = api.store().clone();
        let mut status = work::status(api.store(), &id).await?;
        status.coordinator_starts += 1;
        let members = api.agents().owned(&Owner::Swarm(id.clone())).await?.len();
        let data = json!({ "starts": status.coordinator_starts, "members": members });
        save_status(
            &store,
            &id,
            &status,
            NewEvent::new("SWARM_COORDINATOR_STARTED", Some(id.clone()), data),
        )
        .await?;
        let mut state = State {
            api,
            id,
            conductors: HashMap::new(),
            ticker: None,
        };
        state.reconcile().await?;
        for task in state.open_tasks().await? {
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

    async fn open_tasks(&self) -> Result<Vec<String>, ApiError> {
        let swarm = self.id.clone();
        Ok(self
            .api
            .store()
            .view(move |v| {
                let mut out = Vec::new();
                v.scan(SWARM_TASKS, None, |id, bytes| {
                    let t: SwarmTask = troupe_runtime::codec::decode(bytes)?;
                    if t.swarm == swarm && t.state == SwarmTaskState::Running {
                        out.push(id.to_owned());
                    }
                    Ok(true)
                })?;
                Ok(out)
            })
            .await?)
    }

    /// Starts the members the swarm lacks, and removes the newest beyond its size (a member
    /// leading a sub-team stays).
    async fn reconcile(&mut self) -> Result<(), ApiError> {
        let spec = load_spec(self.api.store(), &self.id).await?;
        let owner = Owner::Swarm(self.id.clone());
        let members = self.api.agents().owned(&owner).await?;
        let have = members.len();
        let want = spec.size as usize;
        if have < want && !spec.templates.is_empty() {
            for n in have..want {
                let template = &spec.templates[n % spec.templates.len()];
                let mut req = template.clone();
                req.name = format!("{}-{}", template.name, uuid::Uuid::now_v7().simple());
                req.node = None;
                req.start = true;
                if !req.capabilities.contains(&spec.queue_capability()) {
                    req.capabilities.push(spec.queue_capability());
                }
                self.api.agents().create_local(req, owner.clone(), None).await?;
            }
        }
        let mut leaders = Vec::new();
        if have > want {
            let teams = super::teams(self.api.store(), Some(&self.id)).await?;
            leaders.extend(teams.into_iter().map(|(_, _, leader)| leader));
        }
        let removable = members.iter().rev().filter(|m| !leaders.contains(&m.spec.id));
        for extra in removable.take(have.saturating_sub(want)) {
            self.api
                .agents()
                .act_local(&extra.spec.id, AgentAction::Remove, None)
                .await?;
        }
        Ok(())
    }

    async fn tick(&mut self) -> Result<(), ApiError> {
        let spec = load_spec(self.api.store(), &self.id).await?;
        let members = self.api.agents().owned(&Owner::Swarm(self.id.clone())).await?;
        let states: Vec<_> = members.iter().map(|m| m.status.state).collect();
        let (health, reason) = rules::health(&states, spec.min_agents);
        let mut status = work::status(self.api.store(), &self.id).await?;
        if status.health != health {
            let from = status.health;
            status.health = health;
            status.reason = reason.clone();
            status.since = troupe_runtime::clock::now();
            let kind = format!("SWARM_{}", health.as_str());
            let data = json!({ "from": from.as_str(), "to": health.as_str(), "reason": reason });
            save_status(
                self.api.store(),
                &self.id,
                &status,
                NewEvent::new(&kind, Some(self.id.clone()), data),
            )
            .await?;
        }
        memory::sweep(self.api.store(), &self.id).await?;
        if let Some(policy) = spec.autoscale {
            self.autoscale(&spec, &policy, &members, status).await?;
        }
        Ok(())
    }

    /// Moves the size as the autoscale rule says, at most once per cool-down.
    async fn autoscale(
        &mut self,
        spec: &SwarmSpec,
        policy: &super::Autoscale,
        members: &[crate::agent::AgentView],
        mut status: SwarmStatus,
    ) -> Result<(), ApiError> {
        let now = troupe_runtime::clock::now();
        let cooled = status
            .scaled_at
            .is_none_or(|t| now - t >= chrono::Duration::milliseconds(policy.cooldown_ms as i64));
        if !cooled {
            return Ok(());
        }
        let queued = self.waiting().await?;
        let busy: usize = members.iter().map(|m| m.stats.running as usize).sum();
        let slots: usize = members.iter().map(|m| m.spec.max_concurrent_tasks as usize).sum();
        let bounds = (spec.min_agents, spec.max_agents);
        let Some((size, reason)) = rules::autoscale(policy, spec.size, bounds, queued, busy, slots) else {
            return Ok(());
        };
        let mut spec = spec.clone();
        let data = json!({ "from": spec.size, "to": size, "reason": format!("autoscale: {reason}") });
        spec.size = size;
        status.scaled_at = Some(now);
        let batch = Batch::new()
            .put(SWARMS, self.id.clone(), troupe_runtime::codec::encode(&spec)?)
            .put(SWARM_STATUS, self.id.clone(), troupe_runtime::codec::encode(&status)?)
            .event(NewEvent::new("SWARM_SCALED", Some(self.id.clone()), data));
        self.api.store().write(batch).await?;
        self.reconcile().await
    }

    /// How many of the swarm's subtasks wait in the queue now.
    async fn waiting(&self) -> Result<usize, ApiError> {
        let swarm = self.id.clone();
        Ok(self
            .api
            .store()
            .view(move |v| {
                let mut n = 0;
                v.scan(SWARM_TASKS, None, |_, bytes| {
                    let t: SwarmTask = troupe_runtime::codec::decode(bytes)?;
                    if t.swarm == swarm && t.state == SwarmTaskState::Running {
                        for sub in &t.subtasks {
                            if let Some(b) = v.get(crate::tables::TASK_STATUS, sub)? {
                                let s: crate::task::TaskStatus = troupe_runtime::codec::decode(&b)?;
                                n += usize::from(s.state == crate::task::TaskState::Queued);
                            }
                        }
                    }
                    Ok(true)
                })?;
                Ok(n)
            })
            .await?)
    }
}

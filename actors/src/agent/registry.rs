//! The registry of this node's agents: it makes them (spawn), finds them (get, list, count,
//! those of an owner) and hands out each agent's handle ([`AgentChild`]), made from the store
//! when nobody holds it now. What can be done to an agent is in [`super::lifecycle`], its
//! checkpoints in [`super::checkpoints`].
//!
//! It takes the narrow handles it needs from whoever serves the requests: the store, the
//! node's actor slots (scheduler, supervisors, handles), the agents' policy and the
//! idempotency keys.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::ActorRef;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::idempotency::{Claim, Guard, Idempotency};
use troupe_runtime::store::{Batch, Store, StoreError, View};
use troupe_runtime::supervision::{ChildSpec, SupervisorMsg};

use super::checkpoints;
use super::spec::{AgentFilter, AgentSpec, Desired, Owner, SpawnAgentRequest};
use super::status::{AgentState, AgentStats, AgentStatus, AgentView};
use super::{AgentChild, AgentMsg, AgentPolicy, Probe};
use crate::agent::Slots;
use crate::call::{ask, ask_within, split, CALL_TIMEOUT};
use crate::error::ApiError;
use crate::scheduler::SchedulerMsg;
use crate::serving::Serving;
use crate::tables::{AGENTS, AGENT_STATS, AGENT_STATUS, OPEN_TASKS, TASK_STATUS};

/// The agent room's own handles, held rather than lent: what re-homing takes to start here
/// an agent the cluster moved to this node (see [`Registry::adopt`]), without the services.
#[derive(Clone)]
pub struct Adopter {
    pub node: String,
    pub store: Store,
    pub slots: Slots,
    pub policy: AgentPolicy,
    pub idempotency: Idempotency,
    pub serving: Serving,
}

impl Adopter {
    /// Starts here the agent `id` the cluster moved to this node; whether it started.
    pub async fn adopt(&self, id: &str) -> Result<bool, ApiError> {
        Registry {
            node: &self.node,
            store: &self.store,
            slots: &self.slots,
            policy: &self.policy,
            idempotency: &self.idempotency,
            serving: &self.serving,
        }
        .adopt(id)
        .await
    }
}

/// This node's agents, as the handles of the node lend them.
pub struct Registry<'a> {
    /// This node's name: the ids of the agents it makes name it.
    pub node: &'a str,
    pub store: &'a Store,
    pub slots: &'a Slots,
    pub policy: &'a AgentPolicy,
    pub idempotency: &'a Idempotency,
    /// Cleared while the node shuts down: nothing new starts.
    pub serving: &'a Serving,
}

impl Registry<'_> {
    pub(super) fn ensure_serving(&self) -> Result<(), ApiError> {
        self.serving.ensure()
    }

    /// Claims an idempotency key, when the caller gave one.
    pub(super) async fn claim<T: DeserializeOwned>(
        &self,
        scope: &str,
        key: Option<&str>,
        request: &impl Serialize,
    ) -> Result<Option<Claim<T>>, ApiError> {
        crate::call::claim(self.idempotency, scope, key, request).await
    }

    pub(super) fn scheduler(&self) -> Result<ActorRef<SchedulerMsg>, ApiError> {
        self.slots.scheduler.running("the scheduler")
    }

    /// The supervisor that runs the agents of `owner`.
    pub(super) fn supervisor_of(&self, owner: &Owner) -> Result<ActorRef<SupervisorMsg>, ApiError> {
        self.slots.supervisor_of(owner)
    }

    /// Spawns an agent of this node (where it runs was decided on the way here).
    pub async fn spawn(&self, mut req: SpawnAgentRequest, key: Option<&str>) -> Result<AgentView, ApiError> {
        self.ensure_serving()?;
        // A key means the same whichever gateway the request came through.
        req.node = None;
        let guard = match split(self.claim("spawnAgent", key, &req).await?) {
            Ok(guard) => guard,
            Err(id) => return self.found(&id).await,
        };
        self.create(req, Owner::Node, guard).await
    }

    /// Makes an agent of `owner` on this node, and starts it under the owner's supervisor
    /// unless the request only defines it.
    pub async fn create(
        &self,
        req: SpawnAgentRequest,
        owner: Owner,
        guard: Option<Guard>,
    ) -> Result<AgentView, ApiError> {
        // Judged here, on the node that will run the agent: its own allow-list and programs.
        self.policy.secrets.check(&req.backend).await?;
        if req.start {
            // What it needs to start is here, or nothing is made: an agent whose key is not
            // set here was made, refused, restarted five times and left FAILED; one spawned
            // while this node's work was stopped (no lease) was made and not started.
            self.policy.secrets.readable(&req.backend).await?;
            super::preflight(&req.backend).await.map_err(ApiError::InvalidInput)?;
            self.supervisor_of(&owner)?;
        }
        let (state, kind) = match req.start {
            true => (AgentState::Starting, "AGENT_SPAWNED"),
            false => (AgentState::Defined, "AGENT_DEFINED"),
        };
        let spec = AgentSpec {
            id: crate::ids::new_id(self.node),
            name: req.name,
            node: self.node.to_owned(),
            backend: req.backend,
            capabilities: req.capabilities,
            max_concurrent_tasks: req.max_concurrent_tasks.map_or(1, |m| m as u32),
            owner,
            desired: if req.start { Desired::Running } else { Desired::Stopped },
            created_at: troupe_runtime::clock::now(),
            project: req.project.unwrap_or_else(|| "default".into()),
            labels: req.labels.into_iter().collect(),
            limits: req.limits,
            restart: req.restart,
            proficiency: req.proficiency.into_iter().collect(),
            weight: req.weight.unwrap_or(1.0),
            topics: req.topics,
            placement: req.placement,
        };
        let status = AgentStatus::new(state);
        let data = json!({ "name": spec.name, "node": spec.node, "backend": spec.backend.describe(), "project": spec.project });
        let mut batch = Batch::new()
            .put(AGENTS, spec.id.clone(), troupe_runtime::codec::encode(&spec)?)
            .put(AGENT_STATUS, spec.id.clone(), troupe_runtime::codec::encode(&status)?)
            .event(NewEvent::new(kind, Some(spec.id.clone()), data));
        batch = super::owners::file(batch, &spec.owner, &spec.id);
        if let Some(guard) = &guard {
            guard.record(&mut batch, &spec.id)?;
        }
        self.store.write(batch).await?;
        let child = self.new_handle(spec.clone(), status);
        self.slots.handles.insert(child.clone());
        if req.start {
            let supervisor = self.supervisor_of(&spec.owner)?;
            let as_spec: Arc<dyn ChildSpec> = child.clone();
            // The supervisor answers once the start is over, which may take the agent's own
            // start timeout (a process agent's readyTimeoutMs).
            let limit = as_spec.start_timeout() + CALL_TIMEOUT;
            ask_within(
                &supervisor,
                |r| SupervisorMsg::StartChild(as_spec, r),
                "the agent's supervisor",
                limit,
            )
            .await?
            .map_err(|e| did_not_start(&spec.name, &spec.id, &e))?;
            // The supervisor hands the RUNNING record to the store without waiting: as the
            // other lifecycle mutations do, answer once it is written, so a read (or an
            // `agentUpdates` subscription) right after the answer sees the agent running.
            self.store.flush().await?;
        }
        drop(guard);
        Ok(self.views(vec![(spec, child.status())]).await.remove(0))
    }

    fn new_handle(&self, spec: AgentSpec, status: AgentStatus) -> Arc<AgentChild> {
        Arc::new(AgentChild::new(
            spec,
            status,
            self.slots.clone(),
            self.store.clone(),
            self.policy.clone(),
        ))
    }

    /// The agent's handle on this node, made from the store when nobody runs it now.
    pub(super) async fn handle(&self, id: &str) -> Result<Arc<AgentChild>, ApiError> {
        if let Some(handle) = self.slots.handles.get(id) {
            return Ok(handle);
        }
        let (spec, status) = self.read(id).await?.ok_or_else(|| not_found(id))?;
        let handle = self.new_handle(spec, status);
        let latest = {
            let id = id.to_owned();
            self.store.view(move |v| checkpoints::latest_in(v, &id)).await?
        };
        handle.set_latest_checkpoint(latest);
        // Another request may have made one meanwhile: all of them use the same.
        Ok(self.slots.handles.get_or_insert(handle))
    }

    /// What the agent's actor says of itself now, if it runs.
    pub async fn live(&self, id: &str) -> Result<Option<Probe>, ApiError> {
        let Some(actor) = self.slots.handles.get(id).and_then(|h| h.actor()) else {
            return Ok(None);
        };
        Ok(Some(ask(&actor, AgentMsg::Probe, "the agent").await?))
    }

    /// This node's agents of `owner`, in id order (the order they were made), each with its
    /// live status.
    pub async fn owned(&self, owner: &Owner) -> Result<Vec<AgentView>, ApiError> {
        let wanted = owner.clone();
        let found = self.store.view(move |v| super::owners::owned_in(v, &wanted)).await?;
        let live = found
            .into_iter()
            .map(|(spec, status)| {
                let status = self.slots.handles.get(&spec.id).map_or(status, |h| h.status());
                (spec, status)
            })
            .collect();
        Ok(self.views(live).await)
    }

    pub async fn read(&self, id: &str) -> Result<Option<Found>, ApiError> {
        let id = id.to_owned();
        Ok(self.store.view(move |v| read_one(v, &id)).await?)
    }

    pub async fn get(&self, id: &str) -> Result<Option<AgentView>, ApiError> {
        Ok(match self.read(id).await? {
            Some(found) => Some(self.views(vec![found]).await.remove(0)),
            None => None,
        })
    }

    /// The agent, or NOT_FOUND.
    pub(super) async fn found(&self, id: &str) -> Result<AgentView, ApiError> {
        self.get(id).await?.ok_or_else(|| not_found(id))
    }

    /// How many agents are in each state, in one pass over the statuses (what a count per
    /// state would read once per state).
    pub async fn count_by_state(&self) -> Result<HashMap<AgentState, u64>, ApiError> {
        Ok(self
            .store
            .view(move |v| {
                let mut counts = HashMap::new();
                v.scan(AGENTS, None, |id, _| {
                    *counts.entry(read_status(v, id)?.state).or_insert(0) += 1;
                    Ok(true)
                })?;
                Ok(counts)
            })
            .await?)
    }

    pub async fn count(&self, filter: &AgentFilter) -> Result<u64, ApiError> {
        let filter = filter.clone();
        Ok(self
            .store
            .view(move |v| {
                let mut n = 0;
                v.scan(AGENTS, None, |id, bytes| {
                    let spec = troupe_runtime::codec::decode::<AgentSpec>(bytes)?;
                    if spec.matches(&filter) && admitted(v, id, &spec, &filter)? {
                        n += 1;
                    }
                    Ok(true)
                })?;
                Ok(n)
            })
            .await?)
    }

    /// Spec and status with each agent's counters: the live ones of this node's scheduler
    /// for the agents this node holds; for an agent another member holds, those its
    /// scheduler last recorded, with the tasks the log has running on it (its breaker and
    /// recent figures live in that member's memory only, and show as new).
    pub async fn views(&self, found: Vec<Found>) -> Vec<AgentView> {
        let ids: Vec<String> = found.iter().map(|(s, _)| s.id.clone()).collect();
        let node = self.node.to_owned();
        let recorded = self
            .store
            .view(move |v| recorded_elsewhere(v, ids, &node))
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not read the counters of agents held elsewhere");
                (Vec::new(), HashMap::new())
            });
        let (held, mut counters) = recorded;
        if !held.is_empty() {
            if let Ok(s) = self.scheduler() {
                let live: HashMap<String, AgentStats> = ask(&s, |r| SchedulerMsg::Counters(held, r), "the scheduler")
                    .await
                    .unwrap_or_default();
                counters.extend(live);
            }
        }
        found
            .into_iter()
            .map(|(spec, status)| AgentView {
                stats: counters.get(&spec.id).copied().unwrap_or_default(),
                spec,
                status,
            })
            .collect()
    }
}

/// Of these agents, the ones `node` holds; and the counters of the others as the store has
/// them, `running` counted from the tasks the log has running on each.
fn recorded_elsewhere(
    v: &View<'_>,
    ids: Vec<String>,
    node: &str,
) -> Result<(Vec<String>, HashMap<String, AgentStats>), StoreError> {
    let mut held = Vec::new();
    let mut elsewhere = HashMap::new();
    for id in ids {
        if crate::cluster::directory::held_in(v, &id, node)? {
            held.push(id);
            continue;
        }
        let mut stats: AgentStats = match v.get(AGENT_STATS, &id)? {
            Some(bytes) => troupe_runtime::codec::decode(&bytes)?,
            None => AgentStats::default(),
        };
        // What a stored copy says of the live figures is not what is true now.
        stats.running = 0;
        stats.recent = Default::default();
        stats.breaker = Default::default();
        elsewhere.insert(id, stats);
    }
    if !elsewhere.is_empty() {
        v.scan(OPEN_TASKS, None, |task, _| {
            if let Some(bytes) = v.get(TASK_STATUS, task)? {
                let status: crate::task::TaskStatus = troupe_runtime::codec::decode(&bytes)?;
                if status.state.is_running() {
                    if let Some(stats) = status.agent_id.as_deref().and_then(|a| elsewhere.get_mut(a)) {
                        stats.running += 1;
                    }
                }
            }
            Ok(true)
        })?;
    }
    Ok((held, elsewhere))
}

/// An agent as the store keeps it.
pub type Found = (AgentSpec, AgentStatus);

/// Reads an agent of the store that `filter` matches, for a page of a listing.
pub fn matching(
    filter: &AgentFilter,
) -> impl Fn(&View<'_>, &str, &[u8]) -> Result<Option<Found>, StoreError> + Send + 'static {
    let filter = filter.clone();
    let everything = filter == AgentFilter::default();
    move |v, id, bytes| {
        if !everything && !troupe_runtime::codec::decode::<AgentSpec>(bytes)?.matches(&filter) {
            return Ok(None);
        }
        Ok(read_one(v, id)?.filter(|(spec, status)| filter.admits(spec, status)))
    }
}

/// Whether the agent's recorded status passes the filter (always, with no state or
/// capability asked).
fn admitted(v: &View<'_>, id: &str, spec: &AgentSpec, filter: &AgentFilter) -> Result<bool, StoreError> {
    if filter.state.is_none() && filter.capability.is_none() {
        return Ok(true);
    }
    Ok(filter.admits(spec, &read_status(v, id)?))
}

/// An agent's recorded status (STARTING when none is recorded yet).
fn read_status(v: &View<'_>, id: &str) -> Result<AgentStatus, StoreError> {
    Ok(match v.get(AGENT_STATUS, id)? {
        Some(b) => troupe_runtime::codec::decode(&b)?,
        None => AgentStatus::new(AgentState::Starting),
    })
}

/// A start that failed: the agent exists, and its supervisor tries again by its restart limit.
/// The agent is named as people know it (`name`), its id beside it for scripts.
pub(super) fn did_not_start(name: &str, id: &str, why: &str) -> ApiError {
    ApiError::Unavailable(format!(
        "agent {name} ({id}) was made but did not start: {why}; its supervisor tries again within its restart limit (see the agent's state; removeAgent gives up on it)"
    ))
}

pub(super) fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("no agent {id}"))
}

pub(super) fn read_one(v: &View<'_>, id: &str) -> Result<Option<Found>, StoreError> {
    let Some(spec) = v.get(AGENTS, id)? else {
        return Ok(None);
    };
    let spec: AgentSpec = troupe_runtime::codec::decode(&spec)?;
    Ok(Some((spec, read_status(v, id)?)))
}

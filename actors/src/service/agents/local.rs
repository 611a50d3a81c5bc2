//! The agents service's work on this node's own agents.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{Batch, View};
use troupe_runtime::supervision::{ChildSpec, SupervisorMsg};

use super::Agents;
use crate::agent::{
    gauge_moved, AgentChild, AgentFilter, AgentSpec, AgentState, AgentStats, AgentStatus, AgentView, Desired, Owner,
    SpawnAgentRequest,
};
use crate::error::ApiError;
use crate::scheduler::SchedulerMsg;
use crate::service::context::{ask, ask_within, split, CALL_TIMEOUT};
use crate::service::listing::page_local;
use crate::tables::{AGENTS, AGENT_STATUS};

impl Agents {
    pub(crate) async fn spawn_local(
        &self,
        mut req: SpawnAgentRequest,
        key: Option<&str>,
    ) -> Result<AgentView, ApiError> {
        self.ctx.ensure_serving()?;
        // Where it runs was decided on the way here: a key means the same whichever gateway
        // the request came through.
        req.node = None;
        let guard = match split(self.ctx.claim("spawnAgent", key, &req).await?) {
            Ok(guard) => guard,
            Err(id) => {
                return self
                    .get_local(&id)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(format!("no agent {id}")))
            }
        };
        self.create_local(req, Owner::Node, guard).await
    }

    /// Makes an agent of `owner` on this node, and starts it under the owner's supervisor
    /// unless the request only defines it.
    pub(crate) async fn create_local(
        &self,
        req: SpawnAgentRequest,
        owner: Owner,
        guard: Option<troupe_runtime::idempotency::Guard>,
    ) -> Result<AgentView, ApiError> {
        // Judged here, on the node that will run the agent: its own allow-list and programs.
        self.ctx.agent_policy.secrets.check(&req.backend).await?;
        if req.start {
            crate::agent::preflight(&req.backend)
                .await
                .map_err(ApiError::InvalidInput)?;
        }
        let now = troupe_runtime::clock::now();
        let spec = AgentSpec {
            id: crate::ids::new_id(&self.ctx.node_name),
            name: req.name,
            node: self.ctx.node_name.clone(),
            backend: req.backend,
            capabilities: req.capabilities,
            max_concurrent_tasks: req.max_concurrent_tasks.map_or(1, |m| m as u32),
            owner,
            desired: Desired::Running,
            created_at: now,
            project: req.project.unwrap_or_else(|| "default".into()),
            labels: req.labels.into_iter().collect(),
            limits: req.limits,
            restart: req.restart,
            proficiency: req.proficiency.into_iter().collect(),
            weight: req.weight.unwrap_or(1.0),
            topics: req.topics,
        };
        let (state, kind) = match req.start {
            true => (AgentState::Starting, "AGENT_SPAWNED"),
            false => (AgentState::Defined, "AGENT_DEFINED"),
        };
        let spec = AgentSpec {
            desired: if req.start { Desired::Running } else { Desired::Stopped },
            ..spec
        };
        let status = AgentStatus::new(state);
        let data = json!({ "name": spec.name, "node": spec.node, "backend": spec.backend.describe(), "project": spec.project });
        let mut batch = Batch::new()
            .put(AGENTS, spec.id.clone(), troupe_runtime::codec::encode(&spec)?)
            .put(AGENT_STATUS, spec.id.clone(), troupe_runtime::codec::encode(&status)?)
            .event(NewEvent::new(kind, Some(spec.id.clone()), data));
        if let Some(guard) = &guard {
            guard.record(&mut batch, &spec.id)?;
        }
        self.ctx.store.write(batch).await?;
        gauge_moved(None, Some(state));
        let child = Arc::new(AgentChild::new(
            spec.clone(),
            status,
            self.ctx.slots.clone(),
            self.ctx.store.clone(),
            self.ctx.agent_policy.clone(),
        ));
        self.ctx.slots.handles.insert(child.clone());
        if !req.start {
            drop(guard);
            return Ok(self.views(vec![(spec, child.status())]).await.remove(0));
        }
        let supervisor = self.ctx.supervisor_of(&spec.owner)?;
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
        .map_err(|e| did_not_start(&spec.id, &e))?;
        drop(guard);
        Ok(self.views(vec![(spec, child.status())]).await.remove(0))
    }

    /// This node's agents of `owner`, in id order (the order they were made), each with its
    /// live status.
    pub(crate) async fn owned(&self, owner: &Owner) -> Result<Vec<AgentView>, ApiError> {
        let wanted = owner.clone();
        let (found, _) = page_local(&self.ctx.store, AGENTS, None, usize::MAX - 1, move |v, id, bytes| {
            if troupe_runtime::codec::decode::<AgentSpec>(bytes)?.owner == wanted {
                read_one(v, id)
            } else {
                Ok(None)
            }
        })
        .await?;
        let live = found
            .into_iter()
            .map(|(spec, status)| {
                let status = self.ctx.slots.handles.get(&spec.id).map_or(status, |h| h.status());
                (spec, status)
            })
            .collect();
        Ok(self.views(live).await)
    }

    pub(crate) async fn read(&self, id: &str) -> Result<Option<(AgentSpec, AgentStatus)>, ApiError> {
        let id = id.to_owned();
        Ok(self.ctx.store.view(move |v| read_one(v, &id)).await?)
    }

    pub(crate) async fn get_local(&self, id: &str) -> Result<Option<AgentView>, ApiError> {
        Ok(match self.read(id).await? {
            Some(found) => Some(self.views(vec![found]).await.remove(0)),
            None => None,
        })
    }

    /// This node's agents in id order, after the cursor; the flag says whether more follow.
    pub(crate) async fn list_local(
        &self,
        after: Option<String>,
        first: usize,
        filter: &AgentFilter,
    ) -> Result<(Vec<AgentView>, bool), ApiError> {
        let filter = filter.clone();
        let everything = filter == AgentFilter::default();
        let (page, more) = page_local(&self.ctx.store, AGENTS, after, first, move |v, id, bytes| {
            if everything || troupe_runtime::codec::decode::<AgentSpec>(bytes)?.matches(&filter) {
                read_one(v, id)
            } else {
                Ok(None)
            }
        })
        .await?;
        Ok((self.views(page).await, more))
    }

    pub(crate) async fn count_local(&self, filter: &AgentFilter) -> Result<u64, ApiError> {
        if *filter == AgentFilter::default() {
            return Ok(self.ctx.store.view(|v| v.len(AGENTS)).await?);
        }
        let filter = filter.clone();
        Ok(self
            .ctx
            .store
            .view(move |v| {
                let mut n = 0;
                v.scan(AGENTS, None, |_, bytes| {
                    n += u64::from(troupe_runtime::codec::decode::<AgentSpec>(bytes)?.matches(&filter));
                    Ok(true)
                })?;
                Ok(n)
            })
            .await?)
    }

    /// Spec and status with the scheduler's live counters.
    pub(crate) async fn views(&self, found: Vec<(AgentSpec, AgentStatus)>) -> Vec<AgentView> {
        let ids = found.iter().map(|(s, _)| s.id.clone()).collect();
        let counters: HashMap<String, AgentStats> = match self.ctx.scheduler() {
            Ok(s) => ask(&s, |r| SchedulerMsg::Counters(ids, r), "the scheduler")
                .await
                .unwrap_or_default(),
            Err(_) => HashMap::new(),
        };
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

/// A start that failed: the agent exists, and its supervisor tries again by its restart limit.
pub(super) fn did_not_start(id: &str, why: &str) -> ApiError {
    ApiError::Unavailable(format!(
        "agent {id} did not start: {why}; its supervisor tries again within its restart limit (see the agent's state)"
    ))
}

fn read_one(v: &View<'_>, id: &str) -> Result<Option<(AgentSpec, AgentStatus)>, troupe_runtime::store::StoreError> {
    let Some(spec) = v.get(AGENTS, id)? else {
        return Ok(None);
    };
    let spec: AgentSpec = troupe_runtime::codec::decode(&spec)?;
    let status = match v.get(AGENT_STATUS, id)? {
        Some(b) => troupe_runtime::codec::decode(&b)?,
        None => AgentStatus::new(AgentState::Starting),
    };
    Ok(Some((spec, status)))
}

//! The agents service's work on this node's own agents.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{Batch, View};
use troupe_runtime::supervision::{ChildSpec, SupervisorMsg};

use super::Agents;
use crate::agent::{
    gauge_moved, AgentChild, AgentSpec, AgentState, AgentStats, AgentStatus, AgentView, Desired, Owner,
    SpawnAgentRequest,
};
use crate::error::ApiError;
use crate::scheduler::SchedulerMsg;
use crate::service::context::{ask, keep, split};
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
        let now = troupe_runtime::clock::now();
        let spec = AgentSpec {
            id: crate::ids::new_id(&self.ctx.node_name),
            name: req.name,
            node: self.ctx.node_name.clone(),
            backend: req.backend,
            capabilities: req.capabilities,
            max_concurrent_tasks: req.max_concurrent_tasks.map_or(1, |m| m as u32),
            owner: Owner::Node,
            desired: Desired::Running,
            created_at: now,
        };
        let status = AgentStatus::new(AgentState::Starting);
        let data = json!({ "name": spec.name, "node": spec.node, "backend": spec.backend.describe() });
        let mut batch = Batch::new()
            .put(AGENTS, spec.id.clone(), troupe_runtime::codec::encode(&spec)?)
            .put(AGENT_STATUS, spec.id.clone(), troupe_runtime::codec::encode(&status)?)
            .event(NewEvent::new("AGENT_SPAWNED", Some(spec.id.clone()), data));
        if let Some(guard) = &guard {
            guard.record(&mut batch, &spec.id)?;
        }
        self.ctx.store.write(batch).await?;
        gauge_moved(None, Some(AgentState::Starting));
        let child = Arc::new(AgentChild::new(
            spec.clone(),
            status,
            self.ctx.slots.clone(),
            self.ctx.agent_policy,
        ));
        let supervisor = self.ctx.agents_supervisor()?;
        let as_spec: Arc<dyn ChildSpec> = child.clone();
        ask(
            &supervisor,
            |r| SupervisorMsg::StartChild(as_spec, r),
            "the agents supervisor",
        )
        .await?
        .map_err(|e| ApiError::Internal(format!("agent {} did not start: {e}", spec.id)))?;
        drop(guard);
        Ok(self.views(vec![(spec, child.status())]).await.remove(0))
    }

    pub(crate) async fn stop_local(&self, id: &str, key: Option<&str>) -> Result<AgentView, ApiError> {
        let guard = match split(self.ctx.claim("stopAgent", key, &id).await?) {
            Ok(guard) => guard,
            Err(id) => {
                return self
                    .get_local(&id)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(format!("no agent {id}")))
            }
        };
        let (mut spec, status) = self
            .read(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no agent {id}")))?;
        if spec.desired == Desired::Stopped {
            return Err(ApiError::Conflict(format!("agent {id} is already stopped")));
        }
        // The wish first, durably: a crash from here on does not bring the agent back.
        spec.desired = Desired::Stopped;
        self.ctx
            .store
            .write(Batch::new().put(AGENTS, id, troupe_runtime::codec::encode(&spec)?))
            .await?;
        let supervisor = self.ctx.agents_supervisor()?;
        let stopped = ask(
            &supervisor,
            |r| SupervisorMsg::TerminateChild(id.to_owned(), r),
            "the agents supervisor",
        )
        .await?;
        if !stopped {
            // Not under supervision (given up on, FAILED): the stop is recorded here.
            let mut status = status;
            let before = status.state;
            status.state = AgentState::Stopped;
            status.updated_at = troupe_runtime::clock::now();
            let data = json!({ "name": spec.name, "node": spec.node });
            self.ctx
                .store
                .write(
                    Batch::new()
                        .put(AGENT_STATUS, id, troupe_runtime::codec::encode(&status)?)
                        .event(NewEvent::new("AGENT_STOPPED", Some(id.to_owned()), data)),
                )
                .await?;
            gauge_moved(Some(before), Some(AgentState::Stopped));
        }
        // The supervisor's record of the stop is durable before we answer.
        self.ctx.store.flush().await?;
        keep(&self.ctx.store, guard, id).await?;
        self.get_local(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no agent {id}")))
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
    ) -> Result<(Vec<AgentView>, bool), ApiError> {
        let mut page = self
            .ctx
            .store
            .view(move |v| {
                let mut ids = Vec::new();
                v.scan(AGENTS, after.as_deref(), |id, _| {
                    ids.push(id.to_owned());
                    Ok(ids.len() <= first)
                })?;
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    if let Some(found) = read_one(v, &id)? {
                        out.push(found);
                    }
                }
                Ok(out)
            })
            .await?;
        let more = page.len() > first;
        page.truncate(first);
        Ok((self.views(page).await, more))
    }

    pub(crate) async fn count_local(&self) -> Result<u64, ApiError> {
        Ok(self.ctx.store.view(|v| v.len(AGENTS)).await?)
    }

    /// Spec and status with the scheduler's live counters.
    async fn views(&self, found: Vec<(AgentSpec, AgentStatus)>) -> Vec<AgentView> {
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

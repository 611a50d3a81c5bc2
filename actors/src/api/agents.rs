//! Agent operations: spawn (here or on a named peer), stop, look up, list.

use std::sync::Arc;

use ractor::rpc::CallResult;
use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{Batch, StoreError, Table};
use troupe_runtime::supervision::{ChildSpec, SupervisorMsg};

use super::{peer, Api, CALL_TIMEOUT};
use crate::agent::{AgentChild, AgentRecord, AgentSpec, AgentState, AgentView, SpawnAgentRequest};
use crate::cluster::{PeerRequest, PeerResponse};
use crate::error::ApiError;
use crate::scheduler::{AgentCounters, SchedulerMsg};

impl Api {
    pub async fn spawn_agent(&self, req: SpawnAgentRequest) -> Result<AgentView, ApiError> {
        req.validate()?;
        if let Some(node) = req.node.clone().filter(|n| n != self.node_name()) {
            let node = node.as_str();
            if !self.inner.cluster.is_connected(node) {
                return Err(ApiError::invalid(format!("unknown or unreachable node {node:?}")));
            }
            return match self.inner.cluster.call(node, &PeerRequest::SpawnAgent(req)).await? {
                PeerResponse::Agent(Some(view)) => Ok(view),
                other => Err(ApiError::Internal(format!("unexpected peer answer {other:?}"))),
            };
        }
        self.spawn_local(req).await
    }

    pub(super) async fn spawn_local(&self, req: SpawnAgentRequest) -> Result<AgentView, ApiError> {
        self.ensure_serving()?;
        let now = troupe_runtime::clock::now();
        let spec = AgentSpec {
            id: uuid::Uuid::now_v7().to_string(),
            name: req.name,
            node: self.node_name().to_owned(),
            backend: req.backend,
            capabilities: req.capabilities,
            max_concurrent_tasks: req.max_concurrent_tasks.map_or(1, |m| m as u32),
            created_at: now,
        };
        let record = AgentRecord {
            spec,
            state: AgentState::Starting,
            restarts: 0,
            last_error: None,
            updated_at: now,
        };
        let data =
            json!({ "name": record.spec.name, "node": record.spec.node, "backend": record.spec.backend.describe() });
        self.inner
            .store
            .write(
                Batch::new()
                    .put(
                        Table::Agents,
                        record.spec.id.clone(),
                        troupe_runtime::codec::encode(&record)?,
                    )
                    .event(NewEvent::new("AGENT_SPAWNED", Some(record.spec.id.clone()), data)),
            )
            .await?;
        let child = Arc::new(AgentChild::new(record, self.inner.services.clone()));
        let supervisor = self.agents_supervisor()?;
        let spec: Arc<dyn ChildSpec> = child.clone();
        match supervisor
            .call(|r| SupervisorMsg::StartChild(spec, r), Some(CALL_TIMEOUT))
            .await?
        {
            CallResult::Success(Ok(())) => {}
            CallResult::Success(Err(e)) => return Err(ApiError::Internal(format!("agent did not start: {e}"))),
            _ => return Err(ApiError::Unavailable("the agents supervisor did not answer".into())),
        }
        Ok(self.view(child.record()).await)
    }

    pub(super) fn agents_supervisor(&self) -> Result<ractor::ActorRef<SupervisorMsg>, ApiError> {
        self.inner
            .services
            .agents
            .get()
            .ok_or_else(|| ApiError::Unavailable("the agents supervisor is not running".into()))
    }

    pub async fn stop_agent(&self, id: &str) -> Result<AgentView, ApiError> {
        let local = self.stop_local(id).await;
        self.or_on_peers(local, PeerRequest::StopAgent(id.into()), peer::agent)
            .await
    }

    pub(super) async fn stop_local(&self, id: &str) -> Result<AgentView, ApiError> {
        let record = self
            .local_agent(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no agent {id}")))?;
        if record.state == AgentState::Stopped {
            return Err(ApiError::Conflict(format!("agent {id} is already stopped")));
        }
        let supervisor = self.agents_supervisor()?;
        let stopped = matches!(
            supervisor
                .call(|r| SupervisorMsg::TerminateChild(id.to_owned(), r), Some(CALL_TIMEOUT))
                .await?,
            CallResult::Success(true)
        );
        if stopped {
            // The supervisor recorded the stop; make it durable before answering.
            self.inner.store.flush().await?;
        } else {
            let mut record = record;
            record.state = AgentState::Stopped;
            record.updated_at = troupe_runtime::clock::now();
            let data = json!({ "name": record.spec.name, "node": record.spec.node });
            self.inner
                .store
                .write(
                    Batch::new()
                        .put(Table::Agents, id, troupe_runtime::codec::encode(&record)?)
                        .event(NewEvent::new("AGENT_STOPPED", Some(id.to_owned()), data)),
                )
                .await?;
        }
        let record = self
            .local_agent(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no agent {id}")))?;
        Ok(self.view(record).await)
    }

    pub(super) async fn local_agent(&self, id: &str) -> Result<Option<AgentRecord>, StoreError> {
        match self.inner.store.get(Table::Agents, id).await? {
            Some(bytes) => Ok(Some(troupe_runtime::codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// An agent of this node or, failing that, of a connected peer.
    pub async fn agent(&self, id: &str) -> Result<Option<AgentView>, ApiError> {
        if let Some(record) = self.local_agent(id).await? {
            return Ok(Some(self.view(record).await));
        }
        Ok(self
            .inner
            .cluster
            .find(&PeerRequest::GetAgent(id.into()), peer::agent)
            .await)
    }

    /// The cluster's agents in id order after the cursor: this node's and every connected
    /// peer's (a peer that does not answer in time is left out of the page and logged).
    pub async fn agents(&self, after: Option<String>, first: usize) -> Result<(Vec<AgentView>, bool), ApiError> {
        let mut pages = vec![self.local_agents(after.clone(), first).await?];
        let request = PeerRequest::ListAgents {
            after,
            first: first as u32,
        };
        pages.extend(
            self.cluster()
                .gather(&request, |r| match r {
                    PeerResponse::Agents(v, more) => Some((v, more)),
                    _ => None,
                })
                .await,
        );
        Ok(peer::merge_pages(pages, first, |a| a.record.spec.id.as_str()))
    }

    /// How many agents the cluster has.
    pub async fn count_agents(&self) -> Result<u64, ApiError> {
        let remote: u64 = self
            .cluster()
            .gather(&PeerRequest::CountAgents, peer::count)
            .await
            .into_iter()
            .sum();
        Ok(self.local_count_agents().await? + remote)
    }

    pub(super) async fn local_count_agents(&self) -> Result<u64, ApiError> {
        Ok(self.inner.store.count(Table::Agents, |_| true).await?)
    }

    /// This node's agents in id order, after the cursor; the flag says whether more follow.
    pub(super) async fn local_agents(
        &self,
        after: Option<String>,
        first: usize,
    ) -> Result<(Vec<AgentView>, bool), ApiError> {
        let page = self.inner.store.scan(Table::Agents, after, first + 1, |_| true).await?;
        let more = page.len() > first;
        let records = page
            .into_iter()
            .take(first)
            .map(|(_, b)| troupe_runtime::codec::decode::<AgentRecord>(&b))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((self.views(records).await, more))
    }

    /// How many of this node's agents are in each state.
    pub async fn agent_states(&self) -> Result<Vec<(AgentState, u64)>, ApiError> {
        let all = self.inner.store.scan(Table::Agents, None, usize::MAX, |_| true).await?;
        let mut counts = [0u64; 5];
        for (_, b) in all {
            let r: AgentRecord = troupe_runtime::codec::decode(&b)?;
            counts[r.state as usize] += 1;
        }
        let states = [
            AgentState::Starting,
            AgentState::Running,
            AgentState::Restarting,
            AgentState::Failed,
            AgentState::Stopped,
        ];
        Ok(states.into_iter().map(|s| (s, counts[s as usize])).collect())
    }

    pub(super) async fn view(&self, record: AgentRecord) -> AgentView {
        self.views(vec![record])
            .await
            .pop()
            .expect("one record in, one view out")
    }

    pub(super) async fn views(&self, records: Vec<AgentRecord>) -> Vec<AgentView> {
        let ids = records.iter().map(|r| r.spec.id.clone()).collect();
        let counters = match self.inner.services.scheduler.get() {
            Some(s) => match s.call(|r| SchedulerMsg::Counters(ids, r), Some(CALL_TIMEOUT)).await {
                Ok(CallResult::Success(c)) => c,
                _ => Default::default(),
            },
            None => Default::default(),
        };
        records
            .into_iter()
            .map(|record| {
                let c: AgentCounters = counters.get(&record.spec.id).copied().unwrap_or_default();
                AgentView {
                    running_tasks: c.running,
                    tasks_succeeded: c.succeeded,
                    tasks_failed: c.failed,
                    record,
                }
            })
            .collect()
    }
}

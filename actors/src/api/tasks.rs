//! Task operations: submit (forwarded to the node of a targeted agent), cancel, look up, list.

use ractor::rpc::CallResult;
use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{Batch, StoreError, Table};

use super::{peer, Api, CALL_TIMEOUT, DEFAULT_MAX_ATTEMPTS};
use crate::agent::AgentState;
use crate::cluster::{PeerRequest, PeerResponse};
use crate::error::ApiError;
use crate::scheduler::SchedulerMsg;
use crate::task::{SubmitTaskRequest, TaskRecord, TaskState};

impl Api {
    pub async fn submit_task(&self, req: SubmitTaskRequest) -> Result<TaskRecord, ApiError> {
        req.validate(self.inner.max_payload_bytes)?;
        if req.agent_id.is_none() {
            return self.submit_local(req).await;
        }
        // submit_local reads the target agent; only an agent it does not have sends us to the
        // peers (a capability task never does).
        let forward = PeerRequest::SubmitTask(req.clone());
        let local = self.submit_local(req).await;
        self.or_on_peers(local, forward, peer::task).await
    }

    pub(super) async fn submit_local(&self, req: SubmitTaskRequest) -> Result<TaskRecord, ApiError> {
        self.ensure_serving()?;
        if let Some(agent) = &req.agent_id {
            match self.local_agent(agent).await? {
                None => return Err(ApiError::NotFound(format!("no agent {agent}"))),
                Some(a) if a.state == AgentState::Stopped => {
                    return Err(ApiError::Conflict(format!("agent {agent} is stopped")));
                }
                Some(_) => {}
            }
        }
        let task = TaskRecord {
            id: uuid::Uuid::now_v7().to_string(),
            state: TaskState::Queued,
            target_agent: req.agent_id,
            capability: req.capability,
            agent_id: None,
            attempts: 0,
            max_attempts: req.max_attempts.map_or(DEFAULT_MAX_ATTEMPTS, |m| m as u32),
            priority: req.priority.unwrap_or(crate::task::Priority::Normal),
            timeout_ms: req.timeout_ms.map(|t| t as u64),
            payload: req.payload,
            result: None,
            error: None,
            created_at: troupe_runtime::clock::now(),
            started_at: None,
            finished_at: None,
        };
        self.persist_queued(&task).await?;
        let scheduler = self.scheduler()?;
        // Durable already: if this cast is lost the scheduler finds the task at its next start.
        let _ = scheduler.cast(SchedulerMsg::Enqueue(task.clone()));
        Ok(task)
    }

    pub(super) async fn persist_queued(&self, task: &TaskRecord) -> Result<(), ApiError> {
        let data = json!({ "agentId": task.target_agent, "capability": task.capability, "priority": format!("{:?}", task.priority).to_uppercase() });
        self.inner
            .store
            .write(
                Batch::new()
                    .put(Table::Tasks, task.id.clone(), troupe_runtime::codec::encode(task)?)
                    .event(NewEvent::new("TASK_QUEUED", Some(task.id.clone()), data)),
            )
            .await?;
        Ok(())
    }

    pub async fn cancel_task(&self, id: &str) -> Result<TaskRecord, ApiError> {
        let local = self.cancel_local(id).await;
        self.or_on_peers(local, PeerRequest::CancelTask(id.into()), peer::task)
            .await
    }

    pub(super) async fn cancel_local(&self, id: &str) -> Result<TaskRecord, ApiError> {
        let scheduler = self.scheduler()?;
        match scheduler
            .call(|r| SchedulerMsg::Cancel(id.to_owned(), r), Some(CALL_TIMEOUT))
            .await?
        {
            CallResult::Success(answer) => answer,
            _ => Err(ApiError::Unavailable("the scheduler did not answer".into())),
        }
    }

    pub(super) async fn local_task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        match self.inner.store.get(Table::Tasks, id).await? {
            Some(bytes) => Ok(Some(troupe_runtime::codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// A task of this node or, failing that, of a connected peer.
    pub async fn task(&self, id: &str) -> Result<Option<TaskRecord>, ApiError> {
        if let Some(t) = self.local_task(id).await? {
            return Ok(Some(t));
        }
        Ok(self
            .inner
            .cluster
            .find(&PeerRequest::GetTask(id.into()), peer::task)
            .await)
    }

    /// The cluster's tasks in id (creation) order after the cursor, filtered: this node's and
    /// every connected peer's.
    pub async fn tasks(
        &self,
        state: Option<TaskState>,
        agent: Option<String>,
        after: Option<String>,
        first: usize,
    ) -> Result<(Vec<TaskRecord>, bool), ApiError> {
        let mut pages = vec![self.local_tasks(state, agent.clone(), after.clone(), first).await?];
        let request = PeerRequest::ListTasks {
            state,
            agent,
            after,
            first: first as u32,
        };
        pages.extend(
            self.cluster()
                .gather(&request, |r| match r {
                    PeerResponse::Tasks(v, more) => Some((v, more)),
                    _ => None,
                })
                .await,
        );
        Ok(peer::merge_pages(pages, first, |t| t.id.as_str()))
    }

    /// This node's tasks in id (creation) order after the cursor, filtered.
    pub(super) async fn local_tasks(
        &self,
        state: Option<TaskState>,
        agent: Option<String>,
        after: Option<String>,
        first: usize,
    ) -> Result<(Vec<TaskRecord>, bool), ApiError> {
        let page = self
            .inner
            .store
            .scan(Table::Tasks, after, first + 1, task_filter(state, agent))
            .await?;
        let more = page.len() > first;
        let tasks = page
            .into_iter()
            .take(first)
            .map(|(_, b)| troupe_runtime::codec::decode::<TaskRecord>(&b))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((tasks, more))
    }

    /// How many tasks in the cluster pass the filter.
    pub async fn count_tasks(&self, state: Option<TaskState>, agent: Option<String>) -> Result<u64, ApiError> {
        let request = PeerRequest::CountTasks {
            state,
            agent: agent.clone(),
        };
        let remote: u64 = self.cluster().gather(&request, peer::count).await.into_iter().sum();
        Ok(self.local_count_tasks(state, agent).await? + remote)
    }

    pub(super) async fn local_count_tasks(
        &self,
        state: Option<TaskState>,
        agent: Option<String>,
    ) -> Result<u64, ApiError> {
        Ok(self.inner.store.count(Table::Tasks, task_filter(state, agent)).await?)
    }
}

fn task_filter(state: Option<TaskState>, agent: Option<String>) -> impl Fn(&[u8]) -> bool + Send + 'static {
    move |bytes: &[u8]| match troupe_runtime::codec::decode::<TaskRecord>(bytes) {
        Ok(t) => state.is_none_or(|s| t.state == s) && agent.as_deref().is_none_or(|a| t.shown_agent() == Some(a)),
        Err(_) => false,
    }
}

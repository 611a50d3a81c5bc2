//! [`Api`]: the typed handle through which the gateway (and peers, through the router) act on
//! a node. It writes what must be durable before it answers, and routes requests for agents
//! and tasks that live on other nodes to their node.

mod peer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::Stream;
use ractor::rpc::CallResult;
use serde_json::json;
use troupe_runtime::auth::{self, Role};
use troupe_runtime::events::{self, Event, EventFilter, NewEvent};
use troupe_runtime::store::{Batch, Store, StoreError, Table};
use troupe_runtime::supervision::{ChildSpec, SupervisorMsg};

use crate::agent::{AgentChild, AgentRecord, AgentSpec, AgentState, AgentView, SpawnAgentRequest};
use crate::cluster::{Cluster, Member, PeerRequest, PeerResponse};
use crate::error::ApiError;
use crate::scheduler::{AgentCounters, SchedulerMsg};
use crate::services::Services;
use crate::task::{SubmitTaskRequest, TaskRecord, TaskState};

/// How long a call into a local service actor may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Api {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: String,
    node_name: String,
    started_at: DateTime<Utc>,
    data_dir: PathBuf,
    store: Store,
    services: Services,
    cluster: Cluster,
    max_payload_bytes: usize,
    draining: AtomicBool,
}

/// Settings the API needs from the node's configuration.
pub struct ApiSettings {
    pub node_id: String,
    pub node_name: String,
    pub data_dir: PathBuf,
    pub max_payload_bytes: usize,
}

pub(crate) const DEFAULT_MAX_ATTEMPTS: u32 = 3;

impl Api {
    pub(crate) fn new(settings: ApiSettings, store: Store, services: Services, cluster: Cluster) -> Self {
        Self {
            inner: Arc::new(Inner {
                node_id: settings.node_id,
                node_name: settings.node_name,
                started_at: troupe_runtime::clock::now(),
                data_dir: settings.data_dir,
                store,
                services,
                cluster,
                max_payload_bytes: settings.max_payload_bytes,
                draining: AtomicBool::new(false),
            }),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    pub fn node_name(&self) -> &str {
        &self.inner.node_name
    }

    pub fn started_at(&self) -> DateTime<Utc> {
        self.inner.started_at
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    pub fn members(&self) -> Vec<Member> {
        self.inner.cluster.members()
    }

    /// The role of a bearer token, importing tokens created while the node runs.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Role>, ApiError> {
        if let Some(role) = auth::lookup(&self.inner.store, token).await? {
            return Ok(Some(role));
        }
        match auth::import_pending(&self.inner.store, &self.inner.data_dir).await {
            Ok(0) => Ok(None),
            Ok(_) => Ok(auth::lookup(&self.inner.store, token).await?),
            Err(e) => Err(ApiError::Internal(e.to_string())),
        }
    }

    fn ensure_serving(&self) -> Result<(), ApiError> {
        if self.inner.draining.load(Ordering::SeqCst) {
            Err(ApiError::Unavailable("the node is shutting down".into()))
        } else {
            Ok(())
        }
    }

    // ---- agents ----

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

    async fn spawn_local(&self, req: SpawnAgentRequest) -> Result<AgentView, ApiError> {
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

    fn agents_supervisor(&self) -> Result<ractor::ActorRef<SupervisorMsg>, ApiError> {
        self.inner
            .services
            .agents
            .get()
            .ok_or_else(|| ApiError::Unavailable("the agents supervisor is not running".into()))
    }

    fn scheduler(&self) -> Result<ractor::ActorRef<SchedulerMsg>, ApiError> {
        self.inner
            .services
            .scheduler
            .get()
            .ok_or_else(|| ApiError::Unavailable("the scheduler is not running".into()))
    }

    pub async fn stop_agent(&self, id: &str) -> Result<AgentView, ApiError> {
        match self.stop_local(id).await {
            Err(ApiError::NotFound(_)) => {
                self.on_peers(PeerRequest::StopAgent(id.into()), peer::agent, || {
                    format!("no agent {id}")
                })
                .await
            }
            other => other,
        }
    }

    async fn stop_local(&self, id: &str) -> Result<AgentView, ApiError> {
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

    async fn local_agent(&self, id: &str) -> Result<Option<AgentRecord>, StoreError> {
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

    /// This node's agents in id order, after the cursor; the flag says whether more follow.
    pub async fn agents(&self, after: Option<String>, first: usize) -> Result<(Vec<AgentView>, bool), ApiError> {
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

    async fn view(&self, record: AgentRecord) -> AgentView {
        self.views(vec![record])
            .await
            .pop()
            .expect("one record in, one view out")
    }

    async fn views(&self, records: Vec<AgentRecord>) -> Vec<AgentView> {
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

    // ---- tasks ----

    pub async fn submit_task(&self, req: SubmitTaskRequest) -> Result<TaskRecord, ApiError> {
        req.validate(self.inner.max_payload_bytes)?;
        if let Some(agent) = req.agent_id.clone() {
            if self.local_agent(&agent).await?.is_none() {
                return self
                    .on_peers(PeerRequest::SubmitTask(req), peer::task, || format!("no agent {agent}"))
                    .await;
            }
        }
        self.submit_local(req).await
    }

    async fn submit_local(&self, req: SubmitTaskRequest) -> Result<TaskRecord, ApiError> {
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

    async fn persist_queued(&self, task: &TaskRecord) -> Result<(), ApiError> {
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
        match self.cancel_local(id).await {
            Err(ApiError::NotFound(_)) => {
                self.on_peers(PeerRequest::CancelTask(id.into()), peer::task, || {
                    format!("no task {id}")
                })
                .await
            }
            other => other,
        }
    }

    async fn cancel_local(&self, id: &str) -> Result<TaskRecord, ApiError> {
        let scheduler = self.scheduler()?;
        match scheduler
            .call(|r| SchedulerMsg::Cancel(id.to_owned(), r), Some(CALL_TIMEOUT))
            .await?
        {
            CallResult::Success(answer) => answer,
            _ => Err(ApiError::Unavailable("the scheduler did not answer".into())),
        }
    }

    async fn local_task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
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

    /// This node's tasks in id (creation) order after the cursor, filtered.
    pub async fn tasks(
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

    pub async fn count_tasks(&self, state: Option<TaskState>, agent: Option<String>) -> Result<u64, ApiError> {
        Ok(self.inner.store.count(Table::Tasks, task_filter(state, agent)).await?)
    }

    pub async fn count_agents(&self) -> Result<u64, ApiError> {
        Ok(self.inner.store.count(Table::Agents, |_| true).await?)
    }

    // ---- events ----

    /// Up to `first` events after `after` that pass the filter, oldest first.
    pub async fn events(&self, after: u64, filter: EventFilter, first: usize) -> Result<Vec<Event>, ApiError> {
        let mut out = Vec::new();
        let mut cursor = after;
        while out.len() < first {
            let page = self.inner.store.events_after(cursor, 1024).await?;
            let Some(last) = page.last() else { break };
            cursor = last.seq;
            out.extend(page.into_iter().filter(|e| filter.matches(e)));
        }
        out.truncate(first);
        Ok(out)
    }

    pub fn subscribe(
        &self,
        after: u64,
        filter: EventFilter,
    ) -> impl Stream<Item = Result<Event, StoreError>> + Send + 'static {
        events::subscribe(&self.inner.store, after, filter)
    }

    // ---- shutdown ----

    /// Stops accepting work and starting tasks; returns how many tasks still run.
    pub async fn begin_drain(&self) -> usize {
        self.inner.draining.store(true, Ordering::SeqCst);
        self.scheduler_count(SchedulerMsg::Drain).await
    }

    pub async fn running_tasks(&self) -> usize {
        self.scheduler_count(SchedulerMsg::Running).await
    }

    async fn scheduler_count(&self, msg: fn(ractor::RpcReplyPort<usize>) -> SchedulerMsg) -> usize {
        match self.inner.services.scheduler.get() {
            Some(s) => match s.call(msg, Some(CALL_TIMEOUT)).await {
                Ok(CallResult::Success(n)) => n,
                _ => 0,
            },
            None => 0,
        }
    }
}

fn task_filter(state: Option<TaskState>, agent: Option<String>) -> impl Fn(&[u8]) -> bool + Send + 'static {
    move |bytes: &[u8]| match troupe_runtime::codec::decode::<TaskRecord>(bytes) {
        Ok(t) => state.is_none_or(|s| t.state == s) && agent.as_deref().is_none_or(|a| t.shown_agent() == Some(a)),
        Err(_) => false,
    }
}

//! The tasks service's work on this node's own tasks.

use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{Batch, StoreError, View};

use super::{TaskFilter, Tasks};
use crate::agent::{AgentSpec, Desired};
use crate::error::ApiError;
use crate::scheduler::SchedulerMsg;
use crate::service::context::{ask, keep, split};
use crate::tables::{AGENTS, OPEN_TASKS, TASKS, TASK_STATUS};
use crate::task::{Priority, SubmitTaskRequest, TaskRecord, TaskSpec, TaskStatus};

/// Failed attempts a task gets when its submission does not say.
const DEFAULT_MAX_ATTEMPTS: u32 = 3;

impl Tasks {
    pub(crate) async fn submit_local(&self, req: SubmitTaskRequest, key: Option<&str>) -> Result<TaskRecord, ApiError> {
        self.ctx.ensure_serving()?;
        let guard = match split(self.ctx.claim("submitTask", key, &req).await?) {
            Ok(guard) => guard,
            Err(id) => {
                return self
                    .get_local(&id)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(format!("no task {id}")))
            }
        };
        if let Some(agent) = &req.agent_id {
            let spec = self.ctx.store.get(AGENTS, agent).await?;
            match spec
                .map(|b| troupe_runtime::codec::decode::<AgentSpec>(&b))
                .transpose()?
            {
                None => return Err(ApiError::NotFound(format!("no agent {agent}"))),
                Some(a) if a.desired == Desired::Stopped => {
                    return Err(ApiError::Conflict(format!("agent {agent} is stopped")));
                }
                Some(_) => {}
            }
        }
        let spec = TaskSpec {
            id: crate::ids::new_id(&self.ctx.node_name),
            target_agent: req.agent_id,
            capability: req.capability,
            priority: req.priority.unwrap_or(Priority::Normal),
            max_attempts: req.max_attempts.map_or(DEFAULT_MAX_ATTEMPTS, |m| m as u32),
            timeout_ms: req.timeout_ms.map(|t| t as u64),
            payload: req.payload,
            created_at: troupe_runtime::clock::now(),
        };
        let status = TaskStatus::queued();
        let data = json!({
            "agentId": spec.target_agent,
            "capability": spec.capability,
            "priority": spec.priority.as_str(),
        });
        let mut batch = Batch::new()
            .put(TASKS, spec.id.clone(), troupe_runtime::codec::encode(&spec)?)
            .put(TASK_STATUS, spec.id.clone(), troupe_runtime::codec::encode(&status)?)
            .put(OPEN_TASKS, spec.id.clone(), Vec::new())
            .event(NewEvent::new("TASK_QUEUED", Some(spec.id.clone()), data));
        if let Some(guard) = &guard {
            guard.record(&mut batch, &spec.id)?;
        }
        self.ctx.store.write(batch).await?;
        // Durable already: if this cast is lost the scheduler finds the task at its next start.
        let _ = self
            .ctx
            .scheduler()?
            .cast(SchedulerMsg::Enqueue(spec.clone(), status.clone()));
        Ok(TaskRecord { spec, status })
    }

    pub(crate) async fn cancel_local(&self, id: &str, key: Option<&str>) -> Result<TaskRecord, ApiError> {
        let guard = match split(self.ctx.claim("cancelTask", key, &id).await?) {
            Ok(guard) => guard,
            Err(id) => {
                return self
                    .get_local(&id)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(format!("no task {id}")))
            }
        };
        let scheduler = self.ctx.scheduler()?;
        let status = ask(&scheduler, |r| SchedulerMsg::Cancel(id.to_owned(), r), "the scheduler").await??;
        let spec = self
            .ctx
            .store
            .get(TASKS, id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no task {id}")))?;
        keep(&self.ctx.store, guard, id).await?;
        Ok(TaskRecord {
            spec: troupe_runtime::codec::decode(&spec)?,
            status,
        })
    }

    pub(crate) async fn get_local(&self, id: &str) -> Result<Option<TaskRecord>, ApiError> {
        let id = id.to_owned();
        Ok(self.ctx.store.view(move |v| read_one(v, &id)).await?)
    }

    /// This node's tasks in id (creation) order after the cursor, filtered; the flag says
    /// whether more follow.
    pub(crate) async fn list_local(
        &self,
        filter: &TaskFilter,
        after: Option<String>,
        first: usize,
    ) -> Result<(Vec<TaskRecord>, bool), ApiError> {
        let filter = filter.clone();
        let mut page = self
            .ctx
            .store
            .view(move |v| {
                let mut out = Vec::new();
                v.scan(TASKS, after.as_deref(), |_, bytes| {
                    let spec: TaskSpec = troupe_runtime::codec::decode(bytes)?;
                    let Some(status) = v.get(TASK_STATUS, &spec.id)? else {
                        return Ok(true);
                    };
                    let task = TaskRecord {
                        spec,
                        status: troupe_runtime::codec::decode(&status)?,
                    };
                    if matches(&filter, &task) {
                        out.push(task);
                    }
                    Ok(out.len() <= first)
                })?;
                Ok(out)
            })
            .await?;
        let more = page.len() > first;
        page.truncate(first);
        Ok((page, more))
    }

    pub(crate) async fn count_local(&self, filter: &TaskFilter) -> Result<u64, ApiError> {
        let filter = filter.clone();
        Ok(self
            .ctx
            .store
            .view(move |v| {
                if filter == TaskFilter::default() {
                    return v.len(TASKS);
                }
                let mut n = 0;
                v.scan(TASK_STATUS, None, |id, bytes| {
                    let status: TaskStatus = troupe_runtime::codec::decode(bytes)?;
                    if filter.state.is_some_and(|s| s != status.state) {
                        return Ok(true);
                    }
                    if filter.agent.is_some() {
                        let Some(spec) = v.get(TASKS, id)? else { return Ok(true) };
                        let task = TaskRecord {
                            spec: troupe_runtime::codec::decode(&spec)?,
                            status,
                        };
                        if !matches(&filter, &task) {
                            return Ok(true);
                        }
                    }
                    n += 1;
                    Ok(true)
                })?;
                Ok(n)
            })
            .await?)
    }
}

fn matches(filter: &TaskFilter, task: &TaskRecord) -> bool {
    filter.state.is_none_or(|s| task.status.state == s)
        && filter.agent.as_deref().is_none_or(|a| task.shown_agent() == Some(a))
}

fn read_one(v: &View<'_>, id: &str) -> Result<Option<TaskRecord>, StoreError> {
    let (Some(spec), Some(status)) = (v.get(TASKS, id)?, v.get(TASK_STATUS, id)?) else {
        return Ok(None);
    };
    Ok(Some(TaskRecord {
        spec: troupe_runtime::codec::decode(&spec)?,
        status: troupe_runtime::codec::decode(&status)?,
    }))
}

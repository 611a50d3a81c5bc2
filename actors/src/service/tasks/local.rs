//! The tasks service's work on this node's own tasks.

use std::collections::HashMap;

use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{Batch, StoreError, View};

use super::{TaskFilter, Tasks};
use crate::error::ApiError;
use crate::scheduler::admission::{queue_in, Admission};
use crate::scheduler::engine::graph;
use crate::scheduler::SchedulerMsg;
use crate::service::context::{ask, keep, split};
use crate::tables::{OPEN_TASKS, TASKS, TASK_STATUS};
use crate::task::{GraphTask, Priority, SubmitTaskRequest, TaskRecord, TaskSpec, TaskState, TaskStatus};

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
        self.admission().check_agent(req.agent_id.as_deref()).await?;
        let depends_on = self.known_dependencies(&req.depends_on).await?;
        let spec = self.spec_of(crate::ids::new_id(&self.ctx.node_name), req, depends_on);
        let admitted = self.admission().admit(1)?;
        let status = TaskStatus::queued();
        let mut batch = Batch::new();
        queue_in(&mut batch, &spec, &status)?;
        if let Some(guard) = &guard {
            guard.record(&mut batch, &spec.id)?;
        }
        if let Err(e) = self.ctx.store.write(batch).await {
            admitted.refuse();
            return Err(e.into());
        }
        // Durable already: if this cast is lost the scheduler finds the task at its next start.
        let _ = self
            .ctx
            .scheduler()?
            .cast(SchedulerMsg::Enqueue(Box::new((spec.clone(), status.clone()))));
        Ok(self.explained(TaskRecord::new(spec, status)).await)
    }

    /// Submits a graph of tasks in one commit. Each task's `dependsOn` names other tasks of
    /// the graph by their `key`, or tasks of this node by id. Answers in the given order.
    pub(crate) async fn submit_graph_local(
        &self,
        graph: Vec<GraphTask>,
        key: Option<&str>,
    ) -> Result<Vec<TaskRecord>, ApiError> {
        self.ctx.ensure_serving()?;
        let guard = match split(self.ctx.claim("submitTasks", key, &graph).await?) {
            Ok(guard) => guard,
            Err(ids) => {
                let mut out = Vec::new();
                for id in ids.split(',') {
                    out.push(
                        self.get_local(id)
                            .await?
                            .ok_or_else(|| ApiError::NotFound(format!("no task {id}")))?,
                    );
                }
                return Ok(out);
            }
        };
        let order = graph::order(&graph)?;
        let keys: Vec<&str> = graph.iter().map(|t| t.key.as_str()).collect();
        let mut ids: HashMap<String, String> = HashMap::new();
        let mut specs: Vec<Option<TaskSpec>> = vec![None; graph.len()];
        for &i in &order {
            let task = &graph[i];
            if task.request.agent_id.as_deref().is_some_and(|a| !self.ctx.holds(a)) {
                return Err(ApiError::invalid(format!(
                    "task {}: a graph runs on one node; its agentId must be an agent of node {}",
                    task.key, self.ctx.node_name
                )));
            }
            self.admission().check_agent(task.request.agent_id.as_deref()).await?;
            let outside: Vec<String> = task
                .request
                .depends_on
                .iter()
                .filter(|d| !keys.contains(&d.as_str()))
                .cloned()
                .collect();
            let mut depends_on = self.known_dependencies(&outside).await?;
            for d in &task.request.depends_on {
                if let Some(id) = ids.get(d) {
                    depends_on.push(id.clone());
                }
            }
            // Ids in dependency order: a task's id sorts after its dependencies'.
            let id = crate::ids::new_id(&self.ctx.node_name);
            ids.insert(task.key.clone(), id.clone());
            specs[i] = Some(self.spec_of(id, task.request.clone(), depends_on));
        }
        let admitted = self.admission().admit(graph.len())?;
        let status = TaskStatus::queued();
        let mut batch = Batch::new();
        for &i in &order {
            if let Some(spec) = &specs[i] {
                queue_in(&mut batch, spec, &status)?;
            }
        }
        let specs: Vec<TaskSpec> = specs.into_iter().flatten().collect();
        if let Some(guard) = &guard {
            let all: Vec<&str> = specs.iter().map(|s| s.id.as_str()).collect();
            guard.record(&mut batch, &all.join(","))?;
        }
        if let Err(e) = self.ctx.store.write(batch).await {
            admitted.refuse();
            return Err(e.into());
        }
        let scheduler = self.ctx.scheduler()?;
        let by_id: HashMap<&str, &TaskSpec> = specs.iter().map(|s| (s.id.as_str(), s)).collect();
        for &i in &order {
            if let Some(spec) = by_id.get(ids[&graph[i].key].as_str()) {
                let _ = scheduler.cast(SchedulerMsg::Enqueue(Box::new(((*spec).clone(), status.clone()))));
            }
        }
        let records = specs
            .into_iter()
            .map(|spec| TaskRecord::new(spec, status.clone()))
            .collect();
        Ok(self.explain(records).await)
    }

    /// Admission's handles on this node.
    fn admission(&self) -> Admission<'_> {
        Admission {
            store: &self.ctx.store,
            open: &self.ctx.slots.open_tasks,
            max_open: self.ctx.max_open_tasks,
            node: &self.ctx.node_name,
        }
    }

    async fn known_dependencies(&self, deps: &[String]) -> Result<Vec<String>, ApiError> {
        self.admission().known_dependencies(deps, |id| self.ctx.holds(id)).await
    }

    fn spec_of(&self, id: String, req: SubmitTaskRequest, depends_on: Vec<String>) -> TaskSpec {
        TaskSpec {
            id,
            target_agent: req.agent_id,
            capability: req.capability,
            priority: req.priority.unwrap_or(Priority::Normal),
            max_attempts: req.max_attempts.map_or(DEFAULT_MAX_ATTEMPTS, |m| m as u32),
            timeout_ms: req.timeout_ms.map(|t| t as u64),
            payload: req.payload,
            created_at: troupe_runtime::clock::now(),
            depends_on,
            deadline: req.deadline,
            not_before: req.not_before,
            retry: req.retry,
            capabilities: req.capabilities,
            min_proficiency: req.min_proficiency,
            strategy: req.strategy.unwrap_or(self.ctx.default_strategy),
        }
    }

    pub(crate) async fn requeue_local(&self, id: &str, key: Option<&str>) -> Result<TaskRecord, ApiError> {
        self.ctx.ensure_serving()?;
        let guard = match split(self.ctx.claim("requeueTask", key, &id).await?) {
            Ok(guard) => guard,
            Err(id) => {
                return self
                    .get_local(&id)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(format!("no task {id}")))
            }
        };
        // Reading DEAD and writing QUEUED must not interleave with another requeue: both
        // would admit the task and the later write could overwrite its RUNNING record.
        let _busy = self
            .ctx
            .requeueing
            .begin(id)
            .ok_or_else(|| ApiError::Conflict(format!("task {id} is being requeued already")))?;
        let record = self
            .get_local(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no task {id}")))?;
        if record.status.state != TaskState::Dead {
            return Err(ApiError::Conflict(format!(
                "task {id} is {}; only a DEAD task can be requeued",
                record.status.state.as_str()
            )));
        }
        let admitted = self.admission().admit(1)?;
        let mut status = record.status;
        status.state = TaskState::Queued;
        status.failures = 0;
        status.finished_at = None;
        let data = json!({ "reason": "requeueTask", "attempt": status.attempts, "state": "QUEUED" });
        let mut batch = Batch::new()
            .put(TASK_STATUS, id, troupe_runtime::codec::encode(&status)?)
            .put(OPEN_TASKS, id, Vec::new())
            .event(NewEvent::new("TASK_REQUEUED", Some(id.to_owned()), data));
        if let Some(guard) = &guard {
            guard.record(&mut batch, &id.to_owned())?;
        }
        if let Err(e) = self.ctx.store.write(batch).await {
            admitted.refuse();
            return Err(e.into());
        }
        let spec = record.spec;
        let _ = self
            .ctx
            .scheduler()?
            .cast(SchedulerMsg::Enqueue(Box::new((spec.clone(), status.clone()))));
        Ok(self.explained(TaskRecord::new(spec, status)).await)
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
        Ok(TaskRecord::new(troupe_runtime::codec::decode(&spec)?, status))
    }

    pub(crate) async fn get_local(&self, id: &str) -> Result<Option<TaskRecord>, ApiError> {
        let id = id.to_owned();
        match self.ctx.store.view(move |v| read_one(v, &id)).await? {
            Some(task) => Ok(Some(self.explained(task).await)),
            None => Ok(None),
        }
    }

    /// The task with why it waits, if it is queued.
    async fn explained(&self, task: TaskRecord) -> TaskRecord {
        self.explain(vec![task]).await.remove(0)
    }

    /// The tasks with why each queued one waits, as the scheduler sees it now (asked once
    /// for them all). Without an answer (the scheduler restarting) they say nothing.
    async fn explain(&self, mut tasks: Vec<TaskRecord>) -> Vec<TaskRecord> {
        let queued: Vec<String> = tasks
            .iter()
            .filter(|t| t.status.state == TaskState::Queued)
            .map(|t| t.spec.id.clone())
            .collect();
        if queued.is_empty() {
            return tasks;
        }
        let Ok(scheduler) = self.ctx.scheduler() else {
            return tasks;
        };
        let Ok(mut why) = ask(&scheduler, |r| SchedulerMsg::WaitingFor(queued, r), "the scheduler").await else {
            return tasks;
        };
        for task in &mut tasks {
            task.waiting_for = why.remove(&task.spec.id);
        }
        tasks
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
        let (page, more) =
            crate::service::listing::page_local(&self.ctx.store, TASKS, after, first, move |v, _, bytes| {
                let spec: TaskSpec = troupe_runtime::codec::decode(bytes)?;
                let Some(status) = v.get(TASK_STATUS, &spec.id)? else {
                    return Ok(None);
                };
                let task = TaskRecord::new(spec, troupe_runtime::codec::decode(&status)?);
                Ok(matches(&filter, &task).then_some(task))
            })
            .await?;
        Ok((self.explain(page).await, more))
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
                        let task = TaskRecord::new(troupe_runtime::codec::decode(&spec)?, status);
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
    Ok(Some(TaskRecord::new(
        troupe_runtime::codec::decode(&spec)?,
        troupe_runtime::codec::decode(&status)?,
    )))
}

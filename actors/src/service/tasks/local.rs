//! The tasks service's work on this node's own tasks.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{Batch, Op, StoreError, View};

use super::{TaskFilter, Tasks};
use crate::agent::{AgentSpec, Desired};
use crate::error::ApiError;
use crate::scheduler::SchedulerMsg;
use crate::service::context::{ask, keep, split};
use crate::tables::{AGENTS, OPEN_TASKS, TASKS, TASK_STATUS};
use crate::task::{GraphTask, Priority, SubmitTaskRequest, TaskRecord, TaskSpec, TaskState, TaskStatus, MAX_GRAPH};

/// Failed attempts a task gets when its submission does not say.
const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// The retry hint of a BACKPRESSURE refusal.
const BACKPRESSURE_RETRY_MS: u64 = 1000;

/// Tasks counted as open before their write; given back if it fails.
struct Admitted<'a> {
    open: &'a std::sync::atomic::AtomicUsize,
    n: usize,
}

impl Admitted<'_> {
    fn refuse(self) {
        release_open(self.open, self.n);
    }
}

/// Takes `n` from the open-task count, never below zero.
pub(crate) fn release_open(open: &std::sync::atomic::AtomicUsize, n: usize) {
    let _ = open.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| Some(v.saturating_sub(n)));
}

/// Adds a newly queued task to a batch: spec, status, open-task entry and TASK_QUEUED.
fn queue_in(batch: &mut Batch, spec: &TaskSpec, status: &TaskStatus) -> Result<(), ApiError> {
    let data = json!({
        "agentId": spec.target_agent,
        "capability": spec.capability,
        "priority": spec.priority.as_str(),
        "dependsOn": spec.depends_on,
        "deadline": spec.deadline,
        "notBefore": spec.not_before,
    });
    batch.push(Op::Put {
        table: TASKS,
        key: spec.id.clone(),
        value: troupe_runtime::codec::encode(spec)?,
    });
    batch.push(Op::Put {
        table: TASK_STATUS,
        key: spec.id.clone(),
        value: troupe_runtime::codec::encode(status)?,
    });
    batch.push(Op::Put {
        table: OPEN_TASKS,
        key: spec.id.clone(),
        value: Vec::new(),
    });
    batch.push(Op::Event(NewEvent::new("TASK_QUEUED", Some(spec.id.clone()), data)));
    Ok(())
}

/// The graph's tasks in an order where each comes after its dependencies within the graph;
/// keys must be unique and the graph acyclic.
fn graph_order(graph: &[GraphTask]) -> Result<Vec<usize>, ApiError> {
    if graph.is_empty() || graph.len() > MAX_GRAPH {
        return Err(ApiError::invalid(format!("a graph has 1 to {MAX_GRAPH} tasks")));
    }
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, t) in graph.iter().enumerate() {
        if t.key.trim().is_empty() || t.key.len() > 128 {
            return Err(ApiError::invalid(
                "each task of a graph needs a key of 1 to 128 characters",
            ));
        }
        if index.insert(t.key.as_str(), i).is_some() {
            return Err(ApiError::invalid(format!("key {:?} is used twice", t.key)));
        }
    }
    // 0 = not seen, 1 = on the current path, 2 = done.
    let mut mark = vec![0u8; graph.len()];
    let mut order = Vec::with_capacity(graph.len());
    for start in 0..graph.len() {
        let mut stack = vec![(start, 0usize)];
        while let Some((i, next)) = stack.pop() {
            if next == 0 {
                if mark[i] == 2 {
                    continue;
                }
                mark[i] = 1;
            }
            let deps = &graph[i].request.depends_on;
            match deps[next..].iter().position(|d| index.contains_key(d.as_str())) {
                Some(offset) => {
                    let at = next + offset;
                    let j = index[deps[at].as_str()];
                    stack.push((i, at + 1));
                    match mark[j] {
                        1 => {
                            return Err(ApiError::invalid(format!(
                                "the graph has a cycle through {:?} and {:?}",
                                graph[i].key, graph[j].key
                            )))
                        }
                        0 => stack.push((j, 0)),
                        _ => {}
                    }
                }
                None => {
                    mark[i] = 2;
                    order.push(i);
                }
            }
        }
    }
    Ok(order)
}

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
        self.check_agent(req.agent_id.as_deref()).await?;
        let depends_on = self.known_dependencies(&req.depends_on).await?;
        let spec = self.spec_of(crate::ids::new_id(&self.ctx.node_name), req, depends_on);
        let admitted = self.admit(1)?;
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
        Ok(TaskRecord { spec, status })
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
        let order = graph_order(&graph)?;
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
            self.check_agent(task.request.agent_id.as_deref()).await?;
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
        let admitted = self.admit(graph.len())?;
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
        Ok(specs
            .into_iter()
            .map(|spec| TaskRecord {
                spec,
                status: status.clone(),
            })
            .collect())
    }

    async fn check_agent(&self, agent: Option<&str>) -> Result<(), ApiError> {
        let Some(agent) = agent else { return Ok(()) };
        let spec = self.ctx.store.get(AGENTS, agent).await?;
        match spec
            .map(|b| troupe_runtime::codec::decode::<AgentSpec>(&b))
            .transpose()?
        {
            None => Err(ApiError::NotFound(format!("no agent {agent}"))),
            Some(a) if a.desired == Desired::Stopped => Err(ApiError::Conflict(format!("agent {agent} is stopped"))),
            Some(_) => Ok(()),
        }
    }

    /// Checks that every dependency is a task of this node; answers them without repeats.
    /// A task without dependencies reads nothing: a read view costs a blocking-pool thread.
    async fn known_dependencies(&self, deps: &[String]) -> Result<Vec<String>, ApiError> {
        let mut unique: Vec<String> = Vec::with_capacity(deps.len());
        for d in deps {
            if !unique.contains(d) {
                unique.push(d.clone());
            }
        }
        if unique.is_empty() {
            return Ok(unique);
        }
        if let Some(d) = unique.iter().find(|d| !self.ctx.holds(d)) {
            return Err(ApiError::invalid(format!(
                "dependency {d} is a task of another node: a task may depend only on tasks of its own node ({})",
                self.ctx.node_name
            )));
        }
        let check = unique.clone();
        let missing = self
            .ctx
            .store
            .view(move |v| {
                let mut missing = Vec::new();
                for d in &check {
                    if v.get(TASKS, d)?.is_none() {
                        missing.push(d.clone());
                    }
                }
                Ok(missing)
            })
            .await?;
        if !missing.is_empty() {
            return Err(ApiError::invalid(format!(
                "unknown dependencies: {}",
                missing.join(", ")
            )));
        }
        Ok(unique)
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

    /// Admits `n` more open tasks, or refuses them all with BACKPRESSURE.
    fn admit(&self, n: usize) -> Result<Admitted<'_>, ApiError> {
        let open = &self.ctx.slots.open_tasks;
        let before = open.fetch_add(n, Ordering::SeqCst);
        if before.saturating_add(n) > self.ctx.max_open_tasks {
            release_open(open, n);
            metrics::counter!("troupe_tasks_refused_total", "reason" => "backpressure").increment(n as u64);
            return Err(ApiError::Backpressure(
                format!(
                    "node {} has {before} open tasks, its limit is {} (max_open_tasks); retry later",
                    self.ctx.node_name, self.ctx.max_open_tasks
                ),
                BACKPRESSURE_RETRY_MS,
            ));
        }
        Ok(Admitted { open, n })
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
        let admitted = self.admit(1)?;
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
        crate::service::listing::page_local(&self.ctx.store, TASKS, after, first, move |v, _, bytes| {
            let spec: TaskSpec = troupe_runtime::codec::decode(bytes)?;
            let Some(status) = v.get(TASK_STATUS, &spec.id)? else {
                return Ok(None);
            };
            let task = TaskRecord {
                spec,
                status: troupe_runtime::codec::decode(&status)?,
            };
            Ok(matches(&filter, &task).then_some(task))
        })
        .await
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

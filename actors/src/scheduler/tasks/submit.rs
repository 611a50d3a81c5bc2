//! Submitting tasks: one, or a graph in one commit, each through admission.

use std::collections::HashMap;

use troupe_runtime::idempotency::Guard;
use troupe_runtime::store::{Batch, Op, StoreError};

use super::TaskQueue;
use crate::call::split;
use crate::error::ApiError;
use crate::scheduler::admission::queue_in;
use crate::scheduler::engine::graph;
use crate::scheduler::SchedulerMsg;
use crate::tables::DIRECTORY;
use crate::task::{GraphTask, SubmitTaskRequest, TaskRecord, TaskSpec, TaskStatus};

impl TaskQueue {
    pub(crate) async fn submit(&self, req: SubmitTaskRequest, key: Option<&str>) -> Result<TaskRecord, ApiError> {
        self.serving.ensure()?;
        let guard = match self.claim_one("submitTask", key, &req).await? {
            Ok(guard) => guard,
            Err(answered) => return Ok(self.replayed(answered)),
        };
        self.admission().check_agent(req.agent_id.as_deref()).await?;
        let depends_on = self.known_dependencies(&req.depends_on).await?;
        let req_again = guard.as_ref().map(|_| req.clone());
        let spec = self.spec_of(crate::ids::new_id(&self.node), req, depends_on);
        let admitted = self.admission().admit(1)?;
        let status = TaskStatus::queued();
        let mut batch = Batch::new();
        queue_in(&mut batch, &spec, &status)?;
        if let Err(e) = self.commit(batch, &spec.id, guard, key, req_again).await {
            admitted.refuse();
            return e;
        }
        // Durable already: the task is acknowledged, and the scheduler is sure to get it.
        if super::enqueue_lost() {
            tracing::warn!(task = %spec.id, "test gate lose-enqueue: the task is not handed to the scheduler");
        } else {
            super::hand_over(&self.scheduler, spec.clone(), status.clone());
        }
        let record = self.explained(TaskRecord::new(spec, status)).await;
        self.say_why_it_waits(&record);
        Ok(record)
    }

    /// Queues a task on `node`, the peer whose agents the placement chose, by writing it
    /// here: the task, its first status and the directory's entry naming `node` its holder go
    /// in one log entry, which `node` takes up as it applies it (its directory's projection
    /// tells it that the task arrived, as after a hand-off). Nothing is asked of `node`, and
    /// the task is acknowledged once the entry is committed, whatever becomes of `node` next:
    /// the task waits for it there, or moves on with its other work if it is lost. The flag
    /// says whether the task was made now (`false`: the first answer to the key, given again,
    /// whose holder may not have queued it: see [`TaskQueue::replayed`]).
    pub(crate) async fn submit_to(
        &self,
        node: &str,
        req: SubmitTaskRequest,
        key: Option<&str>,
    ) -> Result<(TaskRecord, bool), ApiError> {
        self.serving.ensure()?;
        let guard = match self.claim_one("submitTask", key, &req).await? {
            Ok(guard) => guard,
            Err(answered) => return Ok((self.replayed(answered), false)),
        };
        let req_again = guard.as_ref().map(|_| req.clone());
        let spec = self.spec_of(crate::ids::new_id(&self.node), req, Vec::new());
        let status = TaskStatus::queued();
        let mut batch = Batch::new();
        queue_in(&mut batch, &spec, &status)?;
        let there = crate::cluster::directory::Placement {
            node: node.to_owned(),
            epoch: 1,
        };
        batch.push(Op::Put {
            table: DIRECTORY,
            key: spec.id.clone(),
            value: troupe_runtime::codec::encode(&there)?,
        });
        if let Err(e) = self.commit(batch, &spec.id, guard, key, req_again).await {
            return e.map(|answered| (answered, false));
        }
        let mut record = TaskRecord::new(spec, status);
        record.waiting_for = Some(format!(
            "placed on {node}, whose scheduler takes it up as it applies this submit"
        ));
        Ok((record, true))
    }

    /// Writes a submission's batch with its idempotency record. `Err` holds what to answer
    /// instead: the write's error, or the first answer to the key when another node claimed
    /// it meanwhile.
    async fn commit(
        &self,
        mut batch: Batch,
        id: &str,
        guard: Option<Guard>,
        key: Option<&str>,
        req: Option<SubmitTaskRequest>,
    ) -> Result<(), Result<TaskRecord, ApiError>> {
        if let Some(guard) = &guard {
            guard.record(&mut batch, &id).map_err(|e| Err(e.into()))?;
        }
        let Err(e) = self.store.write(batch).await else {
            return Ok(());
        };
        if let (StoreError::Stale(_), Some(guard), Some(req)) = (&e, guard, req) {
            // The key may have been claimed on another node meanwhile: its answer wins.
            drop(guard);
            match self.claim_one("submitTask", key, &req).await {
                Ok(Err(answered)) => return Err(Ok(self.replayed(answered))),
                Err(e) => return Err(Err(e)),
                Ok(Ok(_)) => {}
            }
        }
        Err(Err(e.into()))
    }

    /// Makes sure the task `id`, held here, is in the scheduler's queue when the store holds
    /// it QUEUED (a submit answered again on another node: see `replayed`).
    pub(crate) fn ensure_queued(&self, id: &str) -> Result<(), ApiError> {
        self.scheduler()?
            .cast(SchedulerMsg::EnsureQueued(id.to_owned()))
            .map_err(|_| ApiError::Unavailable("the scheduler is not running".into()))
    }

    /// The first answer to a submit sent again with its idempotency key. The first submit
    /// may have failed after its write was made (the leader lost with the outcome unknown),
    /// so its enqueue never came: a task still QUEUED here is made sure of in the queue.
    fn replayed(&self, answered: TaskRecord) -> TaskRecord {
        if answered.status.state == crate::task::TaskState::Queued && self.cluster.holds(&answered.spec.id) {
            if let Ok(scheduler) = self.scheduler() {
                let _ = scheduler.cast(SchedulerMsg::EnsureQueued(answered.spec.id.clone()));
            }
        }
        answered
    }

    /// A task for a capability that no agent of the cluster has is not silent: it was placed
    /// here because no member's heartbeat named an agent for it (see the tasks service's
    /// placement), and a `TASK_WAITING` event says why it waits (data: `reason`,
    /// `capability`, and `node`, this one: the task may move). The submit's answer says it too (`waitingFor`, and the gateway's
    /// warning).
    fn say_why_it_waits(&self, record: &TaskRecord) {
        let Some(reason) = &record.waiting_for else {
            return;
        };
        if !no_agent_has(reason) || record.spec.target_agent.is_some() {
            return;
        }
        let mut data = serde_json::json!({ "reason": reason, "capability": record.spec.capability, "node": self.node });
        if !record.spec.capabilities.is_empty() {
            data["capabilities"] = serde_json::json!(record.spec.capabilities);
        }
        let event = troupe_runtime::events::NewEvent::new("TASK_WAITING", Some(record.spec.id.clone()), data);
        let _ = self.store.submit(Batch::new().event(event));
    }

    /// Submits a graph of tasks in one commit. Each task's `dependsOn` names other tasks of
    /// the graph by their `key`, or tasks of this node by id. Answers in the given order.
    pub(crate) async fn submit_graph(
        &self,
        graph: Vec<GraphTask>,
        key: Option<&str>,
    ) -> Result<Vec<TaskRecord>, ApiError> {
        self.serving.ensure()?;
        let guard = match split(crate::call::claim(&self.idempotency, "submitTasks", key, &graph).await?) {
            Ok(guard) => guard,
            Err(ids) => {
                let mut out = Vec::new();
                for id in ids.split(',') {
                    out.push(self.found(id).await?);
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
            if task.request.agent_id.as_deref().is_some_and(|a| !self.holds(a)) {
                return Err(ApiError::invalid(format!(
                    "task {}: a graph runs on one node; its agentId must be an agent of node {}",
                    task.key, self.node
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
            let id = crate::ids::new_id(&self.node);
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
        if let Err(e) = self.store.write(batch).await {
            admitted.refuse();
            return Err(e.into());
        }
        let by_id: HashMap<&str, &TaskSpec> = specs.iter().map(|s| (s.id.as_str(), s)).collect();
        for &i in &order {
            if let Some(spec) = by_id.get(ids[&graph[i].key].as_str()) {
                super::hand_over(&self.scheduler, (*spec).clone(), status.clone());
            }
        }
        let records = specs
            .into_iter()
            .map(|spec| TaskRecord::new(spec, status.clone()))
            .collect();
        Ok(self.explain(records).await)
    }
}

/// Whether a queued task's reason to wait is that no agent has what it needs.
pub fn no_agent_has(waiting_for: &str) -> bool {
    waiting_for.starts_with("no agent has ")
}

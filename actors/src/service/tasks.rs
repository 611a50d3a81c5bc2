//! The tasks service: submit, cancel, look up, list and count tasks, wherever they live. A
//! task aimed at a peer's agent is submitted on that peer, which owns it from then on; a
//! task's id names its node. On the task's node each request is the scheduler room's work,
//! done through its [`TaskQueue`].

use std::sync::Arc;

use super::context::Context;
use super::listing::{Counted, Listing};
use crate::cluster::remote::{service, At, Everywhere, Located};
use crate::cluster::Cluster;
use crate::error::ApiError;
pub use crate::scheduler::TaskFilter;
use crate::scheduler::TaskQueue;
use crate::task::{SubmitTaskRequest, TaskRecord};

service! {
    service Tasks as "tasks" (TasksMsg, TasksRequest, TasksResponse, TasksLocal);
    /// Queues a task on this node, which owns it from then on.
    keyed Submit => submit(request: Box<SubmitTaskRequest>) -> TaskRecord;
    /// Cancels a queued or running task of this node.
    keyed Cancel => cancel(id: String) -> TaskRecord;
    /// Queues a DEAD task of this node again.
    keyed Requeue => requeue(id: String) -> TaskRecord;
    call Get => get(id: String) -> Option<TaskRecord>;
    /// One page of this node's tasks after the cursor, and whether more follow.
    call List => list(filter: TaskFilter, after: Option<String>, first: u32) -> (Vec<TaskRecord>, bool);
    call Count => count(filter: TaskFilter) -> u64;
}

#[derive(Clone)]
pub struct Tasks {
    pub(crate) ctx: Arc<Context>,
    /// This node's tasks, as the scheduler room works them.
    pub(crate) queue: TaskQueue,
}

impl Located for Tasks {
    fn cluster(&self) -> &Cluster {
        &self.ctx.cluster
    }
}

impl Tasks {
    /// Queues a task: here, or on the node of the agent it is aimed at.
    pub async fn submit(&self, request: SubmitTaskRequest, key: Option<String>) -> Result<TaskRecord, ApiError> {
        request.validate(self.ctx.max_payload_bytes)?;
        let at = match request.agent_id.as_deref() {
            Some(agent) => At::holding(self, agent),
            None => At::Here(self),
        };
        at.submit(Box::new(request), key).await
    }

    /// Submits a graph of tasks on this node in one commit.
    pub async fn submit_graph(
        &self,
        graph: Vec<crate::task::GraphTask>,
        key: Option<String>,
    ) -> Result<Vec<TaskRecord>, ApiError> {
        for t in &graph {
            t.request
                .validate(self.ctx.max_payload_bytes)
                .map_err(|e| ApiError::invalid(format!("task {}: {e}", t.key)))?;
        }
        self.queue.submit_graph(graph, key.as_deref()).await
    }

    /// Queues a DEAD task again, with its attempts renewed.
    pub async fn requeue(&self, id: &str, key: Option<String>) -> Result<TaskRecord, ApiError> {
        At::holding(self, id).requeue(id.to_owned(), key).await
    }

    /// Cancels a queued or running task.
    pub async fn cancel(&self, id: &str, key: Option<String>) -> Result<TaskRecord, ApiError> {
        At::holding(self, id).cancel(id.to_owned(), key).await
    }

    /// A task of this node or of the peer that holds it.
    pub async fn get(&self, id: &str) -> Result<Option<TaskRecord>, ApiError> {
        At::holding(self, id).get(id.to_owned()).await
    }

    /// Whether this node holds the task with this id.
    pub fn holds(&self, id: &str) -> bool {
        self.ctx.cluster.holds(id)
    }

    /// The cluster's tasks in id (creation) order after the cursor, filtered.
    pub async fn list(
        &self,
        filter: TaskFilter,
        after: Option<String>,
        first: usize,
    ) -> Result<Listing<TaskRecord>, ApiError> {
        let pages = Everywhere(self).list(filter, after, first as u32).await?;
        Ok(Listing::merge(pages, first, |t| t.spec.id.as_str()))
    }

    /// How many tasks in the cluster pass the filter.
    pub async fn count(&self, filter: TaskFilter) -> Result<Counted, ApiError> {
        Ok(Counted::sum(Everywhere(self).count(filter).await?))
    }
}

impl TasksLocal for Tasks {
    // A peer's request is checked like a local one.
    async fn submit(&self, request: Box<SubmitTaskRequest>, key: Option<String>) -> Result<TaskRecord, ApiError> {
        request.validate(self.ctx.max_payload_bytes)?;
        self.queue.submit(*request, key.as_deref()).await
    }

    async fn cancel(&self, id: String, key: Option<String>) -> Result<TaskRecord, ApiError> {
        self.queue.cancel(&id, key.as_deref()).await
    }

    async fn requeue(&self, id: String, key: Option<String>) -> Result<TaskRecord, ApiError> {
        self.queue.requeue(&id, key.as_deref()).await
    }

    async fn get(&self, id: String) -> Result<Option<TaskRecord>, ApiError> {
        self.queue.get(&id).await
    }

    async fn list(
        &self,
        filter: TaskFilter,
        after: Option<String>,
        first: u32,
    ) -> Result<(Vec<TaskRecord>, bool), ApiError> {
        self.queue.list(&filter, after, first.min(1000) as usize).await
    }

    async fn count(&self, filter: TaskFilter) -> Result<u64, ApiError> {
        self.queue.count(&filter).await
    }
}

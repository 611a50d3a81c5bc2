//! The tasks service: submit, cancel, look up, list and count tasks, wherever they live. A
//! task aimed at a peer's agent is submitted on that peer, which owns it from then on; a
//! task's id names its node.

mod local;

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::context::Context;
use super::listing::{merge_pages, Counted, Listing};
use crate::cluster::remote::{envelope, Service};
use crate::error::ApiError;
use crate::task::{SubmitTaskRequest, TaskRecord, TaskState};

envelope!(TasksMsg);

/// Which tasks a list or count wants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFilter {
    pub state: Option<TaskState>,
    pub agent: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum TasksRequest {
    Submit {
        request: Box<SubmitTaskRequest>,
        key: String,
    },
    Cancel {
        id: String,
        key: Option<String>,
    },
    Requeue {
        id: String,
        key: String,
    },
    Get(String),
    List {
        filter: TaskFilter,
        after: Option<String>,
        first: u32,
    },
    Count(TaskFilter),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum TasksResponse {
    Task(TaskRecord),
    Found(Option<TaskRecord>),
    Page(Vec<TaskRecord>, bool),
    Count(u64),
}

#[derive(Clone)]
pub struct Tasks {
    pub(crate) ctx: Arc<Context>,
}

fn unexpected(what: &str) -> ApiError {
    ApiError::Internal(format!("a peer answered {what} with something else"))
}

impl Tasks {
    /// Queues a task: here, or on the node of the agent it is aimed at.
    pub async fn submit(&self, request: SubmitTaskRequest, key: Option<String>) -> Result<TaskRecord, ApiError> {
        request.validate(self.ctx.max_payload_bytes)?;
        let home = request
            .agent_id
            .as_deref()
            .and_then(|a| self.ctx.peer_holding(a))
            .map(str::to_owned);
        match home {
            Some(node) => {
                let forwarded = self
                    .ctx
                    .forward::<Tasks>(
                        &node,
                        |key| TasksRequest::Submit {
                            request: Box::new(request.clone()),
                            key,
                        },
                        key,
                    )
                    .await?;
                match forwarded {
                    TasksResponse::Task(task) => Ok(task),
                    _ => Err(unexpected("submitTask")),
                }
            }
            None => self.submit_local(request, key.as_deref()).await,
        }
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
        self.submit_graph_local(graph, key.as_deref()).await
    }

    /// Queues a DEAD task again, with its attempts renewed.
    pub async fn requeue(&self, id: &str, key: Option<String>) -> Result<TaskRecord, ApiError> {
        match self.ctx.peer_holding(id) {
            Some(node) => {
                let request = |key| TasksRequest::Requeue { id: id.to_owned(), key };
                match self.ctx.forward::<Tasks>(node, request, key).await? {
                    TasksResponse::Task(task) => Ok(task),
                    _ => Err(unexpected("requeueTask")),
                }
            }
            None => self.requeue_local(id, key.as_deref()).await,
        }
    }

    /// Cancels a queued or running task.
    pub async fn cancel(&self, id: &str, key: Option<String>) -> Result<TaskRecord, ApiError> {
        match self.ctx.peer_holding(id) {
            Some(node) => {
                let request = TasksRequest::Cancel { id: id.to_owned(), key };
                match self.ctx.cluster.call::<Tasks>(node, &request).await? {
                    TasksResponse::Task(task) => Ok(task),
                    _ => Err(unexpected("cancelTask")),
                }
            }
            None => self.cancel_local(id, key.as_deref()).await,
        }
    }

    /// A task of this node or of the peer its id names.
    pub async fn get(&self, id: &str) -> Result<Option<TaskRecord>, ApiError> {
        match self.ctx.peer_holding(id) {
            Some(node) => match self
                .ctx
                .cluster
                .call::<Tasks>(node, &TasksRequest::Get(id.to_owned()))
                .await?
            {
                TasksResponse::Found(task) => Ok(task),
                _ => Err(unexpected("task")),
            },
            None => self.get_local(id).await,
        }
    }

    /// Whether this node holds the task with this id.
    pub fn holds(&self, id: &str) -> bool {
        self.ctx.holds(id)
    }

    /// The cluster's tasks in id (creation) order after the cursor, filtered.
    pub async fn list(
        &self,
        filter: TaskFilter,
        after: Option<String>,
        first: usize,
    ) -> Result<Listing<TaskRecord>, ApiError> {
        let mut pages = vec![self.list_local(&filter, after.clone(), first).await?];
        let request = TasksRequest::List {
            filter,
            after,
            first: first as u32,
        };
        let gathered = self.ctx.cluster.gather::<Tasks>(&request).await;
        pages.extend(gathered.answers.into_iter().filter_map(|a| match a {
            TasksResponse::Page(items, more) => Some((items, more)),
            _ => None,
        }));
        let (items, more) = merge_pages(pages, first, |t| t.spec.id.as_str());
        Ok(Listing {
            items,
            more,
            missing: gathered.missing,
        })
    }

    /// How many tasks in the cluster pass the filter.
    pub async fn count(&self, filter: TaskFilter) -> Result<Counted, ApiError> {
        let local = self.count_local(&filter).await?;
        let gathered = self.ctx.cluster.gather::<Tasks>(&TasksRequest::Count(filter)).await;
        let remote: u64 = gathered
            .answers
            .into_iter()
            .filter_map(|a| match a {
                TasksResponse::Count(n) => Some(n),
                _ => None,
            })
            .sum();
        Ok(Counted {
            total: local + remote,
            missing: gathered.missing,
        })
    }
}

impl Service for Tasks {
    const ROLE: &'static str = "tasks";
    type Request = TasksRequest;
    type Response = TasksResponse;
    type Msg = TasksMsg;

    fn node_name(&self) -> &str {
        &self.ctx.node_name
    }

    fn serve(&self, request: TasksRequest) -> BoxFuture<'static, Result<TasksResponse, ApiError>> {
        let tasks = self.clone();
        Box::pin(async move {
            match request {
                // A peer's request is checked like a local one.
                TasksRequest::Submit { request, key } => {
                    request.validate(tasks.ctx.max_payload_bytes)?;
                    tasks.submit_local(*request, Some(&key)).await.map(TasksResponse::Task)
                }
                TasksRequest::Cancel { id, key } => {
                    tasks.cancel_local(&id, key.as_deref()).await.map(TasksResponse::Task)
                }
                TasksRequest::Requeue { id, key } => {
                    tasks.requeue_local(&id, Some(&key)).await.map(TasksResponse::Task)
                }
                TasksRequest::Get(id) => tasks.get_local(&id).await.map(TasksResponse::Found),
                TasksRequest::List { filter, after, first } => {
                    let (items, more) = tasks.list_local(&filter, after, first.min(1000) as usize).await?;
                    Ok(TasksResponse::Page(items, more))
                }
                TasksRequest::Count(filter) => tasks.count_local(&filter).await.map(TasksResponse::Count),
            }
        })
    }
}

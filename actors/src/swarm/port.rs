//! What the swarm room needs of the rest of the node, and no more: its members (agents it
//! owns), its subtasks (ordinary tasks), the store, its locks and watch, the supervision
//! settings for the subtrees it starts, and the registry of running actors. The service
//! layer makes it (the agents and tasks services implement [`Members`] and [`Subtasks`]),
//! so the swarm code never reaches up into the gateway's facade.

use std::sync::Arc;

use futures::future::BoxFuture;
use troupe_runtime::store::Store;
use troupe_runtime::supervision::Backoff;

use super::{Locks, Watch};
use crate::agent::{AgentPolicy, AgentView, SpawnAgentRequest};
use crate::error::ApiError;
use crate::slots::Slots;
use crate::task::{GraphTask, SubmitTaskRequest, TaskRecord};

/// The agents of this node a swarm owns.
pub trait Members: Send + Sync {
    /// The swarm's members, in the order they were made.
    fn of(&self, swarm: &str) -> BoxFuture<'_, Result<Vec<AgentView>, ApiError>>;
    /// An agent of this node, if there is one.
    fn get<'a>(&'a self, agent: &'a str) -> BoxFuture<'a, Result<Option<AgentView>, ApiError>>;
    /// Makes and starts a member of the swarm; its own error when it cannot start.
    fn start<'a>(&'a self, swarm: &'a str, req: SpawnAgentRequest) -> BoxFuture<'a, Result<AgentView, ApiError>>;
    /// Removes a member (its running tasks are handled as for `removeAgent`).
    fn remove<'a>(&'a self, agent: &'a str) -> BoxFuture<'a, Result<(), ApiError>>;
}

/// The ordinary tasks a swarm hands its work out as.
pub trait Subtasks: Send + Sync {
    /// Submits one task under an idempotency key.
    fn submit(&self, request: SubmitTaskRequest, key: String) -> BoxFuture<'_, Result<TaskRecord, ApiError>>;
    /// Submits tasks in one commit under one idempotency key.
    fn submit_graph(&self, graph: Vec<GraphTask>, key: String) -> BoxFuture<'_, Result<Vec<TaskRecord>, ApiError>>;
    fn get<'a>(&'a self, task: &'a str) -> BoxFuture<'a, Result<Option<TaskRecord>, ApiError>>;
    fn cancel<'a>(&'a self, task: &'a str) -> BoxFuture<'a, Result<TaskRecord, ApiError>>;
}

/// The swarm room's handles on the node.
#[derive(Clone)]
pub struct Port {
    pub(crate) store: Store,
    pub(crate) locks: Locks,
    pub(crate) watch: Watch,
    /// The restart backoff of the supervisors it starts.
    pub(crate) backoff: Backoff,
    /// What its members' child specs share with every agent's.
    pub(crate) policy: AgentPolicy,
    /// Where the supervisors and coordinators it starts are found.
    pub(crate) slots: Slots,
    pub(crate) members: Arc<dyn Members>,
    pub(crate) subtasks: Arc<dyn Subtasks>,
}

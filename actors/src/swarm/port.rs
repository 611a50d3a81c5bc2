//! What the swarm room needs of the rest of the node, and no more: its members (agents it
//! owns), its subtasks (ordinary tasks), the store, its locks and watch, the supervision
//! settings for the subtrees it starts, the registry of running actors, and the node's name
//! and limits. The node's bootstrap makes it (the agents and tasks services implement
//! [`Members`] and [`Subtasks`]), so the swarm code never reaches up into the gateway's
//! facade. The room's operations (create, scale, destroy, memory, tasks) are methods on it.

use std::sync::Arc;

use futures::future::BoxFuture;
use troupe_runtime::store::Store;
use troupe_runtime::supervision::Backoff;

use super::{Locks, Watch};
use crate::agent::Slots;
use crate::agent::{AgentPolicy, AgentView, Owner, SpawnAgentRequest};
use crate::error::ApiError;
use crate::serving::Serving;
use crate::task::{GraphTask, SubmitTaskRequest, TaskRecord};

/// The agents of this node a swarm owns.
pub trait Members: Send + Sync {
    /// The swarm's members, in the order they were made.
    fn of(&self, swarm: &str) -> BoxFuture<'_, Result<Vec<AgentView>, ApiError>>;
    /// An agent of this node, if there is one.
    fn get<'a>(&'a self, agent: &'a str) -> BoxFuture<'a, Result<Option<AgentView>, ApiError>>;
    /// Who owns an agent, from its spec alone (what [`Members::get`] would say of it,
    /// without the counters a view gathers): `None` for no such agent.
    fn owner<'a>(&'a self, agent: &'a str) -> BoxFuture<'a, Result<Option<Owner>, ApiError>>;
    /// Makes and starts a member of the swarm; its own error when it cannot start.
    fn start<'a>(&'a self, swarm: &'a str, req: SpawnAgentRequest) -> BoxFuture<'a, Result<AgentView, ApiError>>;
    /// Removes a member (its running tasks are handled as for `removeAgent`).
    fn remove<'a>(&'a self, agent: &'a str) -> BoxFuture<'a, Result<(), ApiError>>;
    /// Gives an agent of this node to `owner`, its queue capability `capability`.
    fn move_to<'a>(&'a self, agent: &'a str, owner: Owner, capability: &'a str) -> BoxFuture<'a, Result<(), ApiError>>;
    /// The peer that holds `agent`, when it is not this node.
    fn holder(&self, agent: &str) -> Option<String>;
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
    /// This node's name: the ids the room makes name it.
    pub(crate) node: String,
    pub(crate) store: Store,
    pub(crate) serving: Serving,
    /// The largest value a swarm's memory takes, as for any payload.
    pub(crate) max_payload_bytes: usize,
    /// Whether a coordinator may be crashed on request (`--fault-injection`).
    pub(crate) fault_injection: bool,
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

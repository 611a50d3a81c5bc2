//! The swarms service: create, scale, retopologise and destroy swarms, their memory and their
//! tasks. A swarm lives on one node, members and coordinator included (its id says which);
//! a change to a peer's swarm is sent to that peer's swarms service, while reads (the swarm,
//! the list, its memory, its tasks) are answered from this node's replica. On the swarm's
//! node each change is the swarm room's work, done through its [`Port`].

use std::sync::Arc;
use std::time::Duration;

use super::context::Context;
use crate::error::ApiError;
use crate::swarm::memory::{Entry, Op, Write};
use crate::swarm::{CreateSwarmRequest, Port, SwarmTask, SwarmTaskMode, SwarmView, Topology};

/// Sends the call to the node holding `$id` when it is a peer, and answers with its answer;
/// on the holder, the method goes on with its own work.
macro_rules! on_peer {
    ($self:ident, $id:expr, $call:ident($($arg:expr),* $(,)?)) => {
        if let Some(node) = $self.ctx.peer_holding($id) {
            return crate::cluster::remote::Peer($self, node).$call($($arg),*).await;
        }
    };
}

mod peer;
mod port;

#[derive(Clone)]
pub struct Swarms {
    pub(crate) ctx: Arc<Context>,
    /// The swarm room on this node.
    pub(crate) port: Port,
}

impl Swarms {
    /// Whether this node holds the swarm (or swarm task) with this id.
    pub fn holds(&self, id: &str) -> bool {
        self.ctx.holds(id)
    }

    /// The swarm room's handles on this node (for the `swarms` supervisor).
    pub(crate) fn port(&self) -> Port {
        self.port.clone()
    }

    /// Creates a swarm on the node it asks for (a sub-team on its parent's), adopting the
    /// agents named; answers once its coordinator has started the members its templates make.
    pub async fn create(&self, req: CreateSwarmRequest) -> Result<SwarmView, ApiError> {
        req.validate()?;
        let node = match &req.lead {
            // A sub-team runs where its parent does.
            Some(lead) => {
                let home = self
                    .ctx
                    .peer_holding(&lead.swarm)
                    .unwrap_or_else(|| self.ctx.node_name.clone());
                if let Some(asked) = req.node.as_deref().filter(|n| *n != home) {
                    return Err(ApiError::invalid(format!(
                        "a sub-team runs on its parent's node ({home}), not on {asked}"
                    )));
                }
                Some(home.to_owned())
            }
            None => req.node.clone(),
        }
        .filter(|n| *n != self.ctx.node_name);
        if let Some(node) = node {
            self.ctx.ensure_member(&node)?;
            let mut req = req;
            req.node = None;
            return crate::cluster::remote::Peer(self, node).create(Box::new(req)).await;
        }
        self.port.create(req).await
    }

    /// A swarm with its members, from this node's replica.
    pub async fn get(&self, id: &str) -> Result<SwarmView, ApiError> {
        self.read_replica(|| self.port.view(id), |_| false).await
    }

    /// The cluster's swarms, sub-teams included, in id order, from this node's replica.
    pub async fn list(&self) -> Result<Vec<SwarmView>, ApiError> {
        self.port.views().await
    }

    /// `read` from this node's replica. When what it looks for is not there (NOT_FOUND, or
    /// `absent` says so), this node first catches up with what the cluster committed (a
    /// linearizable read) and reads again: a swarm created through another node a moment ago
    /// is found, and nothing is answered missing that the cluster holds.
    async fn read_replica<T, F>(&self, read: impl Fn() -> F, absent: impl Fn(&T) -> bool) -> Result<T, ApiError>
    where
        F: std::future::Future<Output = Result<T, ApiError>>,
    {
        let first = read().await;
        let missing = match &first {
            Ok(found) => absent(found),
            Err(e) => matches!(e, ApiError::NotFound(_)),
        };
        if !missing {
            return first;
        }
        self.ctx.store.linearize().await?;
        read().await
    }

    /// Sets the swarm's size (within its bounds) and waits for its coordinator to reach it.
    pub async fn scale(&self, id: &str, size: u32, reason: &str) -> Result<SwarmView, ApiError> {
        on_peer!(self, id, scale(id.to_owned(), size, reason.to_owned()));
        self.port.scale(id, size, reason).await
    }

    pub async fn set_topology(&self, id: &str, topology: Topology) -> Result<SwarmView, ApiError> {
        on_peer!(self, id, set_topology(id.to_owned(), topology));
        self.port.set_topology(id, topology).await
    }

    /// Makes an agent of the swarm's node a member; the swarm's size grows by one.
    pub async fn adopt(&self, id: &str, agent: &str) -> Result<SwarmView, ApiError> {
        on_peer!(self, id, adopt(id.to_owned(), agent.to_owned()));
        self.port.adopt(id, agent).await
    }

    /// Gives a member back to its node; the swarm's size shrinks by one.
    pub async fn release(&self, id: &str, agent: &str) -> Result<SwarmView, ApiError> {
        on_peer!(self, id, release(id.to_owned(), agent.to_owned()));
        self.port.release(id, agent).await
    }

    /// Stops the swarm's whole subtree, then removes the swarm, its members, its memory and
    /// its tasks' records.
    pub async fn destroy(&self, id: &str) -> Result<SwarmView, ApiError> {
        on_peer!(self, id, destroy(id.to_owned()));
        self.port.destroy(id).await
    }

    /// Fails the swarm's coordinator (an injected fault: `--fault-injection` only).
    pub async fn crash_coordinator(&self, id: &str) -> Result<(), ApiError> {
        on_peer!(self, id, crash_coordinator(id.to_owned()));
        self.port.crash_coordinator(id).await
    }

    /// A key of the swarm's memory, from this node's replica.
    pub async fn memory_get(&self, id: &str, key: &str) -> Result<Option<Entry>, ApiError> {
        self.read_replica(|| self.port.memory_get(id, key), Option::is_none)
            .await
    }

    /// The swarm's memory keys under `prefix`, from this node's replica.
    pub async fn memory_list(&self, id: &str, prefix: &str, first: usize) -> Result<Vec<Entry>, ApiError> {
        self.read_replica(|| self.port.memory_list(id, prefix, first), |_| false)
            .await
    }

    /// Sets or deletes a key, if its version is `expect` (when given: 0 for a key that must
    /// not exist yet).
    pub async fn memory_write(
        &self,
        id: &str,
        key: &str,
        write: Write,
        expect: Option<u64>,
    ) -> Result<Option<Entry>, ApiError> {
        on_peer!(
            self,
            id,
            memory_write(id.to_owned(), key.to_owned(), write.clone(), expect)
        );
        match self.port.memory_write(id, key, write.clone(), expect).await {
            // A refusal read from this replica is vouched for before it is answered: a node
            // restarted, thawed or cut off may hold a stale copy of the key, or no longer hold
            // the swarm at all. Caught up with what the cluster committed (or UNAVAILABLE
            // when no leader confirms), it decides again, where the swarm now is.
            Err(ApiError::Conflict(_) | ApiError::NotFound(_)) => {
                self.ctx.store.linearize().await?;
                on_peer!(
                    self,
                    id,
                    memory_write(id.to_owned(), key.to_owned(), write.clone(), expect)
                );
                self.port.memory_write(id, key, write, expect).await
            }
            answer => answer,
        }
    }

    /// A member's read or write of its own swarm's memory (a member of this node).
    pub async fn agent_memory(&self, agent: &str, op: Op) -> Result<serde_json::Value, ApiError> {
        self.port.agent_memory(agent, op).await
    }

    /// Records a swarm task and hands it to the coordinator; answers it RUNNING.
    pub async fn submit_task(&self, id: &str, mode: SwarmTaskMode) -> Result<SwarmTask, ApiError> {
        on_peer!(self, id, submit_task(id.to_owned(), Box::new(mode.clone())));
        self.port.submit_task(id, mode).await
    }

    /// [`Self::submit_task`] under an idempotency key: a second submit with the key (for the
    /// same swarm and work) answers the first one's task. The key is recorded in its own
    /// commit right after the task's, so a node that dies between the two lets a retry make
    /// a second task; a different request with the key is CONFLICT.
    pub async fn submit_task_once(&self, id: &str, mode: SwarmTaskMode, key: &str) -> Result<SwarmTask, ApiError> {
        use troupe_runtime::idempotency::Claim;
        match self.ctx.claim::<String>("swarm-task", Some(key), &(id, &mode)).await? {
            Some(Claim::Replay(task)) => self
                .task(&task)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("swarm task {task} (submitted with key {key:?})"))),
            Some(Claim::Fresh(guard)) => {
                let task = self.submit_task(id, mode).await?;
                let mut batch = troupe_runtime::store::Batch::new();
                guard.record(&mut batch, &task.id)?;
                self.ctx.store.write(batch).await?;
                Ok(task)
            }
            None => self.submit_task(id, mode).await,
        }
    }

    /// A leader's (of this node) swarm task for the team it leads, waited on for at most
    /// `timeout`; its result.
    pub async fn lead_task(
        &self,
        agent: &str,
        mode: SwarmTaskMode,
        timeout: Duration,
    ) -> Result<serde_json::Value, ApiError> {
        self.port.lead_task(agent, mode, timeout).await
    }

    /// A swarm task, from this node's replica.
    pub async fn task(&self, task: &str) -> Result<Option<SwarmTask>, ApiError> {
        self.read_replica(|| self.port.task(task), Option::is_none).await
    }

    /// The swarm's tasks, newest first, at most `first`, from this node's replica.
    pub async fn tasks(&self, id: &str, first: usize) -> Result<Vec<SwarmTask>, ApiError> {
        self.port.tasks(id, first).await
    }

    /// Tasks running on the swarm's members, and their slots, from this node's replica.
    pub async fn queue(&self, id: &str) -> Result<(u32, u32), ApiError> {
        self.port.queue(id).await
    }
}

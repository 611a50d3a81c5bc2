//! The tasks service: submit, cancel, look up, list and count tasks, wherever they live. A
//! task aimed at a peer's agent is submitted on that peer, which owns it from then on; a
//! task's id names its node. On the task's node each request is the scheduler room's work,
//! done through its [`TaskQueue`].

use std::sync::Arc;

use super::context::Context;
use super::listing::{Counted, Listing};
use crate::cluster::remote::{service, At, Everywhere, Located, Peer};
use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::scheduler::Room;
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
    /// What this node's agents can take of a capability now.
    call Room => room(capability: String) -> Room;
}

/// How long a submit waits for a peer to say what room it has.
const ROOM_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// The member to queue a capability's task on, when this node's agents (`here`) have no free
/// slot: the peer with the most free slots; if none has one, `None` (here) when an agent of
/// this node serves the capability, else the peer with the most agents that do.
fn choose_node(here: Room, peers: &[(String, Room)]) -> Option<String> {
    let most = |key: fn(&Room) -> u32| {
        peers
            .iter()
            .filter(|(_, room)| key(room) > 0)
            .max_by(|(a, ra), (b, rb)| key(ra).cmp(&key(rb)).then_with(|| b.cmp(a)))
            .map(|(name, _)| name.clone())
    };
    if here.free > 0 {
        return None;
    }
    most(|r| r.free).or_else(|| if here.agents > 0 { None } else { most(|r| r.agents) })
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
            None => self.placed(&request).await,
        };
        at.submit(Box::new(request), key).await
    }

    /// Where a task aimed at a capability is queued: here while an agent of this node that
    /// serves it has a free slot; else on the member whose agents have the most free slots
    /// for it; else, when every slot is taken, here if an agent of this node serves it, or
    /// on the member with the most agents that do. The chosen node's scheduler then picks
    /// the agent by the task's strategy. A task with requirements (`capabilities`,
    /// `minProficiency`) or dependencies stays here.
    async fn placed(&self, request: &SubmitTaskRequest) -> At<'_, Self> {
        let Some(capability) = request.capability.as_deref() else {
            return At::Here(self);
        };
        if !request.capabilities.is_empty() || request.min_proficiency.is_some() || !request.depends_on.is_empty() {
            return At::Here(self);
        }
        let here = self.queue.room(capability).await.unwrap_or_default();
        if here.free > 0 || self.ctx.cluster.peers().is_empty() {
            return At::Here(self);
        }
        // Each peer is asked at once; one that does not answer in time is left out.
        let asked = self.ctx.cluster.peers().into_iter().map(|peer| async move {
            let room = tokio::time::timeout(ROOM_WITHIN, Peer(self, peer.clone()).room(capability.to_owned())).await;
            room.ok().and_then(Result::ok).map(|room| (peer, room))
        });
        let peers: Vec<(String, Room)> = futures::future::join_all(asked).await.into_iter().flatten().collect();
        match choose_node(here, &peers) {
            Some(node) => At::Peer(self, node),
            None => At::Here(self),
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
        let at = At::holding(self, id);
        let down = at
            .peer()
            .is_some_and(|peer| self.ctx.cluster.status(peer) == Some(crate::cluster::MemberStatus::Down));
        if down {
            // Its holder is gone. A task that ended there stays there (only open tasks
            // move), and its record, in every member's store, can no longer change: read it
            // here. An open one is asked of its holder (and is UNAVAILABLE): its stored state
            // would claim what nothing does now.
            let here = At::Here(self).get(id.to_owned()).await?;
            if let Some(ended) = here.filter(|t| t.status.state.is_terminal()) {
                return Ok(Some(ended));
            }
        }
        at.get(id.to_owned()).await
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

    async fn room(&self, capability: String) -> Result<Room, ApiError> {
        self.queue.room(&capability).await
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

#[cfg(test)]
mod tests {
    use super::{choose_node, Room};

    fn room(agents: u32, free: u32) -> Room {
        Room { agents, free }
    }

    #[test]
    fn a_capabilitys_task_goes_where_its_agents_have_room() {
        let peers = vec![("b".to_string(), room(2, 1)), ("c".to_string(), room(3, 4))];
        // Room here: it stays.
        assert_eq!(choose_node(room(1, 1), &peers), None);
        // None here: the peer with the most free slots.
        assert_eq!(choose_node(room(1, 0), &peers), Some("c".into()));
        // Every slot taken: here when an agent here serves it, else the most agents.
        let full = vec![("b".to_string(), room(2, 0)), ("c".to_string(), room(5, 0))];
        assert_eq!(choose_node(room(1, 0), &full), None);
        assert_eq!(choose_node(room(0, 0), &full), Some("c".into()));
        // Nobody serves it: here, where it waits for an agent.
        assert_eq!(choose_node(room(0, 0), &[("b".to_string(), room(0, 0))]), None);
        // Ties go to the first name.
        let tie = vec![("c".to_string(), room(1, 2)), ("b".to_string(), room(1, 2))];
        assert_eq!(choose_node(room(0, 0), &tie), Some("b".into()));
    }
}

//! The tasks service: submit, cancel, look up, list and count tasks, wherever they live. A
//! task aimed at a peer's agent is submitted on that peer, which owns it from then on; one
//! placed on a peer whose agents have a free slot is written here and held there (the peer
//! takes it up as it applies the write); a task's id names the node that made it, the
//! directory the node that holds it. On the task's holder each request is the scheduler
//! room's work, done through its [`TaskQueue`].

use std::sync::Arc;

use super::context::Context;
use super::listing::{Counted, Listing};
use crate::cluster::remote::{service, At, Located};
use crate::cluster::Cluster;
use crate::error::ApiError;
pub use crate::scheduler::TaskFilter;
use crate::scheduler::TaskQueue;
use crate::scheduler::{Place, Room};
use crate::task::{Strategy, SubmitTaskRequest, TaskRecord};

service! {
    service Tasks as "tasks" (TasksMsg, TasksRequest, TasksResponse, TasksLocal);
    /// Queues a task on this node, which owns it from then on.
    keyed Submit => submit(request: Box<SubmitTaskRequest>) -> TaskRecord;
    /// Cancels a queued or running task of this node.
    keyed Cancel => cancel(id: String) -> TaskRecord;
    /// Queues a DEAD task of this node again.
    keyed Requeue => requeue(id: String) -> TaskRecord;
    /// Makes sure a task of this node that the store holds QUEUED is in its scheduler's
    /// queue (a submit answered again from its idempotency record on another node).
    call Ensure => ensure_queued(id: String) -> ();
}

/// The member to queue a capability's task on (`None`: here). Among the nodes (here
/// included) whose agents have a free slot, the one whose best agent the task's strategy
/// ranks first: the best score, the fewest tasks running, the least served for its weight,
/// or, round robin, each such node in turn (`turn` counts this node's choices). Ties stay
/// here, then go to the first name. When no agent has a free slot anywhere: here when an
/// agent of this node serves the capability, else the peer with the most agents that do.
fn choose_node(strategy: Strategy, here: Room, peers: &[(String, Room)], turn: u64) -> Option<String> {
    let mut open: Vec<(Option<&str>, Place)> = here
        .best
        .filter(|_| here.free > 0)
        .map(|place| (None, place))
        .into_iter()
        .collect();
    let mut others: Vec<(Option<&str>, Place)> = peers
        .iter()
        .filter(|(_, room)| room.free > 0)
        .filter_map(|(name, room)| room.best.map(|place| (Some(name.as_str()), place)))
        .collect();
    others.sort_by(|a, b| a.0.cmp(&b.0));
    open.extend(others);
    // `min_by_key` keeps the first of equals: here, then names in order.
    let chosen = match strategy {
        _ if open.is_empty() => None,
        Strategy::Score => open.iter().min_by_key(|(_, p)| p.score),
        Strategy::LeastConnections => open.iter().min_by_key(|(_, p)| p.running),
        Strategy::Weighted => open.iter().min_by_key(|(_, p)| p.weighted),
        Strategy::RoundRobin => open.get((turn % open.len() as u64) as usize),
    };
    if let Some((node, _)) = chosen {
        return node.map(str::to_owned);
    }
    if here.agents > 0 {
        return None;
    }
    peers
        .iter()
        .filter(|(_, room)| room.agents > 0)
        .max_by(|(a, ra), (b, rb)| ra.agents.cmp(&rb.agents).then_with(|| b.cmp(a)))
        .map(|(name, _)| name.clone())
}

#[derive(Clone)]
pub struct Tasks {
    pub(crate) ctx: Arc<Context>,
    /// This node's tasks, as the scheduler room works them.
    pub(crate) queue: TaskQueue,
    /// Round-robin placements made here, to take the nodes in turn.
    pub(crate) turns: Arc<std::sync::atomic::AtomicU64>,
}

impl Located for Tasks {
    fn cluster(&self) -> &Cluster {
        &self.ctx.cluster
    }
}

impl Tasks {
    /// Queues a task: on the node of the agent it is aimed at, or where the placement puts
    /// it (see [`Tasks::placed`]).
    pub async fn submit(&self, request: SubmitTaskRequest, key: Option<String>) -> Result<TaskRecord, ApiError> {
        request.validate(self.ctx.max_payload_bytes)?;
        if let Some(agent) = request.agent_id.as_deref() {
            return At::holding(self, agent).submit(Box::new(request), key).await;
        }
        let (node, room) = match self.placed(&request).await {
            None => return At::Here(self).submit(Box::new(request), key).await,
            Some(placed) => placed,
        };
        if room {
            // A free slot there, as its last beat told: written here, held there.
            return match self.queue.submit_to(&node, request, key.as_deref()).await? {
                (made, true) => Ok(made),
                (answered, false) => self.ensured(answered).await,
            };
        }
        // No agent has a free slot anywhere, and none here serves the capability: it is
        // queued on the peer, whose admission bounds its queue (BACKPRESSURE). One that
        // began to shut down since its last beat refuses it before doing anything, and one
        // that stopped since is no longer connected: either way nothing was done there, and
        // it is queued here instead.
        match At::Peer(self, node.clone())
            .submit(Box::new(request.clone()), key.clone())
            .await
        {
            Err(e) if crate::serving::refused_for_stop(&e) || crate::cluster::remote::never_sent(&e) => {
                tracing::debug!(%node, error = %e, "the node a task was placed on did not take it: queued here");
                At::Here(self).submit(Box::new(request), key).await
            }
            answered => answered,
        }
    }

    /// The member to queue a task aimed at a capability on, and whether it has a free slot
    /// for it (`None`: here): the node whose agents the task's
    /// strategy ranks first across the cluster (see [`choose_node`]), from what room this
    /// node's scheduler has now and what room each peer heard from lately had at its last
    /// beat (see `scheduler::Rooms`): no peer is asked per task. That node's scheduler then
    /// picks the agent by the same strategy. A task with requirements (`capabilities`,
    /// `minProficiency`) or dependencies stays here.
    async fn placed(&self, request: &SubmitTaskRequest) -> Option<(String, bool)> {
        let capability = request.capability.as_deref()?;
        if !request.capabilities.is_empty() || request.min_proficiency.is_some() || !request.depends_on.is_empty() {
            return None;
        }
        let peers = self.ctx.cluster.peer_rooms(capability);
        if peers.is_empty() {
            return None;
        }
        let here = self.queue.room(capability).await.unwrap_or_default();
        let strategy = request.strategy.unwrap_or(self.queue.default_strategy);
        let turn = match strategy {
            Strategy::RoundRobin => self.turns.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            _ => 0,
        };
        let node = choose_node(strategy, here, &peers, turn)?;
        let room = peers.iter().any(|(name, room)| *name == node && room.free > 0);
        Some((node, room))
    }

    /// Waits (at most `timeout`) until task `id` has ended, wherever it runs: its record, read
    /// from this node's replica again on each event about it.
    pub async fn wait_end(&self, id: &str, timeout: std::time::Duration) -> Result<TaskRecord, ApiError> {
        use tokio::sync::broadcast::error::RecvError;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut live = self.ctx.store.live();
        loop {
            let record = self
                .get(id)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("task {id} is gone")))?;
            if record.status.state.is_terminal() {
                return Ok(record);
            }
            // Until an event about it (or a lag, after which it is read again).
            loop {
                match tokio::time::timeout_at(deadline, live.recv()).await {
                    Err(_) => {
                        return Err(ApiError::Unavailable(format!(
                            "task {id} has not ended after {} ms; it goes on",
                            timeout.as_millis()
                        )))
                    }
                    Ok(Err(RecvError::Closed)) => return Err(ApiError::Unavailable("the node is stopping".into())),
                    Ok(Err(RecvError::Lagged(_))) => break,
                    Ok(Ok(event)) if event.subject.as_deref() == Some(id) => break,
                    Ok(Ok(_)) => {}
                }
            }
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

    /// A task, wherever it runs, from this node's replica.
    pub async fn get(&self, id: &str) -> Result<Option<TaskRecord>, ApiError> {
        self.queue.get(id).await
    }

    /// Whether this node holds the task with this id.
    pub fn holds(&self, id: &str) -> bool {
        self.ctx.cluster.holds(id)
    }

    /// The cluster's tasks in id (creation) order after the cursor, filtered, from this
    /// node's replica.
    pub async fn list(
        &self,
        filter: TaskFilter,
        after: Option<String>,
        first: usize,
    ) -> Result<Listing<TaskRecord>, ApiError> {
        let (items, more) = self.queue.list(&filter, after, first).await?;
        Ok(Listing::local(items, more))
    }

    /// A submit's answer, once its holder surely queued it. A task queued here is held here;
    /// one held elsewhere is the first answer to this key, given again. That first submit
    /// may have failed after its write was made (its leader lost, the outcome unknown), so
    /// its node never queued it: its holder makes sure it is queued before the task is
    /// acknowledged, or the client is told to retry.
    async fn ensured(&self, record: TaskRecord) -> Result<TaskRecord, ApiError> {
        if record.status.state == crate::task::TaskState::Queued && !self.holds(&record.spec.id) {
            At::holding(self, &record.spec.id)
                .ensure_queued(record.spec.id.clone())
                .await?;
        }
        Ok(record)
    }

    /// How many tasks in the cluster pass the filter, from this node's replica.
    pub async fn count(&self, filter: TaskFilter) -> Result<Counted, ApiError> {
        Ok(Counted::local(self.queue.count(&filter).await?))
    }
}

impl TasksLocal for Tasks {
    // A peer's request is checked like a local one.
    async fn submit(&self, request: Box<SubmitTaskRequest>, key: Option<String>) -> Result<TaskRecord, ApiError> {
        request.validate(self.ctx.max_payload_bytes)?;
        let record = self.queue.submit(*request, key.as_deref()).await?;
        self.ensured(record).await
    }

    async fn ensure_queued(&self, id: String) -> Result<(), ApiError> {
        self.queue.ensure_queued(&id)
    }

    async fn cancel(&self, id: String, key: Option<String>) -> Result<TaskRecord, ApiError> {
        self.queue.cancel(&id, key.as_deref()).await
    }

    async fn requeue(&self, id: String, key: Option<String>) -> Result<TaskRecord, ApiError> {
        self.queue.requeue(&id, key.as_deref()).await
    }
}

#[cfg(test)]
mod tests {
    use super::{choose_node, Place, Room, Strategy};

    /// `agents` agents with `free` slots; the best of them scores `score` (smaller first),
    /// runs `running` tasks and has served `weighted` for its weight.
    fn room(agents: u32, free: u32, score: u64, running: u32, weighted: u64) -> Room {
        let best = (free > 0).then_some(Place {
            score,
            running,
            weighted,
        });
        Room { agents, free, best }
    }

    fn full(agents: u32) -> Room {
        room(agents, 0, 0, 0, 0)
    }

    fn named(rooms: &[(&str, Room)]) -> Vec<(String, Room)> {
        rooms.iter().map(|(n, r)| (n.to_string(), *r)).collect()
    }

    #[test]
    fn each_strategy_ranks_the_best_agent_of_every_node_with_room() {
        let here = room(1, 1, 50, 3, 70);
        let peers = named(&[("b", room(2, 1, 10, 5, 90)), ("c", room(3, 4, 60, 1, 20))]);
        assert_eq!(choose_node(Strategy::Score, here, &peers, 0), Some("b".into()));
        assert_eq!(
            choose_node(Strategy::LeastConnections, here, &peers, 0),
            Some("c".into())
        );
        assert_eq!(choose_node(Strategy::Weighted, here, &peers, 0), Some("c".into()));
        // Here first, then the peers by name, each in turn.
        let turns: Vec<_> = (0..4)
            .map(|t| choose_node(Strategy::RoundRobin, here, &peers, t))
            .collect();
        assert_eq!(turns, [None, Some("b".into()), Some("c".into()), None]);
        // Here is best: it stays, whatever the peers have.
        let better_here = room(1, 1, 5, 0, 1);
        for strategy in [Strategy::Score, Strategy::LeastConnections, Strategy::Weighted] {
            assert_eq!(choose_node(strategy, better_here, &peers, 0), None, "{strategy:?}");
        }
        // A node with no free slot is never chosen while another has one.
        let busy_here = full(4);
        assert_eq!(
            choose_node(Strategy::LeastConnections, busy_here, &peers, 0),
            Some("c".into())
        );
        let turns: Vec<_> = (0..2)
            .map(|t| choose_node(Strategy::RoundRobin, busy_here, &peers, t))
            .collect();
        assert_eq!(turns, [Some("b".into()), Some("c".into())]);
    }

    #[test]
    fn ties_stay_here_then_go_to_the_first_name() {
        let same = room(1, 1, 10, 1, 10);
        let peers = named(&[("c", same), ("b", same)]);
        assert_eq!(choose_node(Strategy::Score, same, &peers, 0), None);
        assert_eq!(choose_node(Strategy::Score, full(0), &peers, 0), Some("b".into()));
    }

    #[test]
    fn with_every_slot_taken_a_task_waits_here_or_where_most_agents_serve_it() {
        let peers = named(&[("b", full(2)), ("c", full(5))]);
        assert_eq!(choose_node(Strategy::Score, full(1), &peers, 0), None);
        assert_eq!(choose_node(Strategy::Score, full(0), &peers, 0), Some("c".into()));
        // Nobody serves it: here, where it waits for an agent.
        assert_eq!(
            choose_node(Strategy::Score, full(0), &named(&[("b", full(0))]), 0),
            None
        );
    }
}

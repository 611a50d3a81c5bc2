//! The agents service: create, act on (start, stop, pause, ...), checkpoint, look up, list
//! and count agents, wherever they live: a request about an agent goes to the agents service
//! of the node that holds it.

mod lifecycle;
mod local;

use std::sync::Arc;

use super::context::Context;
use super::listing::{Counted, Listing};
use crate::agent::{AgentFilter, AgentPolicy, AgentView, Checkpoint, LogLine, Owner, Slots, SpawnAgentRequest};
use crate::cluster::remote::{service, At, Located};
use crate::cluster::Cluster;
use crate::error::ApiError;

service! {
    service Agents as "agents" (AgentsMsg, AgentsRequest, AgentsResponse, AgentsLocal);
    /// Spawns an agent on this node.
    keyed Spawn => spawn(request: Box<SpawnAgentRequest>) -> AgentView;
    /// Acts on an agent of this node (start, stop, pause, ...).
    keyed Act => act(id: String, action: AgentAction) -> AgentView;
    /// Takes a checkpoint of an agent of this node.
    keyed Checkpoint => checkpoint(id: String, description: String) -> Checkpoint;
}

/// What can be done to an existing agent (the agent room's own word for it).
pub use crate::agent::Action as AgentAction;

/// What an agent shows of itself, observed on its node (see [`crate::agent::Observed`]).
pub use crate::agent::AgentLive;

#[derive(Clone)]
pub struct Agents {
    pub(crate) ctx: Arc<Context>,
    /// Where this node's agents and their supervisors are found.
    pub(crate) slots: Slots,
    /// What every agent's child spec shares (restarts, shutdown, secrets).
    pub(crate) policy: AgentPolicy,
    /// What this node's agents and the peers' show of themselves.
    pub(crate) observed: crate::agent::Observed,
    /// Wakes the followers of an agent's log when a line of it is applied.
    pub(crate) log_watch: crate::swarm::Watch,
    /// Every agent's name, as the replica holds it.
    pub(crate) names: crate::agent::AgentNames,
}

impl Located for Agents {
    fn cluster(&self) -> &Cluster {
        &self.ctx.cluster
    }
}

impl Agents {
    /// Spawns an agent on this node, or on `request.node`.
    pub async fn spawn(&self, mut request: SpawnAgentRequest, key: Option<String>) -> Result<AgentView, ApiError> {
        request.validate()?;
        if let crate::agent::BackendSpec::Llm(llm) = &mut request.backend {
            let servers = self.mcp_servers(&llm.mcp_servers).await?;
            let names: Vec<String> = servers.iter().map(|(_, name)| name.clone()).collect();
            if let Some(pattern) = crate::agent::tools_matching_nothing(&llm.tools, &names) {
                let theirs = match names.is_empty() {
                    true => String::from("it names no mcpServers"),
                    false => format!(
                        "its mcpServers' tools are named {}",
                        names
                            .iter()
                            .map(|n| format!("{n}__<tool>"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                return Err(ApiError::invalid(format!(
                    "tools: {pattern:?} matches none of the tools this agent can be offered (Troupe's own are \
                     troupe_submit_task, troupe_send_message, troupe_memory_get and troupe_memory_set; {theirs})"
                )));
            }
            llm.mcp_servers = servers.into_iter().map(|(id, _)| id).collect();
        }
        let node = request.node.take();
        At::on(self, node.as_deref()).spawn(Box::new(request), key).await
    }

    /// The `mcp` agents an `llm` agent's `mcpServers` names, by id (each given by id, or by a
    /// name only one agent has). Refused when one is missing or no `mcp` agent: the model
    /// would be offered none of its tools (an echo agent answered the tools request with
    /// its payload, and the model was offered nothing, silently). Each with its name.
    async fn mcp_servers(&self, named: &[String]) -> Result<Vec<(String, String)>, ApiError> {
        let mut ids = Vec::with_capacity(named.len());
        for server in named {
            let found = match self.get(server).await? {
                Some(found) => found,
                None => {
                    let filter = AgentFilter {
                        name: Some(server.clone()),
                        ..Default::default()
                    };
                    let (mut of_name, _) = self.list_local(None, 2, &filter).await?;
                    match (of_name.pop(), of_name.is_empty()) {
                        (Some(only), true) => only,
                        (Some(_), false) => {
                            return Err(ApiError::invalid(format!(
                                "mcpServers: more than one agent is named {server:?}: give its id"
                            )))
                        }
                        (None, _) => {
                            return Err(ApiError::invalid(format!(
                                "mcpServers: no agent {server:?} (spawn the mcp agent first, and name it by id or name)"
                            )))
                        }
                    }
                }
            };
            if !matches!(found.spec.backend, crate::agent::BackendSpec::Mcp(_)) {
                return Err(ApiError::invalid(format!(
                    "mcpServers: agent {server:?} is a {} agent, not an mcp one: it offers no tools",
                    found.spec.backend.describe()
                )));
            }
            ids.push((found.spec.id.clone(), found.spec.name.clone()));
        }
        Ok(ids)
    }

    /// Whether this node holds the agent.
    pub fn holds(&self, id: &str) -> bool {
        self.ctx.cluster.holds(id)
    }

    /// Acts on an agent wherever it lives.
    pub async fn act(&self, id: &str, action: AgentAction, key: Option<String>) -> Result<AgentView, ApiError> {
        At::holding(self, id).act(id.to_owned(), action, key).await
    }

    /// Stops an agent; its running tasks go back to the queue without losing an attempt.
    pub async fn stop(&self, id: &str, key: Option<String>) -> Result<AgentView, ApiError> {
        self.act(id, AgentAction::Stop { graceful: false }, key).await
    }

    /// Takes a checkpoint of the agent's state through its backend and keeps it.
    pub async fn checkpoint(&self, id: &str, description: String, key: Option<String>) -> Result<Checkpoint, ApiError> {
        At::holding(self, id).checkpoint(id.to_owned(), description, key).await
    }

    /// The agent's checkpoints, oldest first, from this node's replica.
    pub async fn checkpoints(&self, id: &str) -> Result<Vec<Checkpoint>, ApiError> {
        Ok(crate::agent::checkpoints::list(&self.ctx.store, id).await?)
    }

    /// What the agent shows of itself: asked of its actor now when it runs here; for an
    /// agent of a peer, that node's last sample (its `seen_at` says when), which travels
    /// with the heartbeats: no peer is asked. `None` when it is not running (or its node has
    /// not reported it yet).
    pub async fn live(&self, id: &str) -> Result<Option<AgentLive>, ApiError> {
        match self.ctx.peer_holding(id) {
            None => self.live_local(id).await,
            Some(peer) => Ok(self.observed.of_peer(&peer, id)),
        }
    }

    /// Every running agent of the cluster as observed: this node's asked now, each peer's
    /// from its last report (with when it was seen). Asks no peer.
    pub async fn observed_everywhere(&self) -> Vec<(String, AgentLive)> {
        let mut all = self.sample_local().await;
        all.extend(self.observed.of_peers());
        all
    }

    /// How this node samples itself for its heartbeat answers: its agents as each shows
    /// itself now, and its supervision tree.
    pub(crate) fn sampler(&self) -> crate::agent::Sampler {
        let agents = self.clone();
        Arc::new(move || {
            let agents = agents.clone();
            Box::pin(async move {
                let tree = async {
                    let root = agents.slots.root.running("the node's supervision tree")?;
                    let describe = troupe_runtime::supervision::SupervisorMsg::Describe;
                    crate::call::ask(&root, describe, "the root supervisor").await
                };
                let (sampled, tree) = futures::join!(agents.sample_local(), tree);
                (sampled, tree.ok())
            })
        })
    }

    /// Every agent this node runs, as each shows itself now (for the heartbeats).
    pub(crate) async fn sample_local(&self) -> Vec<(String, AgentLive)> {
        let running = self.slots.handles.running();
        let asked = running.into_iter().map(|(id, _)| async move {
            let live = self.live_local(&id).await;
            live.ok().flatten().map(|live| (id, live))
        });
        futures::future::join_all(asked).await.into_iter().flatten().collect()
    }

    /// An agent, wherever it runs, from this node's replica. One this replica does not hold
    /// yet may have been spawned elsewhere a moment ago: before saying there is none, this
    /// node catches up with what the cluster committed (a linearizable read).
    pub async fn get(&self, id: &str) -> Result<Option<AgentView>, ApiError> {
        if let Some(found) = self.get_local(id).await? {
            return Ok(Some(found));
        }
        self.ctx.store.linearize().await?;
        self.get_local(id).await
    }

    /// Who owns agent `id`, from its spec in this node's replica (read at the leader's
    /// commit index when the replica does not hold it yet, as [`Self::get`] does).
    pub async fn owner(&self, id: &str) -> Result<Option<Owner>, ApiError> {
        if let Some((spec, _)) = self.registry().read(id).await? {
            return Ok(Some(spec.owner));
        }
        self.ctx.store.linearize().await?;
        Ok(self.registry().read(id).await?.map(|(spec, _)| spec.owner))
    }

    /// The lines agent `id` wrote with a seq above `after`, oldest first, at most `limit`
    /// (its last `limit` without `after`), from this node's replica. NOT_FOUND when there is
    /// no such agent and nothing of it is kept.
    pub async fn logs(&self, id: &str, after: Option<u64>, limit: usize) -> Result<Vec<LogLine>, ApiError> {
        let lines = crate::agent::logs::read(&self.ctx.store, id, after, limit).await?;
        if lines.is_empty() && self.get(id).await?.is_none() {
            return Err(ApiError::NotFound(format!("no agent {id}")));
        }
        Ok(lines)
    }

    /// The lines agent `id` writes from now on (after `after` when given), as each is
    /// applied on this node: woken by the write, never polled.
    pub async fn follow_logs(
        &self,
        id: &str,
        after: Option<u64>,
    ) -> Result<futures::stream::BoxStream<'static, Result<LogLine, ApiError>>, ApiError> {
        use futures::StreamExt;
        // Registered before the first read, so no line falls between the two.
        let watching = self.log_watch.watch(id);
        let after = match after {
            Some(seq) => seq,
            None => self.logs(id, None, 1).await?.last().map_or(0, |l| l.seq),
        };
        let state = (
            self.ctx.store.clone(),
            watching,
            id.to_owned(),
            after,
            std::collections::VecDeque::new(),
        );
        let stream = futures::stream::unfold(state, |(store, watching, id, mut after, mut ready)| async move {
            loop {
                if let Some(line) = ready.pop_front() {
                    return Some((Ok(line), (store, watching, id, after, ready)));
                }
                let notified = watching.notify.clone();
                let woken = notified.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                match crate::agent::logs::read(&store, &id, Some(after), 500).await {
                    Ok(lines) if lines.is_empty() => woken.await,
                    Ok(lines) => {
                        after = lines.last().map_or(after, |l| l.seq);
                        ready.extend(lines);
                    }
                    Err(e) => return Some((Err(e.into()), (store, watching, id, after, ready))),
                }
            }
        });
        Ok(stream.boxed())
    }

    /// The pieces of model replies streaming on this node's LLM agents from now on.
    pub fn model_output(&self) -> tokio::sync::broadcast::Receiver<Arc<crate::agent::LlmDelta>> {
        self.policy.deltas.subscribe()
    }

    /// The agents other than `id` named `name`, from this node's replica (names need not be
    /// unique), in id order; read from memory, so a spawn may ask it.
    pub fn others_named(&self, name: &str, id: &str) -> Vec<String> {
        self.names.others_named(name, id)
    }

    /// The cluster's agents in id order after the cursor, from this node's replica.
    pub async fn list(
        &self,
        after: Option<String>,
        first: usize,
        filter: AgentFilter,
    ) -> Result<Listing<AgentView>, ApiError> {
        let (items, more) = self.list_local(after, first, &filter).await?;
        Ok(Listing::local(items, more))
    }

    /// How many agents the cluster has that pass the filter, from this node's replica.
    pub async fn count(&self, filter: AgentFilter) -> Result<Counted, ApiError> {
        Ok(Counted::local(self.count_local(&filter).await?))
    }
}

impl AgentsLocal for Agents {
    // A peer's request is checked like a local one.
    async fn spawn(&self, request: Box<SpawnAgentRequest>, key: Option<String>) -> Result<AgentView, ApiError> {
        request.validate()?;
        self.spawn_local(*request, key.as_deref()).await
    }

    async fn act(&self, id: String, action: AgentAction, key: Option<String>) -> Result<AgentView, ApiError> {
        // Run to the end even if the caller goes away (a client gone, an HTTP timeout): a
        // stop abandoned half-way would leave the agent closed but running.
        let me = self.clone();
        tokio::spawn(async move { me.act_local(&id, action, key.as_deref()).await })
            .await
            .map_err(|e| ApiError::Internal(format!("the agent mutation did not finish: {e}")))?
    }

    async fn checkpoint(&self, id: String, description: String, key: Option<String>) -> Result<Checkpoint, ApiError> {
        self.checkpoint_local(&id, description, key.as_deref()).await
    }
}

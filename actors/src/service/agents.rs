//! The agents service: create, act on (start, stop, pause, ...), checkpoint, look up, list
//! and count agents, wherever they live. An agent's id names its node; requests for a peer's
//! agent go to that node's agents service.

mod lifecycle;
mod local;

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::context::Context;
use super::listing::{merge_pages, Counted, Listing};
use crate::agent::{AgentFilter, AgentUpdate, AgentView, Checkpoint, Probe, SpawnAgentRequest, Usage};
use crate::cluster::remote::{envelope, Service};
use crate::error::ApiError;

envelope!(AgentsMsg);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AgentsRequest {
    Spawn {
        request: Box<SpawnAgentRequest>,
        key: String,
    },
    Act {
        id: String,
        action: AgentAction,
        key: String,
    },
    Checkpoint {
        id: String,
        description: String,
        key: String,
    },
    Checkpoints(String),
    Live(String),
    Get(String),
    List {
        after: Option<String>,
        first: u32,
        filter: AgentFilter,
    },
    Count(AgentFilter),
    Message(Box<super::messages::Message>),
    /// Queues a message for this node's agents subscribed to the topic, or with the labels.
    FanOut {
        topic: Option<String>,
        labels: Vec<(String, String)>,
        #[serde(with = "troupe_runtime::codec::json_text")]
        payload: serde_json::Value,
        priority: crate::task::Priority,
    },
    History(String),
    DeadMessages(u32),
    Topics,
    Replay(String),
}

/// What can be done to an existing agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentAction {
    Start,
    /// Graceful: running tasks get the grace period to finish first.
    Stop {
        graceful: bool,
    },
    Pause,
    Resume,
    Restart,
    Remove,
    Update(AgentUpdate),
    Rollback {
        checkpoint: String,
    },
}

impl AgentAction {
    /// The mutation's name, for idempotency scopes and messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Start => "startAgent",
            Self::Stop { .. } => "stopAgent",
            Self::Pause => "pauseAgent",
            Self::Resume => "resumeAgent",
            Self::Restart => "restartAgent",
            Self::Remove => "removeAgent",
            Self::Update(_) => "updateAgent",
            Self::Rollback { .. } => "rollbackAgent",
        }
    }
}

/// What an agent's actor says of itself now: usage of its processes and health.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentLive {
    pub usage: Option<Usage>,
    /// When the backend last showed a sign of life (process agents).
    pub last_heartbeat: Option<chrono::DateTime<chrono::Utc>>,
    pub healthy: bool,
    pub paused: bool,
    pub process_groups: Vec<u32>,
}

impl AgentLive {
    pub(crate) fn from_probe(p: Probe) -> Self {
        let now = troupe_runtime::clock::now();
        Self {
            usage: p.usage,
            last_heartbeat: p
                .silent_for
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .map(|d| now - d),
            healthy: p.healthy,
            paused: p.paused,
            process_groups: p.process_groups,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AgentsResponse {
    Agent(AgentView),
    Found(Option<AgentView>),
    Page(Vec<AgentView>, bool),
    Count(u64),
    Checkpoint(Checkpoint),
    Checkpoints(Vec<Checkpoint>),
    Live(Option<AgentLive>),
    Reply(super::messages::Reply),
    History(super::messages::MailboxView),
    Queued(super::messages::FanOut),
    DeadMessages(Vec<super::messages::DeadMessage>),
    Topics(Vec<(String, u32)>),
}

#[derive(Clone)]
pub struct Agents {
    pub(crate) ctx: Arc<Context>,
}

fn unexpected(what: &str) -> ApiError {
    ApiError::Internal(format!("a peer answered {what} with something else"))
}

impl Agents {
    /// Spawns an agent on this node, or on `request.node`.
    pub async fn spawn(&self, request: SpawnAgentRequest, key: Option<String>) -> Result<AgentView, ApiError> {
        request.validate()?;
        match request.node.clone().filter(|n| *n != self.ctx.node_name) {
            Some(node) => {
                let mut request = request;
                request.node = None;
                match self
                    .ctx
                    .forward::<Agents>(
                        &node,
                        |key| AgentsRequest::Spawn {
                            request: Box::new(request.clone()),
                            key,
                        },
                        key,
                    )
                    .await?
                {
                    AgentsResponse::Agent(view) => Ok(view),
                    _ => Err(unexpected("spawnAgent")),
                }
            }
            None => self.spawn_local(request, key.as_deref()).await,
        }
    }

    /// Whether this node holds the agent (its id names this node).
    pub fn holds(&self, id: &str) -> bool {
        self.ctx.holds(id)
    }

    /// Acts on an agent wherever it lives.
    pub async fn act(&self, id: &str, action: AgentAction, key: Option<String>) -> Result<AgentView, ApiError> {
        match self.ctx.peer_holding(id) {
            Some(node) => {
                let request = |key| AgentsRequest::Act {
                    id: id.to_owned(),
                    action: action.clone(),
                    key,
                };
                match self.ctx.forward::<Agents>(node, request, key).await? {
                    AgentsResponse::Agent(view) => Ok(view),
                    _ => Err(unexpected(action.name())),
                }
            }
            None => {
                // Run to the end even if the caller goes away (a client gone, an HTTP timeout):
                // a stop abandoned half-way would leave the agent closed but running.
                let (me, id) = (self.clone(), id.to_owned());
                tokio::spawn(async move { me.act_local(&id, action, key.as_deref()).await })
                    .await
                    .map_err(|e| ApiError::Internal(format!("the agent mutation did not finish: {e}")))?
            }
        }
    }

    /// Stops an agent; its running tasks go back to the queue without losing an attempt.
    pub async fn stop(&self, id: &str, key: Option<String>) -> Result<AgentView, ApiError> {
        self.act(id, AgentAction::Stop { graceful: false }, key).await
    }

    /// Takes a checkpoint of the agent's state through its backend and keeps it.
    pub async fn checkpoint(&self, id: &str, description: String, key: Option<String>) -> Result<Checkpoint, ApiError> {
        match self.ctx.peer_holding(id) {
            Some(node) => {
                let request = |key| AgentsRequest::Checkpoint {
                    id: id.to_owned(),
                    description: description.clone(),
                    key,
                };
                match self.ctx.forward::<Agents>(node, request, key).await? {
                    AgentsResponse::Checkpoint(c) => Ok(c),
                    _ => Err(unexpected("checkpointAgent")),
                }
            }
            None => self.checkpoint_local(id, description, key.as_deref()).await,
        }
    }

    /// The agent's checkpoints, oldest first.
    pub async fn checkpoints(&self, id: &str) -> Result<Vec<Checkpoint>, ApiError> {
        match self.ctx.peer_holding(id) {
            Some(node) => match self
                .ctx
                .cluster
                .call::<Agents>(node, &AgentsRequest::Checkpoints(id.to_owned()))
                .await?
            {
                AgentsResponse::Checkpoints(list) => Ok(list),
                _ => Err(unexpected("checkpoints")),
            },
            None => Ok(crate::agent::checkpoints::list(&self.ctx.store, id).await?),
        }
    }

    /// What the agent's actor says of itself now; `None` when it is not running.
    pub async fn live(&self, id: &str) -> Result<Option<AgentLive>, ApiError> {
        match self.ctx.peer_holding(id) {
            Some(node) => match self
                .ctx
                .cluster
                .call::<Agents>(node, &AgentsRequest::Live(id.to_owned()))
                .await?
            {
                AgentsResponse::Live(live) => Ok(live),
                _ => Err(unexpected("agent usage")),
            },
            None => self.live_local(id).await,
        }
    }

    /// An agent of this node or of the peer its id names.
    pub async fn get(&self, id: &str) -> Result<Option<AgentView>, ApiError> {
        match self.ctx.peer_holding(id) {
            Some(node) => match self
                .ctx
                .cluster
                .call::<Agents>(node, &AgentsRequest::Get(id.to_owned()))
                .await?
            {
                AgentsResponse::Found(view) => Ok(view),
                _ => Err(unexpected("agent")),
            },
            None => self.get_local(id).await,
        }
    }

    /// The cluster's agents in id order after the cursor: this node's and every reachable
    /// peer's.
    pub async fn list(
        &self,
        after: Option<String>,
        first: usize,
        filter: AgentFilter,
    ) -> Result<Listing<AgentView>, ApiError> {
        let mut pages = vec![self.list_local(after.clone(), first, &filter).await?];
        let request = AgentsRequest::List {
            after,
            first: first as u32,
            filter,
        };
        let gathered = self.ctx.cluster.gather::<Agents>(&request).await;
        pages.extend(gathered.answers.into_iter().filter_map(|a| match a {
            AgentsResponse::Page(items, more) => Some((items, more)),
            _ => None,
        }));
        let (items, more) = merge_pages(pages, first, |a| a.spec.id.as_str());
        Ok(Listing {
            items,
            more,
            missing: gathered.missing,
        })
    }

    /// How many agents the cluster has that pass the filter.
    pub async fn count(&self, filter: AgentFilter) -> Result<Counted, ApiError> {
        let local = self.count_local(&filter).await?;
        let gathered = self.ctx.cluster.gather::<Agents>(&AgentsRequest::Count(filter)).await;
        let remote: u64 = gathered
            .answers
            .into_iter()
            .filter_map(|a| match a {
                AgentsResponse::Count(n) => Some(n),
                _ => None,
            })
            .sum();
        Ok(Counted {
            total: local + remote,
            missing: gathered.missing,
        })
    }
}

impl Agents {
    /// Sends a message to an agent wherever it lives and waits for its reply.
    pub async fn send_message(
        &self,
        to: &str,
        from: Option<String>,
        payload: serde_json::Value,
        priority: crate::task::Priority,
        timeout: std::time::Duration,
    ) -> Result<super::messages::Reply, ApiError> {
        let size = payload.to_string().len();
        if size > self.ctx.max_payload_bytes {
            return Err(ApiError::invalid(format!(
                "payload is {size} bytes, above the limit of {}",
                self.ctx.max_payload_bytes
            )));
        }
        let message = super::messages::Message {
            id: uuid::Uuid::now_v7().to_string(),
            to: to.to_owned(),
            from,
            payload,
            priority,
            timeout_ms: timeout.as_millis() as u64,
        };
        match self.ctx.peer_holding(to) {
            Some(node) => {
                let request = AgentsRequest::Message(Box::new(message));
                // The peer answers when the agent does, or when the message expires there.
                let within = timeout + crate::cluster::remote::PEER_TIMEOUT;
                match self.ctx.cluster.call_within::<Agents>(node, &request, within).await? {
                    AgentsResponse::Reply(r) => Ok(r),
                    _ => Err(unexpected("sendMessage")),
                }
            }
            None => super::messages::send_local(&self.ctx, message).await,
        }
    }

    /// The agent's mailbox: messages waiting, and its recent ones, oldest first.
    pub async fn mailbox(&self, id: &str) -> Result<super::messages::MailboxView, ApiError> {
        match self.ctx.peer_holding(id) {
            Some(node) => match self
                .ctx
                .cluster
                .call::<Agents>(node, &AgentsRequest::History(id.to_owned()))
                .await?
            {
                AgentsResponse::History(h) => Ok(h),
                _ => Err(unexpected("messages")),
            },
            None => Ok(self.ctx.mailboxes.view(id)),
        }
    }

    /// Publishes a message on a topic: every agent of the cluster subscribed to a matching
    /// pattern gets it (no reply is awaited), and clients subscribed to `messages(topic:)`
    /// see it. Answers how many agents it was queued for, and the nodes that missed it.
    pub async fn publish(
        &self,
        topic: String,
        payload: serde_json::Value,
        priority: crate::task::Priority,
    ) -> Result<(super::messages::FanOut, Vec<String>), ApiError> {
        super::messages::check_topic(&topic, false)?;
        let event = troupe_runtime::events::NewEvent::new(
            "MESSAGE_PUBLISHED",
            None,
            serde_json::json!({ "topic": topic, "payload": payload, "priority": priority.as_str() }),
        );
        self.ctx
            .store
            .write(troupe_runtime::store::Batch::new().event(event))
            .await?;
        self.fan_out(Some(topic), Vec::new(), payload, priority).await
    }

    /// Sends a message to every agent of the cluster with all these labels (no reply awaited).
    pub async fn broadcast(
        &self,
        labels: Vec<(String, String)>,
        payload: serde_json::Value,
        priority: crate::task::Priority,
    ) -> Result<(super::messages::FanOut, Vec<String>), ApiError> {
        if labels.is_empty() {
            return Err(ApiError::invalid("broadcast needs at least one label"));
        }
        self.fan_out(None, labels, payload, priority).await
    }

    async fn fan_out(
        &self,
        topic: Option<String>,
        labels: Vec<(String, String)>,
        payload: serde_json::Value,
        priority: crate::task::Priority,
    ) -> Result<(super::messages::FanOut, Vec<String>), ApiError> {
        let size = payload.to_string().len();
        if size > self.ctx.max_payload_bytes {
            return Err(ApiError::invalid(format!("payload is {size} bytes, above the limit")));
        }
        let mut outcome = self
            .fan_out_local(topic.clone(), labels.clone(), &payload, priority)
            .await?;
        let request = AgentsRequest::FanOut {
            topic,
            labels,
            payload,
            priority,
        };
        let gathered = self.ctx.cluster.gather::<Agents>(&request).await;
        for answer in gathered.answers {
            if let AgentsResponse::Queued(remote) = answer {
                outcome += remote;
            }
        }
        Ok((outcome, gathered.missing))
    }

    async fn fan_out_local(
        &self,
        topic: Option<String>,
        labels: Vec<(String, String)>,
        payload: &serde_json::Value,
        priority: crate::task::Priority,
    ) -> Result<super::messages::FanOut, ApiError> {
        let wanted = move |spec: &crate::agent::AgentSpec| match &topic {
            Some(t) => spec.topics.iter().any(|p| super::messages::topic_matches(p, t)),
            None => labels.iter().all(|(k, v)| spec.labels.get(k) == Some(v)),
        };
        super::messages::fan_out(&self.ctx, wanted, payload, priority).await
    }

    /// The topic patterns the cluster's agents subscribe to, each with how many agents do.
    pub async fn topics(&self) -> Result<Vec<(String, u32)>, ApiError> {
        let mut counts: std::collections::BTreeMap<String, u32> = self.topics_local().await?.into_iter().collect();
        let gathered = self.ctx.cluster.gather::<Agents>(&AgentsRequest::Topics).await;
        for answer in gathered.answers {
            if let AgentsResponse::Topics(topics) = answer {
                for (t, n) in topics {
                    *counts.entry(t).or_default() += n;
                }
            }
        }
        Ok(counts.into_iter().collect())
    }

    async fn topics_local(&self) -> Result<Vec<(String, u32)>, ApiError> {
        let mut counts: std::collections::BTreeMap<String, u32> = std::collections::BTreeMap::new();
        let specs = self
            .ctx
            .store
            .view(|v| {
                let mut out = Vec::new();
                v.scan(crate::tables::AGENTS, None, |_, bytes| {
                    out.push(troupe_runtime::codec::decode::<crate::agent::AgentSpec>(bytes)?.topics);
                    Ok(true)
                })?;
                Ok(out)
            })
            .await?;
        for t in specs.into_iter().flatten() {
            *counts.entry(t).or_default() += 1;
        }
        Ok(counts.into_iter().collect())
    }

    /// The cluster's message dead-letter queue (each node keeps the dead messages of its own
    /// agents), oldest first.
    pub async fn dead_messages(&self, first: usize) -> Result<Vec<super::messages::DeadMessage>, ApiError> {
        let mut all = super::messages::dead_letters(&self.ctx, first).await?;
        let request = AgentsRequest::DeadMessages(first as u32);
        for answer in self.ctx.cluster.gather::<Agents>(&request).await.answers {
            if let AgentsResponse::DeadMessages(dead) = answer {
                all.extend(dead);
            }
        }
        all.sort_by(|a, b| (a.at, &a.message.id).cmp(&(b.at, &b.message.id)));
        all.truncate(first);
        Ok(all)
    }

    /// Sends a dead message again, from whichever node keeps it.
    pub async fn replay_message(&self, id: &str) -> Result<super::messages::Reply, ApiError> {
        match super::messages::replay(&self.ctx, id).await {
            Err(ApiError::NotFound(missing)) => {
                for node in self.ctx.cluster.peers() {
                    let request = AgentsRequest::Replay(id.to_owned());
                    // A replayed message may wait as long as any message (10 minutes at most).
                    let within = std::time::Duration::from_secs(600);
                    match self.ctx.cluster.call_within::<Agents>(&node, &request, within).await {
                        Ok(AgentsResponse::Reply(r)) => return Ok(r),
                        Err(ApiError::NotFound(_)) => continue,
                        Ok(_) => return Err(unexpected("replayMessage")),
                        Err(e) => return Err(e),
                    }
                }
                Err(ApiError::NotFound(missing))
            }
            other => other,
        }
    }
}

impl Service for Agents {
    const ROLE: &'static str = "agents";
    type Request = AgentsRequest;
    type Response = AgentsResponse;
    type Msg = AgentsMsg;

    fn node_name(&self) -> &str {
        &self.ctx.node_name
    }

    fn serve(&self, request: AgentsRequest) -> BoxFuture<'static, Result<AgentsResponse, ApiError>> {
        let agents = self.clone();
        Box::pin(async move {
            match request {
                // A peer's request is checked like a local one.
                AgentsRequest::Spawn { request, key } => {
                    request.validate()?;
                    agents
                        .spawn_local(*request, Some(&key))
                        .await
                        .map(AgentsResponse::Agent)
                }
                AgentsRequest::Act { id, action, key } => agents
                    .act_local(&id, action, Some(&key))
                    .await
                    .map(AgentsResponse::Agent),
                AgentsRequest::Checkpoint { id, description, key } => agents
                    .checkpoint_local(&id, description, Some(&key))
                    .await
                    .map(AgentsResponse::Checkpoint),
                AgentsRequest::Checkpoints(id) => Ok(AgentsResponse::Checkpoints(
                    crate::agent::checkpoints::list(&agents.ctx.store, &id).await?,
                )),
                AgentsRequest::Live(id) => agents.live_local(&id).await.map(AgentsResponse::Live),
                AgentsRequest::Get(id) => agents.get_local(&id).await.map(AgentsResponse::Found),
                AgentsRequest::List { after, first, filter } => {
                    let (items, more) = agents.list_local(after, first.min(1000) as usize, &filter).await?;
                    Ok(AgentsResponse::Page(items, more))
                }
                AgentsRequest::Count(filter) => agents.count_local(&filter).await.map(AgentsResponse::Count),
                AgentsRequest::Message(message) => super::messages::send_local(&agents.ctx, *message)
                    .await
                    .map(AgentsResponse::Reply),
                AgentsRequest::FanOut {
                    topic,
                    labels,
                    payload,
                    priority,
                } => agents
                    .fan_out_local(topic, labels, &payload, priority)
                    .await
                    .map(AgentsResponse::Queued),
                AgentsRequest::History(id) => Ok(AgentsResponse::History(agents.ctx.mailboxes.view(&id))),
                AgentsRequest::DeadMessages(first) => {
                    super::messages::dead_letters(&agents.ctx, first.min(1000) as usize)
                        .await
                        .map(AgentsResponse::DeadMessages)
                }
                AgentsRequest::Topics => agents.topics_local().await.map(AgentsResponse::Topics),
                AgentsRequest::Replay(id) => super::messages::replay(&agents.ctx, &id)
                    .await
                    .map(AgentsResponse::Reply),
            }
        })
    }
}

//! Messages to agents in GraphQL: `sendMessage`, `messageDeadLetters`, `replayMessage`, and
//! an agent's recent `messages` (on `Agent`).

use async_graphql::{Context, Json, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use troupe_actors::service::MESSAGE_TIMEOUT;
use troupe_actors::Api;
use troupe_runtime::auth::Role;

use super::shared::Priority;
use super::Int64;
use crate::auth::RoleGuard;
use crate::error::OrGql;

/// An agent's answer to a message.
#[derive(SimpleObject)]
pub struct MessageReply {
    /// The message's id.
    pub id: ID,
    pub reply: Json<serde_json::Value>,
}

impl From<troupe_actors::service::Reply> for MessageReply {
    fn from(r: troupe_actors::service::Reply) -> Self {
        Self {
            id: ID(r.id),
            reply: Json(r.payload),
        }
    }
}

/// A message that expired, or could not be delivered or answered.
#[derive(SimpleObject)]
pub struct DeadMessage {
    pub id: ID,
    pub to: ID,
    pub from: Option<ID>,
    pub payload: Json<serde_json::Value>,
    pub priority: Priority,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// One message of an agent's recent history.
#[derive(SimpleObject)]
pub struct AgentMessage {
    pub id: ID,
    pub from: Option<ID>,
    pub priority: Priority,
    /// REPLIED, or DEAD (`error` says why).
    pub outcome: String,
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

impl From<troupe_actors::service::Sent> for AgentMessage {
    fn from(s: troupe_actors::service::Sent) -> Self {
        Self {
            id: ID(s.id),
            from: s.from.map(ID),
            priority: s.priority.into(),
            outcome: s.outcome,
            error: s.error,
            at: s.at,
        }
    }
}

/// How many agents a published or broadcast message was queued for.
#[derive(SimpleObject)]
pub struct FanOutResult {
    pub queued: i32,
    /// Agents whose mailbox was full: for each, the message went straight to the message
    /// dead-letter queue (replayable) instead of being queued.
    pub refused: i32,
    /// Nodes that could not be reached: their agents did not get it.
    pub missing_nodes: Vec<String>,
}

impl From<(troupe_actors::service::FanOut, Vec<String>)> for FanOutResult {
    fn from((outcome, missing): (troupe_actors::service::FanOut, Vec<String>)) -> Self {
        Self {
            queued: outcome.queued as i32,
            refused: outcome.refused as i32,
            missing_nodes: missing,
        }
    }
}

/// A topic pattern agents of this node subscribe to.
#[derive(SimpleObject)]
pub struct TopicPattern {
    pub pattern: String,
    pub agents: i32,
}

/// A message published on a topic.
#[derive(SimpleObject)]
pub struct TopicMessage {
    /// The event's seq on this node.
    pub seq: Int64,
    pub topic: String,
    pub payload: Json<serde_json::Value>,
    pub priority: String,
    pub at: DateTime<Utc>,
}

#[derive(Default)]
pub struct MessagesQuery;

#[Object]
impl MessagesQuery {
    /// The topic patterns the cluster's agents subscribe to, with how many agents each.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn topics(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<TopicPattern>> {
        let topics = ctx.data::<Api>()?.messages().topics().await.gql()?;
        Ok(topics
            .into_iter()
            .map(|(pattern, n)| TopicPattern {
                pattern,
                agents: n as i32,
            })
            .collect())
    }

    /// The cluster's messages that expired or could not be delivered or answered, oldest
    /// first, from this node's replica.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn message_dead_letters(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 100)] first: i32,
    ) -> async_graphql::Result<Vec<DeadMessage>> {
        let first = super::page::page_size(ctx, Some(first), 100, 1000)?;
        let dead = ctx.data::<Api>()?.messages().dead_messages(first).await.gql()?;
        Ok(dead
            .into_iter()
            .map(|d| DeadMessage {
                id: ID(d.message.id),
                to: ID(d.message.to),
                from: d.message.from.map(ID),
                payload: Json(d.message.payload),
                priority: d.message.priority.into(),
                reason: d.reason,
                at: d.at,
            })
            .collect())
    }
}

#[derive(Default)]
pub struct MessagesMutation;

#[Object]
impl MessagesMutation {
    /// Sends a message to an agent and waits for its reply (request/response). Builtin agents
    /// answer with the payload; process agents get a `message` line and answer with a `reply`
    /// (docs/agent-protocol.md). Each agent's mailbox holds 256 messages (beyond: BACKPRESSURE)
    /// and delivers one at a time, the higher priority first. Past `timeoutMs` (default 30 s),
    /// or if the agent cannot take it, the message goes to the message dead-letter queue and
    /// this fails with UNAVAILABLE.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn send_message(
        &self,
        ctx: &Context<'_>,
        to: ID,
        payload: Json<serde_json::Value>,
        priority: Option<Priority>,
        timeout_ms: Option<Int64>,
    ) -> async_graphql::Result<MessageReply> {
        let timeout = match timeout_ms {
            Some(t) => std::time::Duration::from_millis(t.non_negative("timeoutMs")?.clamp(1, 600_000)),
            None => MESSAGE_TIMEOUT,
        };
        let priority = priority.map_or(troupe_actors::task::Priority::Normal, Into::into);
        let reply = ctx
            .data::<Api>()?
            .messages()
            .send_message(&to, None, payload.0, priority, timeout)
            .await
            .gql()?;
        Ok(reply.into())
    }

    /// Publishes a message on a topic (dot-separated segments, no wildcards): every agent of
    /// the cluster subscribed to a matching pattern gets it in its mailbox (no reply is
    /// awaited; an unanswered one goes to the dead-letter queue), and clients see it on the
    /// `messages(topic:)` subscription.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn publish(
        &self,
        ctx: &Context<'_>,
        topic: String,
        payload: Json<serde_json::Value>,
        priority: Option<Priority>,
    ) -> async_graphql::Result<FanOutResult> {
        let priority = priority.map_or(troupe_actors::task::Priority::Normal, Into::into);
        Ok(ctx
            .data::<Api>()?
            .messages()
            .publish(topic, payload.0, priority)
            .await
            .gql()?
            .into())
    }

    /// Sends a message to every agent of the cluster that has all these labels (no reply is
    /// awaited).
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn broadcast(
        &self,
        ctx: &Context<'_>,
        labels: Vec<super::shared::LabelInput>,
        payload: Json<serde_json::Value>,
        priority: Option<Priority>,
    ) -> async_graphql::Result<FanOutResult> {
        let priority = priority.map_or(troupe_actors::task::Priority::Normal, Into::into);
        let labels = labels.into_iter().map(|l| (l.key, l.value)).collect();
        Ok(ctx
            .data::<Api>()?
            .messages()
            .broadcast(labels, payload.0, priority)
            .await
            .gql()?
            .into())
    }

    /// Sends a dead message again; answered, it leaves the dead-letter queue.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn replay_message(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<MessageReply> {
        Ok(ctx.data::<Api>()?.messages().replay_message(&id).await.gql()?.into())
    }
}

#[derive(Default)]
pub struct MessagesSubscription;

#[async_graphql::Subscription]
impl MessagesSubscription {
    /// Messages published on this node on topics matching `topic` (a topic, or a pattern with
    /// `*` and `#`): those after the event `seq` `after` (`node { lastSeq }` read before
    /// subscribing, so none is missed), or from now on.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn messages(
        &self,
        ctx: &Context<'_>,
        topic: String,
        after: Option<Int64>,
    ) -> async_graphql::Result<impl futures::Stream<Item = async_graphql::Result<TopicMessage>>> {
        use futures::StreamExt;
        troupe_actors::service::check_topic(&topic, true).gql()?;
        let api = ctx.data::<Api>()?.clone();
        let after = match super::events::cursor(after)? {
            Some(a) => a,
            None => api.last_seq().await.gql()?,
        };
        let filter = troupe_runtime::events::EventFilter {
            kinds: Some(["MESSAGE_PUBLISHED".to_string()].into_iter().collect()),
            subject: None,
        };
        Ok(api.subscribe(after, filter).filter_map(move |event| {
            let pattern = topic.clone();
            async move {
                let event = match event {
                    Ok(e) => e,
                    Err(e) => return Some(Err(crate::error::api(e.into()))),
                };
                let published = event.data["topic"].as_str()?;
                troupe_actors::service::topic_matches(&pattern, published).then(|| {
                    Ok(TopicMessage {
                        seq: event.seq.into(),
                        topic: published.to_owned(),
                        payload: Json(event.data["payload"].clone()),
                        priority: event.data["priority"].as_str().unwrap_or("NORMAL").to_owned(),
                        at: event.at,
                    })
                })
            }
        }))
    }
}

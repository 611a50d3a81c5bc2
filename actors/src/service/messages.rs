//! The messages service: `sendMessage` to an agent wherever it lives, `publish` and
//! `broadcast` to every node's agents, mailboxes and the message dead-letter queue. The
//! mailboxes and delivery live in [`crate::messaging`]; this is their wire and routing.

use std::sync::Arc;
use std::time::Duration;

use super::context::Context;
use crate::cluster::remote::{service, At, Everywhere, Located, PEER_TIMEOUT};
use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::messaging::{check_topic, DeadMessage, FanOut, Mailboxes, Message, Publication, Reply, Sent};
use crate::task::Priority;

service! {
    service Messages as "messages" (MessagesMsg, MessagesRequest, MessagesResponse, MessagesLocal);
    /// Sends a message to an agent of this node; the answer comes when the agent replies or
    /// the message expires.
    call Send => send(message: Box<Message>) -> Reply,
        within Duration::from_millis(message.timeout_ms) + PEER_TIMEOUT;
    /// Queues a publication for this node's agents it is meant for.
    call FanOut => fan_out(publication: Box<Publication>) -> FanOut;
    /// Sends a dead message of this node again; it may wait as long as any message.
    call Replay => replay(id: String) -> Reply, within Duration::from_secs(600);
}

#[derive(Clone)]
pub struct Messages {
    pub(crate) ctx: Arc<Context>,
    pub(crate) mailboxes: Mailboxes,
}

impl Located for Messages {
    fn cluster(&self) -> &Cluster {
        &self.ctx.cluster
    }
}

impl Messages {
    /// Sends a message to an agent wherever it lives and waits for its reply.
    pub async fn send_message(
        &self,
        to: &str,
        from: Option<String>,
        payload: serde_json::Value,
        priority: Priority,
        timeout: Duration,
    ) -> Result<Reply, ApiError> {
        self.check_size(&payload)?;
        let message = Message {
            id: uuid::Uuid::now_v7().to_string(),
            to: to.to_owned(),
            from,
            payload,
            priority,
            timeout_ms: timeout.as_millis() as u64,
        };
        At::holding(self, to).send(Box::new(message)).await
    }

    /// The agent's recent messages, oldest first: from this node's replica, with the lines
    /// this node noted and has not written yet when it delivers the agent's messages (see
    /// `messaging::history`).
    pub async fn history(&self, id: &str) -> Result<Vec<Sent>, ApiError> {
        let agent = id.to_owned();
        let written = self
            .ctx
            .store
            .view(move |v| crate::messaging::history_in(v, &agent))
            .await?;
        Ok(crate::messaging::merged_history(written, self.mailboxes.noted(id)))
    }

    /// How many of the agent's messages are not answered yet (those queued and the one it
    /// is handling), from this node's replica.
    pub async fn waiting(&self, id: &str) -> Result<usize, ApiError> {
        let agent = id.to_owned();
        Ok(self
            .ctx
            .store
            .view(move |v| crate::messaging::waiting_in(v, &agent))
            .await?)
    }

    /// Publishes a message on a topic: every agent of the cluster subscribed to a matching
    /// pattern gets it (no reply is awaited), and clients subscribed to `messages(topic:)`
    /// see it. Answers how many agents it was queued for, and the nodes that missed it.
    pub async fn publish(
        &self,
        topic: String,
        payload: serde_json::Value,
        priority: Priority,
    ) -> Result<(FanOut, Vec<String>), ApiError> {
        check_topic(&topic, false)?;
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
        priority: Priority,
    ) -> Result<(FanOut, Vec<String>), ApiError> {
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
        priority: Priority,
    ) -> Result<(FanOut, Vec<String>), ApiError> {
        let size = payload.to_string().len();
        if size > self.ctx.max_payload_bytes {
            return Err(ApiError::invalid(format!("payload is {size} bytes, above the limit")));
        }
        let publication = Publication {
            topic,
            labels,
            payload,
            priority,
        };
        let gathered = Everywhere(self).fan_out(Box::new(publication)).await?;
        let mut outcome = FanOut::default();
        for part in gathered.answers {
            outcome += part;
        }
        Ok((outcome, gathered.missing))
    }

    /// The topic patterns the cluster's agents subscribe to, each with how many agents do,
    /// from this node's replica.
    pub async fn topics(&self) -> Result<Vec<(String, u32)>, ApiError> {
        self.mailboxes.topics().await
    }

    /// The cluster's message dead-letter queue, oldest first, from this node's replica.
    pub async fn dead_messages(&self, first: usize) -> Result<Vec<DeadMessage>, ApiError> {
        self.mailboxes.dead_letters(first).await
    }

    /// Sends a dead message again, through the node that holds its recipient.
    pub async fn replay_message(&self, id: &str) -> Result<Reply, ApiError> {
        let dead = self.mailboxes.dead_letter(id).await?;
        At::holding(self, &dead.message.to).replay(id.to_owned()).await
    }

    /// Delivers the messages a previous run left in mailboxes (called once the tree is up).
    pub async fn restore(&self) -> Result<usize, ApiError> {
        self.mailboxes.restore().await
    }

    fn check_size(&self, payload: &serde_json::Value) -> Result<(), ApiError> {
        let size = payload.to_string().len();
        if size > self.ctx.max_payload_bytes {
            return Err(ApiError::invalid(format!(
                "payload is {size} bytes, above the limit of {}",
                self.ctx.max_payload_bytes
            )));
        }
        Ok(())
    }
}

impl MessagesLocal for Messages {
    async fn send(&self, message: Box<Message>) -> Result<Reply, ApiError> {
        self.mailboxes.send(*message).await
    }

    async fn fan_out(&self, publication: Box<Publication>) -> Result<FanOut, ApiError> {
        self.mailboxes.fan_out(&publication).await
    }

    async fn replay(&self, id: String) -> Result<Reply, ApiError> {
        self.mailboxes.replay(&id).await
    }
}

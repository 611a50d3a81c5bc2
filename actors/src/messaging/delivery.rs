//! Delivery: a message is kept on disk while it waits in its agent's mailbox, delivered one
//! at a time (the higher lane first), and buried in the dead-letter queue when it expires or
//! is not answered. Messages a previous run left waiting are delivered again at start.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::Instant;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::Batch;

use super::faults::LinkEffect;
use super::mailbox::{mailbox_key, Answer, Mailboxes, Waiting};
use super::{DeadMessage, Message, Reply, Sent};
use crate::agent::AgentMsg;
use crate::error::ApiError;
use crate::tables::{MAILBOX, MESSAGE_DEAD_LETTERS};

impl Mailboxes {
    /// Sends a message to an agent of this node and waits for its reply.
    pub async fn send(&self, message: Message) -> Result<Reply, ApiError> {
        let reply = self.enqueue(message).await?;
        match reply.await {
            Ok(answer) => answer,
            Err(_) => Err(ApiError::Internal("the mailbox dropped a message".into())),
        }
    }

    /// Puts a message in its agent's mailbox (kept on disk while it waits), or refuses it with
    /// BACKPRESSURE when the mailbox is full: a refused message is never counted as queued.
    pub(super) async fn enqueue(&self, message: Message) -> Result<Answer, ApiError> {
        if self.handles().get(&message.to).is_none()
            && self.store().get(crate::tables::AGENTS, &message.to).await?.is_none()
        {
            return Err(ApiError::NotFound(format!("no agent {}", message.to)));
        }
        let (answer, reply) = oneshot::channel();
        let timeout = Duration::from_millis(message.timeout_ms);
        // Kept on disk while it waits, so a node that dies does not lose it.
        let key = mailbox_key(&message);
        self.store()
            .write(Batch::new().put(MAILBOX, key.clone(), troupe_runtime::codec::encode(&message)?))
            .await?;
        let waiting = Waiting {
            deadline: Instant::now() + timeout,
            message,
            answer,
            restored: false,
        };
        let to = waiting.message.to.clone();
        let capacity = self.capacity();
        // Some(start a delivery loop) when queued, None when the mailbox is full.
        let queued = {
            let mut boxes = self.lock();
            let mailbox = boxes.entry(to.clone()).or_default();
            if mailbox.len() >= capacity {
                None
            } else {
                mailbox.lanes[waiting.message.priority.rank() as usize].push_back(waiting);
                Some(!std::mem::replace(&mut mailbox.busy, true))
            }
        };
        let Some(start) = queued else {
            self.store().write(Batch::new().delete(MAILBOX, key)).await?;
            return Err(ApiError::Backpressure(
                format!("the mailbox of agent {to} is full ({capacity} messages waiting)"),
                500,
            ));
        };
        if start {
            tokio::spawn(self.clone().deliver(to));
        }
        Ok(reply)
    }

    /// Delivers an agent's messages one at a time, the higher lane first, until none wait.
    async fn deliver(self, agent: String) {
        loop {
            let next = {
                let mut boxes = self.lock();
                let Some(mailbox) = boxes.get_mut(&agent) else { return };
                match mailbox.next() {
                    Some(w) => w,
                    None => {
                        mailbox.busy = false;
                        return;
                    }
                }
            };
            let outcome = self.deliver_one(&next).await;
            let Waiting { message, answer, .. } = next;
            let mut done = Batch::new().delete(MAILBOX, mailbox_key(&message));
            if outcome.is_ok() {
                // An answered replay leaves the dead-letter queue in the same write, so a node
                // that dies in between neither loses it nor keeps it once answered.
                done = done.delete(MESSAGE_DEAD_LETTERS, message.id.clone());
            }
            if let Err(e) = self.store().write(done).await {
                tracing::warn!(message = %message.id, error = %e, "could not take a delivered message off disk");
            }
            let sent = Sent {
                id: message.id.clone(),
                from: message.from.clone(),
                priority: message.priority,
                outcome: if outcome.is_ok() { "REPLIED" } else { "DEAD" }.into(),
                error: outcome.as_ref().err().cloned(),
                at: troupe_runtime::clock::now(),
            };
            self.note(&agent, sent);
            let answer_to_sender = match outcome {
                Ok(payload) => Ok(Reply {
                    id: message.id.clone(),
                    payload,
                }),
                Err(reason) => Err(self.bury(message, reason).await),
            };
            let _ = answer.send(answer_to_sender);
        }
    }

    async fn deliver_one(&self, w: &Waiting) -> Result<Value, String> {
        let left = w.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("expired in the mailbox before it could be delivered".into());
        }
        match self.links().check(&w.message) {
            Some(LinkEffect::Drop) => {
                // Lost on the way: the sender hears nothing until its time is up.
                tokio::time::sleep_until(w.deadline).await;
                return Err(format!(
                    "lost in transit (injected MESSAGE_DROP): no reply within {} ms",
                    w.message.timeout_ms
                ));
            }
            Some(LinkEffect::Delay { delay, .. }) => tokio::time::sleep(delay.min(left)).await,
            None => {}
        }
        let actor = loop {
            match self.handles().get(&w.message.to).and_then(|h| h.actor()) {
                Some(actor) => break actor,
                // After a restart the agent may still be starting: wait for it, within the time.
                None if w.restored && Instant::now() < w.deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                None => return Err(format!("agent {} is not running", w.message.to)),
            }
        };
        let left = w.deadline.saturating_duration_since(Instant::now());
        let call = actor.call(
            |reply| AgentMsg::Message {
                from: w.message.from.clone(),
                payload: w.message.payload.clone(),
                timeout: left,
                reply,
            },
            Some(left),
        );
        match call.await {
            Ok(ractor::rpc::CallResult::Success(answer)) => answer,
            Ok(ractor::rpc::CallResult::Timeout) => Err(format!("no reply within {} ms", w.message.timeout_ms)),
            _ => Err(format!("agent {} went away before replying", w.message.to)),
        }
    }

    /// Keeps an undeliverable message in the dead-letter queue; the sender's error names it.
    pub(super) async fn bury(&self, message: Message, reason: String) -> ApiError {
        let id = message.id.clone();
        let dead = DeadMessage {
            message,
            reason: reason.clone(),
            at: troupe_runtime::clock::now(),
        };
        let event = NewEvent::new(
            "MESSAGE_DEAD_LETTERED",
            Some(dead.message.to.clone()),
            serde_json::json!({ "message": id, "reason": reason }),
        );
        let written = match troupe_runtime::codec::encode(&dead) {
            Ok(bytes) => self
                .store()
                .write(Batch::new().put(MESSAGE_DEAD_LETTERS, id.clone(), bytes).event(event))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = written {
            tracing::error!(message = %id, error = %e, "could not keep a dead message");
        }
        ApiError::Unavailable(format!(
            "message {id} was not answered: {reason}; it is in the message dead-letter queue"
        ))
    }

    /// Puts the messages a previous run of the node left waiting back in their mailboxes and
    /// delivers them (at least once: one being answered when the node died comes again). Nobody
    /// waits for their replies any more; those not answered go to the dead-letter queue.
    pub async fn restore(&self) -> Result<usize, ApiError> {
        self.restore_to(None).await
    }

    /// [`Self::restore`] for the agent `id` alone: one the cluster moved here, whose
    /// messages waited in its old node's mailbox.
    pub async fn restore_agent(&self, id: &str) -> Result<usize, ApiError> {
        self.restore_to(Some(id)).await
    }

    /// Restores the messages waiting on disk for `agent` (every agent this node holds when
    /// `None`) that are not in a mailbox here already.
    async fn restore_to(&self, agent: Option<&str>) -> Result<usize, ApiError> {
        let prefix = agent.map(|a| format!("{a}/"));
        let waiting: Vec<Message> = self
            .store()
            .view(move |v| {
                let mut out = Vec::new();
                // Keys are `<agent>/<rank>/<id>`: one agent's come together.
                v.scan_prefix(MAILBOX, prefix.as_deref().unwrap_or_default(), |_, bytes| {
                    out.push(troupe_runtime::codec::decode(bytes)?);
                    Ok(true)
                })?;
                Ok(out)
            })
            .await?;
        let mut agents = Vec::new();
        let mut n = 0;
        {
            let mut boxes = self.lock();
            let waiting: Vec<Message> = waiting
                .into_iter()
                .filter(|m| {
                    self.holds(&m.to)
                        && boxes
                            .get(&m.to)
                            .is_none_or(|b| b.lanes.iter().flatten().all(|w| w.message.id != m.id))
                })
                .collect();
            for message in waiting {
                n += 1;
                let (answer, _) = oneshot::channel();
                let to = message.to.clone();
                let mailbox = boxes.entry(to.clone()).or_default();
                mailbox.lanes[message.priority.rank() as usize].push_back(Waiting {
                    deadline: Instant::now() + Duration::from_millis(message.timeout_ms),
                    message,
                    answer,
                    restored: true,
                });
                if !std::mem::replace(&mut mailbox.busy, true) {
                    agents.push(to);
                }
            }
        }
        for agent in agents {
            tokio::spawn(self.clone().deliver(agent));
        }
        Ok(n)
    }
}

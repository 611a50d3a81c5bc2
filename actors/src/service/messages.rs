//! Messages to agents: `sendMessage` as request/response. Each agent has a bounded mailbox
//! with four priority lanes, delivered one message at a time, the higher lane first (a
//! CRITICAL message overtakes queued NORMAL ones). A message that expires, or cannot be
//! delivered or answered, goes to the message dead-letter queue, from which it can be
//! replayed. Each agent keeps a short history of its messages.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::Instant;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::Batch;

use super::context::Context;
use crate::agent::AgentMsg;
use crate::error::ApiError;
pub use crate::messaging::topics::{check_topic, topic_matches};
use crate::tables::{MAILBOX, MESSAGE_DEAD_LETTERS};
use crate::task::Priority;

/// Messages of each agent kept in its history.
const HISTORY: usize = 50;
/// How long a message may wait and be answered when the sender does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A message as it crosses the API and the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    pub to: String,
    pub from: Option<String>,
    #[serde(with = "troupe_runtime::codec::json_text")]
    pub payload: Value,
    pub priority: Priority,
    pub timeout_ms: u64,
}

/// The answer to a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub id: String,
    #[serde(with = "troupe_runtime::codec::json_text")]
    pub payload: Value,
}

/// A message that expired or could not be delivered or answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadMessage {
    pub message: Message,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// One line of an agent's message history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sent {
    pub id: String,
    pub from: Option<String>,
    pub priority: Priority,
    /// REPLIED, or DEAD (then `error` says why).
    pub outcome: String,
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

struct Waiting {
    message: Message,
    deadline: Instant,
    answer: oneshot::Sender<Result<Reply, ApiError>>,
    /// Found in the store at start: its agent may not be running yet, so delivery waits for
    /// it (within the message's time) instead of dead-lettering at once.
    restored: bool,
}

/// Where a waiting message is kept in the store.
fn mailbox_key(m: &Message) -> String {
    format!("{}/{}/{}", m.to, m.priority.rank(), m.id)
}

#[derive(Default)]
struct Mailbox {
    lanes: [VecDeque<Waiting>; 4],
    /// A delivery loop runs for this mailbox.
    busy: bool,
    history: VecDeque<Sent>,
}

impl Mailbox {
    fn len(&self) -> usize {
        self.lanes.iter().map(VecDeque::len).sum()
    }

    fn next(&mut self) -> Option<Waiting> {
        self.lanes.iter_mut().find_map(VecDeque::pop_front)
    }

    fn note(&mut self, sent: Sent) {
        self.history.push_back(sent);
        if self.history.len() > HISTORY {
            self.history.pop_front();
        }
    }
}

/// This node's agents' mailboxes.
pub struct Mailboxes {
    boxes: Mutex<HashMap<String, Mailbox>>,
    capacity: usize,
    /// Dead messages being replayed now.
    replaying: crate::inflight::InFlight,
}
/// An agent's mailbox as the API shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MailboxView {
    /// Messages waiting to be delivered.
    pub waiting: usize,
    pub history: Vec<Sent>,
}

impl Mailboxes {
    pub fn new(capacity: usize) -> Self {
        Self {
            boxes: Mutex::new(HashMap::new()),
            capacity,
            replaying: Default::default(),
        }
    }

    fn claim_replay(&self, id: &str) -> Result<crate::inflight::InFlightGuard, ApiError> {
        self.replaying
            .begin(id)
            .ok_or_else(|| ApiError::Conflict(format!("dead message {id} is being replayed already")))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Mailbox>> {
        self.boxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn view(&self, agent: &str) -> MailboxView {
        self.lock()
            .get(agent)
            .map(|m| MailboxView {
                waiting: m.len(),
                history: m.history.iter().cloned().collect(),
            })
            .unwrap_or_default()
    }
}

/// Sends a message to an agent of this node and waits for its reply.
pub(crate) async fn send_local(ctx: &Arc<Context>, message: Message) -> Result<Reply, ApiError> {
    let reply = enqueue(ctx, message).await?;
    match reply.await {
        Ok(answer) => answer,
        Err(_) => Err(ApiError::Internal("the mailbox dropped a message".into())),
    }
}

/// The answer a queued message will get.
type Answer = oneshot::Receiver<Result<Reply, ApiError>>;

/// Puts a message in its agent's mailbox (kept on disk while it waits), or refuses it with
/// BACKPRESSURE when the mailbox is full: a refused message is never counted as queued.
async fn enqueue(ctx: &Arc<Context>, message: Message) -> Result<Answer, ApiError> {
    if ctx.slots.handles.get(&message.to).is_none()
        && ctx.store.get(crate::tables::AGENTS, &message.to).await?.is_none()
    {
        return Err(ApiError::NotFound(format!("no agent {}", message.to)));
    }
    let (answer, reply) = oneshot::channel();
    let timeout = Duration::from_millis(message.timeout_ms);
    // Kept on disk while it waits, so a node that dies does not lose it.
    let key = mailbox_key(&message);
    ctx.store
        .write(Batch::new().put(MAILBOX, key.clone(), troupe_runtime::codec::encode(&message)?))
        .await?;
    let waiting = Waiting {
        deadline: Instant::now() + timeout,
        message,
        answer,
        restored: false,
    };
    let to = waiting.message.to.clone();
    let capacity = ctx.mailboxes.capacity;
    // Some(start a delivery loop) when queued, None when the mailbox is full.
    let queued = {
        let mut boxes = ctx.mailboxes.lock();
        let mailbox = boxes.entry(to.clone()).or_default();
        if mailbox.len() >= capacity {
            None
        } else {
            mailbox.lanes[waiting.message.priority.rank() as usize].push_back(waiting);
            Some(!std::mem::replace(&mut mailbox.busy, true))
        }
    };
    let Some(start) = queued else {
        ctx.store.write(Batch::new().delete(MAILBOX, key)).await?;
        return Err(ApiError::Backpressure(
            format!("the mailbox of agent {to} is full ({capacity} messages waiting)"),
            500,
        ));
    };
    if start {
        tokio::spawn(deliver(ctx.clone(), to));
    }
    Ok(reply)
}

/// Delivers an agent's messages one at a time, the higher lane first, until none wait.
async fn deliver(ctx: Arc<Context>, agent: String) {
    loop {
        let next = {
            let mut boxes = ctx.mailboxes.lock();
            let Some(mailbox) = boxes.get_mut(&agent) else { return };
            match mailbox.next() {
                Some(w) => w,
                None => {
                    mailbox.busy = false;
                    return;
                }
            }
        };
        let outcome = deliver_one(&ctx, &next).await;
        let Waiting { message, answer, .. } = next;
        let mut done = Batch::new().delete(MAILBOX, mailbox_key(&message));
        if outcome.is_ok() {
            // An answered replay leaves the dead-letter queue in the same write, so a node
            // that dies in between neither loses it nor keeps it once answered.
            done = done.delete(MESSAGE_DEAD_LETTERS, message.id.clone());
        }
        if let Err(e) = ctx.store.write(done).await {
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
        if let Some(m) = ctx.mailboxes.lock().get_mut(&agent) {
            m.note(sent);
        }
        let answer_to_sender = match outcome {
            Ok(payload) => Ok(Reply {
                id: message.id.clone(),
                payload,
            }),
            Err(reason) => Err(bury(&ctx, message, reason).await),
        };
        let _ = answer.send(answer_to_sender);
    }
}

async fn deliver_one(ctx: &Context, w: &Waiting) -> Result<Value, String> {
    let left = w.deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err("expired in the mailbox before it could be delivered".into());
    }
    let actor = loop {
        match ctx.slots.handles.get(&w.message.to).and_then(|h| h.actor()) {
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
async fn bury(ctx: &Context, message: Message, reason: String) -> ApiError {
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
        Ok(bytes) => ctx
            .store
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
pub(crate) async fn restore(ctx: &Arc<Context>) -> Result<usize, ApiError> {
    let waiting: Vec<Message> = ctx
        .store
        .view(|v| {
            let mut out = Vec::new();
            v.scan(MAILBOX, None, |_, bytes| {
                out.push(troupe_runtime::codec::decode(bytes)?);
                Ok(true)
            })?;
            Ok(out)
        })
        .await?;
    let n = waiting.len();
    let mut agents = Vec::new();
    {
        let mut boxes = ctx.mailboxes.lock();
        for message in waiting {
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
        tokio::spawn(deliver(ctx.clone(), agent));
    }
    Ok(n)
}

/// The dead messages of this node, oldest first.
pub(crate) async fn dead_letters(ctx: &Context, first: usize) -> Result<Vec<DeadMessage>, ApiError> {
    Ok(ctx
        .store
        .view(move |v| {
            let mut out = Vec::new();
            v.scan(MESSAGE_DEAD_LETTERS, None, |_, bytes| {
                out.push(troupe_runtime::codec::decode(bytes)?);
                Ok(out.len() < first)
            })?;
            Ok(out)
        })
        .await?)
}

/// Sends a dead message again. It stays in the queue until it is answered (the delivery
/// that gets the answer takes it out), so a replay that fails loses nothing; a second replay
/// of a message still being replayed is refused, so it is never delivered twice at once.
pub(crate) async fn replay(ctx: &Arc<Context>, id: &str) -> Result<Reply, ApiError> {
    let bytes = ctx
        .store
        .get(MESSAGE_DEAD_LETTERS, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no dead message {id}")))?;
    let dead: DeadMessage = troupe_runtime::codec::decode(&bytes)?;
    let _claim = ctx.mailboxes.claim_replay(id)?;
    send_local(ctx, dead.message).await
}

/// How a published or broadcast message fared on the agents it was meant for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOut {
    /// Queued in the agent's mailbox.
    pub queued: u32,
    /// Refused by a full mailbox (or not kept): put in the dead-letter queue instead.
    pub refused: u32,
}

impl std::ops::AddAssign for FanOut {
    fn add_assign(&mut self, other: Self) {
        self.queued += other.queued;
        self.refused += other.refused;
    }
}

/// Queues a message for each of this node's agents that `wanted` picks, without waiting for
/// replies (those that fail go to the dead-letter queue). One that a full mailbox refuses is
/// dead-lettered at once and counted as refused, never as queued.
pub(crate) async fn fan_out(
    ctx: &Arc<Context>,
    wanted: impl Fn(&crate::agent::AgentSpec) -> bool,
    payload: &Value,
    priority: Priority,
) -> Result<FanOut, ApiError> {
    let specs: Vec<crate::agent::AgentSpec> = ctx
        .store
        .view(|v| {
            let mut out = Vec::new();
            v.scan(crate::tables::AGENTS, None, |_, bytes| {
                out.push(troupe_runtime::codec::decode(bytes)?);
                Ok(true)
            })?;
            Ok(out)
        })
        .await?;
    // Queued side by side, so the store commits their mailbox entries as one group.
    let queued = specs.iter().filter(|s| wanted(s)).map(|spec| {
        let message = Message {
            id: uuid::Uuid::now_v7().to_string(),
            to: spec.id.clone(),
            from: None,
            payload: payload.clone(),
            priority,
            timeout_ms: DEFAULT_TIMEOUT.as_millis() as u64,
        };
        async move {
            match enqueue(ctx, message.clone()).await {
                // Nobody waits for the reply: an unanswered one is dead-lettered by delivery.
                Ok(_) => true,
                Err(e) => {
                    bury(ctx, message, e.to_string()).await;
                    false
                }
            }
        }
    });
    let mut outcome = FanOut::default();
    for was_queued in futures::future::join_all(queued).await {
        if was_queued {
            outcome.queued += 1;
        } else {
            outcome.refused += 1;
        }
    }
    Ok(outcome)
}

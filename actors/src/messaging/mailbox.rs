//! Mailboxes: each agent's four priority lanes of waiting messages, and its recent history.
//! Both are in the replicated store (waiting messages in `MAILBOX` until answered, the
//! history in `MESSAGE_HISTORY`), so any node reads any agent's mailbox from its replica.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::time::Instant;
use troupe_runtime::store::{Batch, Op, Store, StoreError, View};

use super::{Message, Reply, Sent};
use crate::agent::Handles;
use crate::error::ApiError;
use crate::tables::{MAILBOX, MESSAGE_HISTORY};

/// Messages of each agent kept in its history.
const HISTORY: usize = 50;

pub(super) struct Waiting {
    pub message: Message,
    pub deadline: Instant,
    pub answer: oneshot::Sender<Result<Reply, ApiError>>,
    /// Found in the store at start: its agent may not be running yet, so delivery waits for
    /// it (within the message's time) instead of dead-lettering at once.
    pub restored: bool,
}

/// Where a waiting message is kept in the store.
pub(super) fn mailbox_key(m: &Message) -> String {
    format!("{}/{}/{}", m.to, m.priority.rank(), m.id)
}

#[derive(Default)]
pub(super) struct Mailbox {
    pub lanes: [VecDeque<Waiting>; 4],
    /// A delivery loop runs for this mailbox.
    pub busy: bool,
}

impl Mailbox {
    pub fn len(&self) -> usize {
        self.lanes.iter().map(VecDeque::len).sum()
    }

    pub fn next(&mut self) -> Option<Waiting> {
        self.lanes.iter_mut().find_map(VecDeque::pop_front)
    }
}

/// Where a line of `agent`'s history is kept: in the order of its time.
pub(super) fn history_key(agent: &str, sent: &Sent) -> String {
    format!("{agent}/{:020}/{}", sent.at.timestamp_micros().max(0), sent.id)
}

/// The keys of `agent`'s records in `table` (`<agent>/…`), in key order.
pub(super) fn keys_of(
    v: &View<'_>,
    table: troupe_runtime::store::Table,
    agent: &str,
) -> Result<Vec<String>, StoreError> {
    let prefix = format!("{agent}/");
    let mut keys = Vec::new();
    v.scan(table, Some(&prefix), |k, _| {
        if !k.starts_with(&prefix) {
            return Ok(false);
        }
        keys.push(k.to_owned());
        Ok(true)
    })?;
    Ok(keys)
}

/// `agent`'s mailbox as the replica holds it: the messages waiting, and its history.
pub fn mailbox_in(v: &View<'_>, agent: &str) -> Result<MailboxView, StoreError> {
    let waiting = keys_of(v, MAILBOX, agent)?.len();
    let prefix = format!("{agent}/");
    let mut history = Vec::new();
    v.scan(MESSAGE_HISTORY, Some(&prefix), |k, bytes| {
        if !k.starts_with(&prefix) {
            return Ok(false);
        }
        history.push(troupe_runtime::codec::decode(bytes)?);
        Ok(true)
    })?;
    Ok(MailboxView { waiting, history })
}

/// Deletes `agent`'s history into `batch` (the agent is being removed).
pub async fn delete_history(store: &Store, agent: &str, batch: &mut Batch) -> Result<(), StoreError> {
    let agent = agent.to_owned();
    for key in store.view(move |v| keys_of(v, MESSAGE_HISTORY, &agent)).await? {
        batch.push(Op::Delete {
            table: MESSAGE_HISTORY,
            key,
        });
    }
    Ok(())
}

/// This node's agents' mailboxes, and what delivering to them takes: the store that keeps
/// waiting and dead messages, and the agents' handles.
#[derive(Clone)]
pub struct Mailboxes {
    inner: Arc<Inner>,
}

struct Inner {
    boxes: Mutex<HashMap<String, Mailbox>>,
    capacity: usize,
    /// Dead messages being replayed now.
    replaying: crate::inflight::InFlight,
    store: Store,
    handles: Handles,
    /// This node's name: it delivers to the agents it holds.
    node: String,
    /// Where agents moved off the node their id names live now.
    directory: crate::cluster::directory::Directory,
    /// Link faults a fault experiment armed on the messages to this node's agents.
    links: super::faults::LinkFaults,
    /// Who each publication is for.
    audience: super::Audience,
}

/// An agent's mailbox as the API shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MailboxView {
    /// Messages waiting to be delivered.
    pub waiting: usize,
    pub history: Vec<Sent>,
}

impl Mailboxes {
    pub fn new(
        capacity: usize,
        store: Store,
        handles: Handles,
        node: String,
        directory: crate::cluster::directory::Directory,
        audience: super::Audience,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                boxes: Mutex::new(HashMap::new()),
                capacity,
                replaying: Default::default(),
                store,
                handles,
                node,
                directory,
                links: Default::default(),
                audience,
            }),
        }
    }

    /// The link faults armed on the messages to this node's agents.
    pub fn links(&self) -> &super::faults::LinkFaults {
        &self.inner.links
    }

    /// Whether this node holds the agent `id` (and so delivers its messages).
    pub(super) fn holds(&self, id: &str) -> bool {
        self.inner.directory.node_of(id).is_none_or(|n| n == self.inner.node)
    }

    pub(super) fn audience(&self) -> &super::Audience {
        &self.inner.audience
    }

    pub(super) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(super) fn handles(&self) -> &Handles {
        &self.inner.handles
    }

    pub(super) fn capacity(&self) -> usize {
        self.inner.capacity
    }

    pub(super) fn claim_replay(&self, id: &str) -> Result<crate::inflight::InFlightGuard, ApiError> {
        self.inner
            .replaying
            .begin(id)
            .ok_or_else(|| ApiError::Conflict(format!("dead message {id} is being replayed already")))
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<String, Mailbox>> {
        self.inner.boxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds the record of `sent` to `agent`'s history into `batch`, with the deletes of the
    /// records it pushes past [`HISTORY`].
    pub(super) async fn note(&self, agent: &str, sent: &Sent, batch: Batch) -> Batch {
        let key = history_key(agent, sent);
        let bytes = match troupe_runtime::codec::encode(sent) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(message = %sent.id, error = %e, "a message's history line cannot be encoded");
                return batch;
            }
        };
        let mut batch = batch.put(MESSAGE_HISTORY, key, bytes);
        // Read each time: the agent may have moved here, or away and back, since.
        let who = agent.to_owned();
        match self.inner.store.view(move |v| keys_of(v, MESSAGE_HISTORY, &who)).await {
            Ok(kept) => {
                for old in kept.into_iter().rev().skip(HISTORY - 1) {
                    batch = batch.delete(MESSAGE_HISTORY, old);
                }
            }
            Err(e) => tracing::warn!(agent, error = %e, "an agent's message history could not be read"),
        }
        batch
    }
}

/// What a waiting message's sender will get.
pub(super) type Answer = oneshot::Receiver<Result<Reply, ApiError>>;

//! Mailboxes: each agent's four priority lanes of waiting messages, and its recent history
//! (see [`super::history`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;
use tokio::time::Instant;
use troupe_runtime::store::Store;

use super::{Message, Reply};
use crate::agent::Handles;
use crate::error::ApiError;

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
    pub history: super::history::Recent,
}

impl Mailbox {
    pub fn len(&self) -> usize {
        self.lanes.iter().map(VecDeque::len).sum()
    }

    pub fn next(&mut self) -> Option<Waiting> {
        self.lanes.iter_mut().find_map(VecDeque::pop_front)
    }
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
    /// Wakes the writer of the history lines (see [`super::history`]).
    noted: tokio::sync::Notify,
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
                noted: tokio::sync::Notify::new(),
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

    /// Rung when a history line is noted (see [`super::history`]).
    pub(super) fn history_due(&self) -> &tokio::sync::Notify {
        &self.inner.noted
    }
}

/// What a waiting message's sender will get.
pub(super) type Answer = oneshot::Receiver<Result<Reply, ApiError>>;

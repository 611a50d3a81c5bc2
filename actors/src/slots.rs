//! A slot where a local actor can be found now. A restarted actor gets a new `ActorRef`;
//! it puts it in its slot, and callers always look it up fresh. The node's slots are
//! [`crate::agent::Slots`].

use std::sync::{Arc, RwLock};

use ractor::ActorRef;

use crate::error::ApiError;

pub struct Slot<M: ractor::Message>(Arc<RwLock<Option<ActorRef<M>>>>);

impl<M: ractor::Message> Clone for Slot<M> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<M: ractor::Message> Default for Slot<M> {
    fn default() -> Self {
        Self(Arc::new(RwLock::new(None)))
    }
}

impl<M: ractor::Message> Slot<M> {
    pub fn get(&self) -> Option<ActorRef<M>> {
        self.0.read().map(|g| g.clone()).unwrap_or(None)
    }

    pub fn set(&self, actor: ActorRef<M>) {
        if let Ok(mut g) = self.0.write() {
            *g = Some(actor);
        }
    }

    /// The actor in the slot, or UNAVAILABLE saying `what` is not running.
    pub fn running(&self, what: &str) -> Result<ActorRef<M>, ApiError> {
        // One that stopped stays in its slot until its restart replaces it (this node's work
        // stops while it holds no lease, and starts again once it does).
        self.get()
            .filter(|a| {
                !matches!(
                    a.get_status(),
                    ractor::ActorStatus::Stopping | ractor::ActorStatus::Stopped
                )
            })
            .ok_or_else(|| {
                // Most often the node's work waits for a lease (its cluster lost its majority,
                // or it is cut off), which the answer alone did not say.
                ApiError::Unavailable(format!(
                    "{what} is not running on this node (its /healthz says why: most often its work waits \
                     for a lease from the cluster's leader, which a cluster that lost most of its voters for \
                     good gets again from one survivor with `troupe recover`: docs/cluster.md)"
                ))
            })
    }

    /// Whether the actor in the slot is running now.
    pub fn is_up(&self) -> bool {
        self.get()
            .is_some_and(|a| a.get_status() == ractor::ActorStatus::Running)
    }
}

/// Actors found by a key (a swarm's id): a restarted one replaces its entry.
pub struct SlotMap<M: ractor::Message>(Arc<RwLock<std::collections::HashMap<String, ActorRef<M>>>>);

impl<M: ractor::Message> Clone for SlotMap<M> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<M: ractor::Message> Default for SlotMap<M> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<M: ractor::Message> SlotMap<M> {
    pub fn get(&self, key: &str) -> Option<ActorRef<M>> {
        self.0.read().ok()?.get(key).cloned()
    }

    pub fn set(&self, key: &str, actor: ActorRef<M>) {
        if let Ok(mut g) = self.0.write() {
            g.insert(key.to_owned(), actor);
        }
    }

    pub fn remove(&self, key: &str) {
        if let Ok(mut g) = self.0.write() {
            g.remove(key);
        }
    }
}

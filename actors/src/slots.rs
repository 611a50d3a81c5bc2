//! Where the node's local actors can be found now. A restarted actor gets a new `ActorRef`;
//! it puts it here, and callers always look it up fresh.

use std::sync::{Arc, RwLock};

use ractor::ActorRef;
use troupe_runtime::supervision::SupervisorMsg;

use crate::agent::{Handles, Owner};
use crate::error::ApiError;
use crate::scheduler::SchedulerMsg;

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
        self.get()
            .ok_or_else(|| ApiError::Unavailable(format!("{what} is not running")))
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

#[derive(Clone, Default)]
pub struct Slots {
    pub scheduler: Slot<SchedulerMsg>,
    pub agents: Slot<SupervisorMsg>,
    /// The node's `swarms` supervisor.
    pub swarms: Slot<SupervisorMsg>,
    /// Each swarm's own supervisor (members, coordinator, sub-teams), by swarm id.
    pub swarm_supervisors: SlotMap<SupervisorMsg>,
    /// Each swarm's members supervisor, by swarm id.
    pub members: SlotMap<SupervisorMsg>,
    /// Each swarm's coordinator, by swarm id.
    pub coordinators: SlotMap<crate::swarm::CoordinatorMsg>,
    pub root: Slot<SupervisorMsg>,
    /// This node's agents by id, whether running or not (stopped and failed ones too, once
    /// looked at).
    pub handles: Handles,
    /// Tasks open on this node, as the scheduler last counted them (plus those admitted
    /// since): what `max_open_tasks` bounds.
    pub open_tasks: Arc<std::sync::atomic::AtomicUsize>,
    /// What room this node's agents have, as the scheduler last published it.
    pub rooms: crate::scheduler::Rooms,
    /// Where agents' outgoing messages go (set once the node's API exists).
    pub outbox: Arc<std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<crate::agent::Outgoing>>>,
}

impl Slots {
    /// The supervisor that runs the agents of `owner` (the node's `agents`, or a swarm's
    /// `members`), or why there is none now.
    pub fn supervisor_of(&self, owner: &Owner) -> Result<ActorRef<SupervisorMsg>, ApiError> {
        match owner.swarm() {
            None => self.agents.running("the agents supervisor"),
            Some(swarm) => self.members.get(swarm).ok_or_else(|| {
                ApiError::Unavailable(format!("the members supervisor of swarm {swarm} is not running"))
            }),
        }
    }
}

//! Where the node's service actors can be found now. A restarted service gets a new
//! `ActorRef`; it puts it here, and callers always look it up fresh.

use std::sync::{Arc, RwLock};

use ractor::ActorRef;
use troupe_runtime::supervision::SupervisorMsg;

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
}

#[derive(Clone, Default)]
pub struct Services {
    pub scheduler: Slot<SchedulerMsg>,
    pub agents: Slot<SupervisorMsg>,
}

//! Where the node's local actors can be found now: the scheduler, the agents' and swarms'
//! supervisors, each swarm's coordinator, the agents' handles. A restarted actor puts its
//! new `ActorRef` in its slot, and callers always look it up fresh.

use std::sync::Arc;

use ractor::ActorRef;
use troupe_runtime::supervision::SupervisorMsg;

use super::{Handles, Outgoing, Owner};
use crate::error::ApiError;
use crate::scheduler::SchedulerMsg;
use crate::slots::{Slot, SlotMap};

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
    pub outbox: Arc<std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Outgoing>>>,
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

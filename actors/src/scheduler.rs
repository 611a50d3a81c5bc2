//! The scheduler: owns the task queue of its node and the assignment of tasks to its agents.
//!
//! ```text
//!  submit ─▶ store (QUEUED, durable) ─▶ Enqueue ─▶ engine ─▶ Start ─▶ agent
//!                                        ▲   │                        │
//!              retry after backoff ──────┘   └─ Record (status+event) ◀── Finished
//! ```
//!
//! [`engine::Engine`] makes every decision (which agent, retry or fail, what an agent's
//! death means, why a queued task waits, when progress is written) as a pure function of its
//! state and the input; [`Scheduler`] applies the effects and persists each transition with
//! its event. [`admission`] is what a submission passes before it is written QUEUED (the
//! open-task bound, the target agent, dependencies); [`engine::graph`] orders a task graph.
//! [`TaskQueue`] is how the rest of the node submits, requeues, cancels and reads this
//! node's tasks (`tasks/submit.rs`, `tasks/requeue.rs`, `tasks/cancel.rs`, `tasks/read.rs`).

mod actor;
pub mod admission;
pub mod engine;
pub mod report;
mod tasks;

pub use actor::{Scheduler, SchedulerArgs, SchedulerMsg, PAYLOAD_CACHE_BYTES};
pub use engine::{BreakerPolicy, Down, Place, RetryPolicy, Room, PROGRESS_INTERVAL};
pub use tasks::{no_agent_has, TaskFilter, TaskQueue};

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// How often the scheduler publishes what room its agents have ([`Rooms`]).
pub const ROOMS_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// What the peers that answered lately said in their last heartbeat of the room their
/// agents have for a capability.
pub type PeerRooms = Arc<dyn Fn(&str) -> Vec<(String, Room)> + Send + Sync>;

/// What this node's agents can take of each capability they serve, as the scheduler last
/// published it (every [`ROOMS_EVERY`]). The heartbeat carries it to every member, so a
/// node places a capability's task across the cluster from what the beats said, without
/// asking any peer per task; and a beat never waits for the scheduler.
#[derive(Clone, Default)]
pub struct Rooms(Arc<RwLock<Arc<BTreeMap<String, Room>>>>);

impl Rooms {
    pub fn set(&self, rooms: BTreeMap<String, Room>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rooms);
    }

    pub fn get(&self) -> Arc<BTreeMap<String, Room>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests;

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
mod tasks;

pub use actor::{Scheduler, SchedulerArgs, SchedulerMsg, PAYLOAD_CACHE_BYTES};
pub use engine::{BreakerPolicy, Down, Place, RetryPolicy, Room, PROGRESS_INTERVAL};
pub use tasks::{TaskFilter, TaskQueue};

#[cfg(test)]
mod tests;

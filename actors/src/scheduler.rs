//! The scheduler: owns the task queue of its node and the assignment of tasks to local agents.
//!
//! ```text
//!  submit ─▶ store (QUEUED, durable) ─▶ Enqueue ─▶ queue ─▶ pick agent ─▶ Run ─▶ agent
//!                                         ▲                               │
//!                      retry after backoff└──── Finished(err) ◀───────────┘ Finished(ok) ─▶ SUCCEEDED
//! ```
//!
//! Decisions live in plain code: [`queue::TaskQueue`] orders tasks (priority, then FIFO),
//! [`assign::pick`] chooses the least-loaded capable agent. The actor applies them and
//! records every transition with its event.

mod actor;
pub mod assign;
pub mod queue;

pub use actor::{AgentCounters, Scheduler, SchedulerArgs, SchedulerMsg};

#[cfg(test)]
mod tests;

//! OTP-style supervision on top of ractor's links.
//!
//! ```text
//!            Supervisor (strategy, intensity, backoff)
//!           /          |            \
//!      child a      child b       child c      each re-created from its ChildSpec
//! ```
//!
//! A child that exits is judged by [`RestartLadder::decide`] (pure, unit-tested): removed,
//! restarted alone (`one_for_one`), with all its siblings (`one_for_all`) or with the siblings
//! started after it (`rest_for_one`), after a backoff. Past `max_restarts` within `window`
//! the supervisor stops its children and fails, which its own parent sees as a child failure:
//! the escalation. Every start, failure, restart, stop and escalation is an event.

mod decision;
mod supervisor;

pub use decision::{Backoff, Decision, Exit, Intensity, Restart, RestartLadder, Strategy};
pub use supervisor::{ChildEvent, ChildSpec, Supervisor, SupervisorArgs, SupervisorMsg, SupervisorSpec};

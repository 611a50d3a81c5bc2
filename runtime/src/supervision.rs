//! OTP-style supervision on top of ractor's links.
//!
//! ```text
//!            Supervisor (strategy, intensity, backoff)
//!           /          |            \
//!      child a      child b       child c      each re-created from its ChildSpec
//!                                              (restart type, start timeout, shutdown,
//!                                               optional intensity of its own)
//! ```
//!
//! A child that exits is judged by [`RestartLadder::decide`] (pure, unit-tested): removed,
//! restarted alone (`one_for_one`), with all its siblings (`one_for_all`) or with the siblings
//! started after it (`rest_for_one`), at once the first time and after a growing backoff
//! after that. A child with an intensity of its own is given up on alone (FAILED) past it;
//! otherwise, past the supervisor's `max_restarts` within `window`, the supervisor stops its
//! children and fails, which its own parent sees as a child failure: the escalation. Every
//! start, failure, restart, stop and escalation is an event.

mod child;
mod chore;
mod decision;
mod jobs;
mod nested;
mod supervisor;
mod tree;

pub use child::{ChildEvent, ChildSpec, Shutdown};
pub use chore::Chore;
pub use decision::{Backoff, ChildView, Decision, Exit, Intensity, Restart, RestartLadder, Strategy};
pub use nested::{Nest, Nested, SupervisorSpec};
pub use supervisor::{
    CrashPlan, CrashRequest, Reach, ReachRequest, StartOrder, Supervisor, SupervisorArgs, SupervisorMsg,
    INJECTED_CRASH, UNRESPONSIVE,
};
pub use tree::{ChildInfo, SupervisorInfo};

/// A failed spawn as its own cause says it: ractor words every failed start as "Actor
/// panicked during startup '…'", even one that returned an error and panicked nowhere, and
/// that wording must not reach a user.
pub fn start_failed(e: ractor::SpawnErr) -> ractor::ActorProcessingErr {
    match e {
        ractor::SpawnErr::StartupFailed(cause) => cause,
        other => other.into(),
    }
}

#[cfg(test)]
mod tests;

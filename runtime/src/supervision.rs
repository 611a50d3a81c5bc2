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
mod decision;
mod jobs;
mod supervisor;
mod tree;

use std::sync::Arc;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr};

pub use child::{ChildEvent, ChildSpec, Shutdown};
pub use decision::{Backoff, ChildView, Decision, Exit, Intensity, Restart, RestartLadder, Strategy};
pub use supervisor::{StartOrder, Supervisor, SupervisorArgs, SupervisorMsg};
pub use tree::{ChildInfo, SupervisorInfo};

/// A nested supervisor as a child of another: its children restart together under its own
/// strategy, and its failure is one child failure for its parent. `args` builds it afresh
/// on every (re)start.
pub struct SupervisorSpec {
    pub args: Box<dyn Fn() -> SupervisorArgs + Send + Sync>,
    pub id: String,
}

impl ChildSpec for SupervisorSpec {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &str {
        "SUPERVISOR"
    }

    fn shutdown(&self) -> Shutdown {
        Shutdown::Infinity
    }

    /// Its children start one after another, each within its own start timeout.
    fn start_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(300)
    }

    fn is_supervisor(&self) -> bool {
        true
    }

    fn start(self: Arc<Self>, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>> {
        Box::pin(async move {
            let (sup, _) = Actor::spawn_linked(None, Supervisor, (self.args)(), supervisor).await?;
            Ok(sup.get_cell())
        })
    }
}

#[cfg(test)]
mod tests;

//! Whether the node still takes new work: cleared once, when it begins to shut down. Every
//! room that starts something (an agent, a task, a swarm) asks it first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::ApiError;

#[derive(Clone, Default)]
pub struct Serving(Arc<AtomicBool>);

impl Serving {
    /// From now on nothing new starts.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Refuses new work once the node is shutting down.
    pub fn ensure(&self) -> Result<(), ApiError> {
        if self.is_draining() {
            Err(ApiError::Unavailable(SHUTTING_DOWN.into()))
        } else {
            Ok(())
        }
    }
}

/// How a node that began to shut down refuses new work, before it does anything of it.
const SHUTTING_DOWN: &str = "the node is shutting down";

/// Whether `e` is a node's refusal of new work as it shuts down ([`Serving::ensure`]): it
/// did nothing of the request, so it may go elsewhere.
pub fn refused_for_stop(e: &ApiError) -> bool {
    matches!(e, ApiError::Unavailable(m) if m == SHUTTING_DOWN)
}

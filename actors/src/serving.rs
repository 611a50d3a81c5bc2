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
            Err(shutting_down())
        } else {
            Ok(())
        }
    }
}

/// How a node that began to shut down refuses new work, before it does anything of it.
const SHUTTING_DOWN: &str = "the node is shutting down: it did nothing of the request; send it to another member";

/// How a node that began to shut down refuses new work (to its clients and its peers).
pub fn shutting_down() -> ApiError {
    ApiError::Unavailable(SHUTTING_DOWN.into())
}

/// A peer's refusal of a request as it shuts down, told to the client of the node that
/// forwarded it (which is not the one shutting down).
pub fn peer_shutting_down(node: &str) -> ApiError {
    ApiError::Unavailable(format!("node {node} is shutting down{NOTHING_DONE}"))
}

/// What a peer's refusal adds: the request may be sent again, here or elsewhere.
const NOTHING_DONE: &str = "; it did nothing of the request";

/// Whether `e` is a node's refusal of new work as it shuts down ([`Serving::ensure`],
/// [`peer_shutting_down`]): it did nothing of the request, so it may go elsewhere.
pub fn refused_for_stop(e: &ApiError) -> bool {
    matches!(e, ApiError::Unavailable(m) if m == SHUTTING_DOWN || m.starts_with("node ") && m.ends_with(NOTHING_DONE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_for_a_stop_is_known_as_such_here_and_as_a_peers() {
        assert!(refused_for_stop(&shutting_down()));
        // The client is told what to do: nothing forwards it.
        assert!(shutting_down().to_string().ends_with("send it to another member"));
        let peers = peer_shutting_down("c");
        assert!(refused_for_stop(&peers), "{peers}");
        assert!(peers.to_string().contains("node c is shutting down"), "{peers}");
        assert!(!refused_for_stop(&ApiError::Unavailable(
            "node c is not connected".into()
        )));
        assert!(!refused_for_stop(&ApiError::invalid(SHUTTING_DOWN)));
    }
}

//! The hosts the peers drive, as each peer's last heartbeat answer reported them: what a
//! host's driver sees is observed on its node, not replicated, and travels with the beats,
//! so a read of a peer's host asks no peer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::HostView;

#[derive(Clone, Default)]
pub struct PeerHosts(Arc<Mutex<HashMap<String, Reported>>>);

/// What one peer last reported, and when its answer came.
struct Reported {
    at: DateTime<Utc>,
    hosts: Vec<HostView>,
}

impl PeerHosts {
    /// Keeps what `peer` reported just now.
    pub fn heard(&self, peer: &str, hosts: Vec<HostView>) {
        let reported = Reported {
            at: troupe_runtime::clock::now(),
            hosts,
        };
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer.to_owned(), reported);
    }

    /// The host `id` as `peer` last reported it, seen then; `None` when no report of it
    /// has named the host.
    pub fn get(&self, peer: &str, id: &str) -> Option<HostView> {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let reported = all.get(peer)?;
        let mut view = reported.hosts.iter().find(|h| h.spec.id == id)?.clone();
        view.seen_at = Some(reported.at);
        Some(view)
    }
}

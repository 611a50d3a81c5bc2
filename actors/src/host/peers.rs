//! The hosts the peers drive and their VMs' usage, as each peer's last heartbeat answer
//! reported them: what a host's driver and a VM's actor see is observed on its node, not
//! replicated, and travels with the beats, so a read of a peer's host or VM asks no peer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::HostView;
use crate::vm::VmStats;

#[derive(Clone, Default)]
pub struct PeerHosts(Arc<Mutex<HashMap<String, Reported>>>);

/// What one peer last reported, and when its answer came.
struct Reported {
    at: DateTime<Utc>,
    hosts: Vec<HostView>,
    vms: BTreeMap<String, VmStats>,
}

impl PeerHosts {
    /// Keeps what `peer` reported just now.
    pub fn heard(&self, peer: &str, hosts: Vec<HostView>, vms: BTreeMap<String, VmStats>) {
        let reported = Reported {
            at: troupe_runtime::clock::now(),
            hosts,
            vms,
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

    /// The last usage sample of VM `id` that `peer` reported (its `sampled_at` says when it
    /// was taken there).
    pub fn vm_stats(&self, peer: &str, id: &str) -> Option<VmStats> {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.get(peer)?.vms.get(id).copied()
    }
}

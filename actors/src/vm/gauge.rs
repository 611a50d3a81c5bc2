//! `troupe_vms{state}`: the VMs this node holds, by state, as its replica says. A projection
//! the state machine drives (see `troupe_runtime::store::Projection`), as the agents' gauge
//! is: a VM is held by the node that drives its host (one on no host, by the node its id or
//! its directory entry names), so the count follows each write of a VM's status and each
//! move of a host or a VM. A host that moved off this node while it was cut off or down
//! takes its VMs out of the count once the move is applied here; stopping and starting the
//! node's work (a fencing, a lease that lapsed) counts nothing twice.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use troupe_runtime::store::{Change, Projection, StoreError, Table, View};
use troupe_runtime::telemetry::StateCounts;

use super::{VmState, VmStatus};
use crate::cluster::directory::held_in;
use crate::tables::{DIRECTORY, VM_STATUS};

/// This node's VMs and how many are in each state.
pub(crate) struct VmGauge {
    node: String,
    held: Mutex<Held>,
}

struct Held {
    counts: StateCounts<VmState>,
    /// Every VM (this node's or not) and its host, so a VM's move or its host's finds it.
    host_of: HashMap<String, Option<String>>,
    on_host: HashMap<String, HashSet<String>>,
}

impl Held {
    /// Records VM `id` as the tables hold it now (`None`: gone).
    fn set(&mut self, id: &str, vm: Option<Seen>) {
        if let Some(old) = self.host_of.remove(id).flatten() {
            if let Some(vms) = self.on_host.get_mut(&old) {
                vms.remove(id);
                if vms.is_empty() {
                    self.on_host.remove(&old);
                }
            }
        }
        let Some((host, state)) = vm else {
            self.counts.set(id, None);
            return;
        };
        if let Some(host) = &host {
            self.on_host.entry(host.clone()).or_default().insert(id.to_owned());
        }
        self.host_of.insert(id.to_owned(), host);
        self.counts.set(id, state);
    }
}

/// A VM as the tables hold it: its host and, if this node holds it, its state.
type Seen = (Option<String>, Option<VmState>);

impl VmGauge {
    pub(crate) fn new(node: &str) -> Self {
        Self {
            node: node.to_owned(),
            held: Mutex::new(Held {
                counts: StateCounts::new("troupe_vms", VmState::name),
                host_of: HashMap::new(),
                on_host: HashMap::new(),
            }),
        }
    }

    /// VM `id` as `v` says, from its stored status (`None`: it has none).
    fn seen(&self, v: &View<'_>, id: &str, status: &[u8]) -> Result<Seen, StoreError> {
        let status: VmStatus = troupe_runtime::codec::decode(status)?;
        let holder = status.host.as_deref().unwrap_or(id);
        let here = held_in(v, holder, &self.node)?;
        Ok((status.host, here.then_some(status.state)))
    }
}

impl Projection for VmGauge {
    fn name(&self) -> &'static str {
        "VMs gauge"
    }

    fn tables(&self) -> &'static [Table] {
        &[VM_STATUS, DIRECTORY]
    }

    fn rebuild(&self, view: &View<'_>) -> Result<(), StoreError> {
        let mut now = Vec::new();
        view.scan(VM_STATUS, None, |id, bytes| {
            now.push((id.to_owned(), self.seen(view, id, bytes)?));
            Ok(true)
        })?;
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.counts.clear();
        held.host_of.clear();
        held.on_host.clear();
        for (id, seen) in now {
            held.set(&id, Some(seen));
        }
        Ok(())
    }

    fn apply(&self, change: &Change<'_>) -> Result<(), StoreError> {
        let mut ids: Vec<String> = change.keys_of(VM_STATUS).map(str::to_owned).collect();
        let moved: Vec<&str> = change.keys_of(DIRECTORY).collect();
        if !moved.is_empty() {
            // A moved VM, or every VM of a moved host.
            let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            for id in moved {
                if held.host_of.contains_key(id) {
                    ids.push(id.to_owned());
                }
                ids.extend(held.on_host.get(id).into_iter().flatten().cloned());
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        ids.sort_unstable();
        ids.dedup();
        // Read first, then change memory at once.
        let view = change.view()?;
        let mut now = Vec::with_capacity(ids.len());
        for id in ids {
            let seen = match view.get(VM_STATUS, &id)? {
                Some(status) => Some(self.seen(&view, &id, &status)?),
                None => None,
            };
            now.push((id, seen));
        }
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for (id, seen) in now {
            held.set(&id, seen);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use troupe_runtime::store::{Batch, Store};

    use super::*;
    use crate::cluster::directory::Placement;

    fn status(host: Option<&str>, state: VmState) -> Vec<u8> {
        let mut s = VmStatus::new(host.map(str::to_owned));
        s.state = state;
        troupe_runtime::codec::encode(&s).unwrap()
    }

    fn placed(node: &str) -> Vec<u8> {
        troupe_runtime::codec::encode(&Placement {
            node: node.into(),
            epoch: 1,
        })
        .unwrap()
    }

    fn counts(gauge: &VmGauge) -> std::collections::BTreeMap<&'static str, i64> {
        gauge.held.lock().unwrap().counts.counts()
    }

    #[tokio::test]
    async fn it_counts_the_vms_of_the_hosts_held_here_as_hosts_move_and_as_a_rebuild_does() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let batch = Batch::new()
            .put(VM_STATUS, "v1@x", status(Some("h1@x"), VmState::Running))
            .put(VM_STATUS, "v2@x", status(Some("h2@x"), VmState::Running))
            .put(VM_STATUS, "v3@y", status(Some("h3@y"), VmState::Stopped))
            // Not placed yet: held where its id says.
            .put(VM_STATUS, "v4@x", status(None, VmState::Pending))
            // h2 moved off x while x was away.
            .put(DIRECTORY, "h2@x", placed("y"));
        store.write(batch).await.unwrap();
        let gauge = Arc::new(VmGauge::new("x"));
        store.project(gauge.clone()).await.unwrap();
        assert_eq!(counts(&gauge), [("RUNNING", 1), ("PENDING", 1)].into());
        // A host moves here with its VM, one moves away with its; a VM is placed on a host
        // held elsewhere.
        let batch = Batch::new()
            .put(DIRECTORY, "h3@y", placed("x"))
            .put(DIRECTORY, "h1@x", placed("y"))
            .put(VM_STATUS, "v4@x", status(Some("h2@x"), VmState::Running));
        store.write(batch).await.unwrap();
        assert_eq!(counts(&gauge), [("STOPPED", 1)].into());
        // A VM migrates onto the host held here; one is deleted; a write that touches no VM
        // changes nothing.
        let batch = Batch::new()
            .put(VM_STATUS, "v2@x", status(Some("h3@y"), VmState::Running))
            .delete(VM_STATUS, "v3@y")
            .put(DIRECTORY, "agent@y", placed("x"));
        store.write(batch).await.unwrap();
        assert_eq!(counts(&gauge), [("RUNNING", 1)].into());
        // What followed the writes is what a rebuild from the tables finds.
        let rebuilt = Arc::new(VmGauge::new("x"));
        store.project(rebuilt.clone()).await.unwrap();
        assert_eq!(counts(&rebuilt), counts(&gauge));
    }
}

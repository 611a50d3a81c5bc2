//! This node's hosts as one registry: their specs, links and libvirt sessions, the drivers
//! running them, and the allocation ledger placement claims from. One lock guards it all and
//! is never held across an await, so a placement and its claim are one step: concurrent
//! creates never over-commit a host.

mod claims;
mod entry;
mod states;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ractor::ActorRef;
use tokio::sync::{watch, Semaphore};
use troupe_runtime::store::Store;
use troupe_runtime::supervision::SupervisorMsg;

use super::link::Link;
use super::{DrainProgress, HostMsg, HostSpec, HostState, HostView, Libvirt, Listed};
use crate::error::ApiError;
use crate::placement::Load;
use crate::slots::Slot;
use claims::Claim;
use entry::HostEntry;

/// The settings of hosts and VMs (see deploy/troupe.toml).
#[derive(Debug, Clone)]
pub struct FleetSettings {
    pub reconcile: Duration,
    pub down_after: Duration,
    pub max_outbound: usize,
    pub stop_timeout: Duration,
    /// The most one libvirt call may take.
    pub libvirt_timeout: Duration,
    pub fault_injection: bool,
    pub data_dir: PathBuf,
}

#[derive(Default)]
struct Inner {
    hosts: BTreeMap<String, HostEntry>,
    /// Claims by VM id: one, or two while the VM migrates.
    claims: HashMap<String, Vec<Claim>>,
    /// Each VM's last usage sample, by VM id: observed, not replicated; it travels with the
    /// node's beats (dropped with the VM's last claim).
    stats: HashMap<String, crate::vm::VmStats>,
}

pub struct Fleet {
    pub node: String,
    pub store: Store,
    pub settings: FleetSettings,
    pub supervisor: Slot<SupervisorMsg>,
    inner: Mutex<Inner>,
}

impl Fleet {
    pub fn new(node: String, store: Store, settings: FleetSettings) -> Arc<Self> {
        Arc::new(Self {
            node,
            store,
            settings,
            supervisor: Slot::default(),
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a host (at start-up or addHost); its link is unknown until its driver connects.
    pub fn register(&self, spec: HostSpec) {
        let now = troupe_runtime::clock::now();
        let max = self.settings.max_outbound;
        let mut inner = self.lock();
        let id = spec.id.clone();
        let entry = inner.hosts.entry(id).or_insert_with(|| HostEntry {
            spec: spec.clone(),
            link: Link::Unreachable { since: now },
            since: now,
            capacity: None,
            load: Load::default(),
            domains: HashSet::new(),
            driver: None,
            libvirt: None,
            outbound: Arc::new(Semaphore::new(max)),
            outbound_max: max,
            drain: None,
            last_error: Some("not connected yet".into()),
            removing: false,
            looked: watch::channel(false).0,
            listed: None,
        });
        entry.spec = spec;
    }

    /// Notes that the host's driver has tried to connect once (whatever came of it).
    pub fn looked(&self, host: &str) {
        if let Some(e) = self.lock().hosts.get(host) {
            e.looked.send_replace(true);
        }
    }

    /// Waits until the driver of each of `hosts` has tried to connect once, at most `within`:
    /// a driver starts without waiting for its host, and its first look decides whether the
    /// host is UP.
    pub async fn first_looks(&self, hosts: &[String], within: Duration) {
        let looks: Vec<watch::Receiver<bool>> = {
            let inner = self.lock();
            hosts
                .iter()
                .filter_map(|h| inner.hosts.get(h).map(|e| e.looked.subscribe()))
                .collect()
        };
        let all = futures::future::join_all(looks.into_iter().map(|mut look| async move {
            // An error means the host was removed meanwhile: nothing to wait for.
            let _ = look.wait_for(|looked| *looked).await;
        }));
        let _ = tokio::time::timeout(within, all).await;
    }

    pub fn unregister(&self, host: &str) -> Option<Libvirt> {
        let mut inner = self.lock();
        inner.claims.retain(|_, claims| {
            claims.retain(|c| c.host != host);
            !claims.is_empty()
        });
        let gone = inner.hosts.remove(host)?;
        claims::no_ratios(&gone);
        gone.libvirt
    }

    /// Closes the host to placement for its removal, and answers the VMs with a claim on it
    /// (its own, and any being created on it or migrating to it), in one step: no claim on
    /// it is made after this.
    pub fn close_for_removal(&self, host: &str) -> Vec<String> {
        let mut inner = self.lock();
        let Some(e) = inner.hosts.get_mut(host) else {
            return Vec::new();
        };
        e.removing = true;
        let mut claimed: Vec<String> = inner
            .claims
            .iter()
            .filter(|(_, claims)| claims.iter().any(|c| c.host == host))
            .map(|(vm, _)| vm.clone())
            .collect();
        claimed.sort();
        claimed
    }

    /// Opens a host closed by a removal that did not happen.
    pub fn reopen(&self, host: &str) {
        if let Some(e) = self.lock().hosts.get_mut(host) {
            e.removing = false;
        }
    }

    /// Drops the hosts that the replicated directory says another node holds now, with
    /// their VMs' claims: registered from this node's replica at its start, before it had
    /// heard that they moved off it while it was down.
    pub async fn forget_moved_away(&self) -> Result<(), troupe_runtime::store::StoreError> {
        let (ids, node) = (self.host_ids(), self.node.clone());
        let gone = self
            .store
            .view(move |v| {
                let mut gone = Vec::new();
                for id in ids {
                    if !crate::cluster::directory::held_in(v, &id, &node)? {
                        gone.push(id);
                    }
                }
                Ok(gone)
            })
            .await?;
        for id in gone {
            tracing::info!(host = %id, "not driving a host that moved off this node");
            self.unregister(&id);
        }
        Ok(())
    }

    pub fn host_ids(&self) -> Vec<String> {
        self.lock().hosts.keys().cloned().collect()
    }

    pub fn spec(&self, host: &str) -> Option<HostSpec> {
        self.lock().hosts.get(host).map(|e| e.spec.clone())
    }

    pub fn view(&self, host: &str) -> Option<HostView> {
        self.lock().hosts.get(host).map(HostEntry::view)
    }

    pub fn views(&self) -> Vec<HostView> {
        self.lock().hosts.values().map(HostEntry::view).collect()
    }

    /// Keeps a VM's usage sample, while the VM holds a claim here.
    pub fn sampled(&self, vm: &str, stats: crate::vm::VmStats) {
        let mut inner = self.lock();
        if inner.claims.contains_key(vm) {
            inner.stats.insert(vm.to_owned(), stats);
        }
    }

    /// The last usage sample of each VM of this node's hosts.
    pub fn samples(&self) -> BTreeMap<String, crate::vm::VmStats> {
        self.lock().stats.iter().map(|(id, s)| (id.clone(), *s)).collect()
    }

    /// The host of this node with this id, name or `name@node` ([`HostSpec::qualified_name`]),
    /// or NOT_FOUND; INVALID_INPUT when the name is two hosts' (a simulated host moved here
    /// beside this node's own `sim-1`…), naming each.
    pub fn find(&self, host: &str) -> Result<String, ApiError> {
        let inner = self.lock();
        if inner.hosts.contains_key(host) {
            return Ok(host.to_owned());
        }
        let named: Vec<&HostSpec> = inner
            .hosts
            .values()
            .map(|e| &e.spec)
            .filter(|s| s.name == host || s.qualified_name() == host)
            .collect();
        match named.as_slice() {
            [one] => Ok(one.id.clone()),
            [] => Err(ApiError::NotFound(format!("no host {host} on node {}", self.node))),
            many => Err(ApiError::invalid(format!(
                "{host} names {} hosts on node {}: say which, as one of {}",
                many.len(),
                self.node,
                many.iter().map(|s| s.qualified_name()).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// [`Fleet::view`], or NOT_FOUND.
    pub fn host_view(&self, host: &str) -> Result<HostView, ApiError> {
        self.view(host)
            .ok_or_else(|| ApiError::NotFound(format!("no host {host}")))
    }

    pub fn state(&self, host: &str) -> Option<HostState> {
        self.lock().hosts.get(host).map(HostEntry::state)
    }

    pub fn link(&self, host: &str) -> Option<Link> {
        self.lock().hosts.get(host).map(|e| e.link)
    }

    pub fn driver(&self, host: &str) -> Result<ActorRef<HostMsg>, ApiError> {
        self.lock()
            .hosts
            .get(host)
            .and_then(|e| e.driver.clone())
            .ok_or_else(|| ApiError::Unavailable(format!("the driver of host {host} is not running")))
    }

    pub fn set_driver(&self, host: &str, driver: ActorRef<HostMsg>) {
        if let Some(e) = self.lock().hosts.get_mut(host) {
            e.driver = Some(driver);
        }
    }

    pub fn libvirt(&self, host: &str) -> Option<Libvirt> {
        self.lock().hosts.get(host).and_then(|e| e.libvirt.clone())
    }

    pub fn set_libvirt(&self, host: &str, libvirt: Libvirt) {
        if let Some(e) = self.lock().hosts.get_mut(host) {
            e.libvirt = Some(libvirt);
        }
    }

    pub fn outbound(&self, host: &str) -> Option<Arc<Semaphore>> {
        self.lock().hosts.get(host).map(|e| e.outbound.clone())
    }

    /// Keeps the domains the host's driver listed just now: what a peer's read of the host's
    /// domains shows, carried by this node's beats.
    pub fn listed(&self, host: &str, listed: Listed) {
        if let Some(e) = self.lock().hosts.get_mut(host) {
            e.listed = Some(listed);
        }
    }

    pub fn note_error(&self, host: &str, error: String) {
        if let Some(e) = self.lock().hosts.get_mut(host) {
            e.last_error = Some(error);
        }
    }

    pub fn set_drain(&self, host: &str, drain: Option<DrainProgress>) {
        if let Some(e) = self.lock().hosts.get_mut(host) {
            e.drain = drain;
        }
    }
}

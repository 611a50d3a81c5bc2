//! This node's hosts as one registry: their specs, links and libvirt sessions, the drivers
//! running them, and the allocation ledger placement claims from. One lock guards it all and
//! is never held across an await, so a placement and its claim are one step: concurrent
//! creates never over-commit a host.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::ActorRef;
use serde_json::json;
use tokio::sync::Semaphore;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{Batch, Store};
use troupe_runtime::supervision::SupervisorMsg;

use super::{DrainProgress, HostMode, HostMsg, HostSpec, HostState, HostView, Libvirt, NodeCapacity};
use crate::error::ApiError;
use crate::placement::{self, Ask, Candidate, Load};
use crate::slots::Slot;
use crate::vm::VmSpec;

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

/// Whether the driver can talk to the host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Link {
    Up,
    Unreachable { since: DateTime<Utc> },
    Down { since: DateTime<Utc> },
}

struct HostEntry {
    spec: HostSpec,
    link: Link,
    since: DateTime<Utc>,
    capacity: Option<NodeCapacity>,
    load: Load,
    /// Domains the ledger expects on this host (its VMs, and VMs migrating in).
    domains: HashSet<String>,
    driver: Option<ActorRef<HostMsg>>,
    /// Kept across driver restarts: a simulated host's domains live in it.
    libvirt: Option<Libvirt>,
    outbound: Arc<Semaphore>,
    outbound_max: usize,
    drain: Option<DrainProgress>,
    last_error: Option<String>,
    /// Being removed: closed to placement, so no VM is created on it or moved to it.
    removing: bool,
}

impl HostEntry {
    fn state(&self) -> HostState {
        match self.link {
            Link::Unreachable { .. } => HostState::Unreachable,
            Link::Down { .. } => HostState::Down,
            Link::Up => match self.spec.mode {
                HostMode::Active => HostState::Up,
                HostMode::Draining => HostState::Draining,
                HostMode::Maintenance => HostState::Maintenance,
            },
        }
    }

    fn candidate(&self) -> Candidate<'_> {
        let refuses = match (self.state(), self.capacity) {
            _ if self.removing => Some("host is being removed"),
            (_, None) => Some("its capacity is not known yet (never connected)"),
            (HostState::Up, _) => None,
            (HostState::Draining, _) => Some("host is DRAINING"),
            (HostState::Maintenance, _) => Some("host is in MAINTENANCE"),
            (HostState::Unreachable, _) => Some("host is UNREACHABLE"),
            (HostState::Down, _) => Some("host is DOWN"),
        };
        let capacity = self.capacity.unwrap_or(NodeCapacity { cpus: 0, memory_mib: 0 });
        Candidate {
            id: &self.spec.id,
            name: &self.spec.name,
            refuses,
            cpus: capacity.cpus,
            memory_mib: capacity.memory_mib,
            overcommit: self.spec.overcommit,
            reserved_memory_mib: self.spec.reserved_memory_mib,
            labels: &self.spec.labels,
            load: &self.load,
        }
    }

    fn view(&self) -> HostView {
        let c = self.candidate();
        HostView {
            spec: self.spec.clone(),
            state: self.state(),
            since: self.since,
            capacity: self.capacity,
            allocated_vcpus: self.load.vcpus,
            allocated_memory_mib: self.load.memory_mib,
            vcpu_limit: c.cpu_limit(),
            memory_limit_mib: c.memory_limit(),
            vms: self.load.vms,
            last_error: self.last_error.clone(),
            drain: self.drain.clone(),
            outbound_migrations: (self.outbound_limit() - self.outbound.available_permits()) as u32,
        }
    }

    fn outbound_limit(&self) -> usize {
        self.outbound_max
    }
}

/// A VM's claim on a host.
#[derive(Debug, Clone)]
struct Claim {
    host: String,
    vcpus: u32,
    memory_mib: u64,
    group: Option<String>,
    domain: String,
}

#[derive(Default)]
struct Inner {
    hosts: BTreeMap<String, HostEntry>,
    /// Claims by VM id: one, or two while the VM migrates.
    claims: HashMap<String, Vec<Claim>>,
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
        });
        entry.spec = spec;
    }

    pub fn unregister(&self, host: &str) -> Option<Libvirt> {
        let mut inner = self.lock();
        inner.claims.retain(|_, claims| {
            claims.retain(|c| c.host != host);
            !claims.is_empty()
        });
        inner.hosts.remove(host).and_then(|e| e.libvirt)
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

    /// The host with this id or name.
    pub fn resolve(&self, host: &str) -> Option<String> {
        let inner = self.lock();
        if inner.hosts.contains_key(host) {
            return Some(host.to_owned());
        }
        inner
            .hosts
            .values()
            .find(|e| e.spec.name == host)
            .map(|e| e.spec.id.clone())
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

    /// Changes the host's link; records the state change (HOST_UP, HOST_UNREACHABLE, HOST_DOWN)
    /// when there is one.
    pub async fn set_link(
        &self,
        host: &str,
        link: Link,
        capacity: Option<NodeCapacity>,
        error: Option<String>,
    ) -> Result<(), ApiError> {
        let change = {
            let mut inner = self.lock();
            let Some(e) = inner.hosts.get_mut(host) else {
                return Ok(());
            };
            let before = e.state();
            e.link = link;
            if capacity.is_some() {
                e.capacity = capacity;
            }
            if link == Link::Up {
                e.last_error = None;
            } else if error.is_some() {
                e.last_error = error.clone();
            }
            let after = e.state();
            (before != after).then(|| {
                e.since = troupe_runtime::clock::now();
                (e.spec.name.clone(), before, after)
            })
        };
        if let Some((name, before, after)) = change {
            self.host_event(host, &name, before, after, json!({ "error": error }))
                .await?;
        }
        Ok(())
    }

    /// Changes the host's mode, durably, recording the state change.
    pub async fn set_mode(&self, host: &str, mode: HostMode) -> Result<HostView, ApiError> {
        self.set_mode_from(host, None, mode).await
    }

    /// Records a drain's progress, unless the drain was called off (the host is no longer
    /// DRAINING).
    pub fn drain_progress(&self, host: &str, drain: DrainProgress) {
        if let Some(e) = self.lock().hosts.get_mut(host) {
            if e.spec.mode == HostMode::Draining {
                e.drain = Some(drain);
            }
        }
    }

    /// Ends a drain: the host enters MAINTENANCE if every VM moved and it is still DRAINING.
    /// A drain called off meanwhile (`setHostMaintenance(false)`) leaves the host UP.
    /// Either way the end is a `HOST_DRAIN_ENDED` event naming the state the host is left in.
    pub async fn finish_drain(&self, host: &str, drain: DrainProgress) -> Result<(), ApiError> {
        let moved_all = drain.failed == 0;
        self.drain_progress(host, drain.clone());
        let view = if moved_all {
            self.set_mode_from(host, Some(HostMode::Draining), HostMode::Maintenance)
                .await?
        } else {
            self.view(host)
                .ok_or_else(|| ApiError::NotFound(format!("no host {host}")))?
        };
        let event = NewEvent::new(
            "HOST_DRAIN_ENDED",
            Some(host.to_owned()),
            json!({ "name": view.spec.name, "total": drain.total, "moved": drain.moved, "failed": drain.failed,
                    "state": view.state.name() }),
        );
        self.store.write(Batch::new().event(event)).await?;
        Ok(())
    }

    /// [`Fleet::set_mode`], only from mode `from` when given (else nothing changes).
    async fn set_mode_from(&self, host: &str, from: Option<HostMode>, mode: HostMode) -> Result<HostView, ApiError> {
        let (spec, change) = {
            let mut inner = self.lock();
            let e = inner
                .hosts
                .get_mut(host)
                .ok_or_else(|| ApiError::NotFound(format!("no host {host}")))?;
            if from.is_some_and(|from| e.spec.mode != from) {
                return Ok(e.view());
            }
            let before = e.state();
            e.spec.mode = mode;
            if mode != HostMode::Draining {
                e.drain = e.drain.take().filter(|d| d.done);
            }
            let after = e.state();
            if before != after {
                e.since = troupe_runtime::clock::now();
            }
            (e.spec.clone(), (before != after).then_some((before, after)))
        };
        let mut batch = Batch::new().put(crate::tables::HOSTS, host, troupe_runtime::codec::encode(&spec)?);
        if let Some((before, after)) = change {
            batch = batch.event(host_event(
                host,
                &spec.name,
                before,
                after,
                json!({ "mode": format!("{mode:?}") }),
            ));
        }
        self.store.write(batch).await?;
        self.view(host)
            .ok_or_else(|| ApiError::NotFound(format!("no host {host}")))
    }

    async fn host_event(
        &self,
        host: &str,
        name: &str,
        before: HostState,
        after: HostState,
        data: serde_json::Value,
    ) -> Result<(), ApiError> {
        tracing::info!(host = %name, from = before.name(), to = after.name(), "host state changed");
        self.store
            .write(Batch::new().event(host_event(host, name, before, after, data)))
            .await?;
        Ok(())
    }

    /// Places a VM and claims its share of the host in one step. `only` restricts the choice
    /// to one host; `exclude` leaves one out (a migration's source).
    pub fn claim(&self, vm: &VmSpec, only: Option<&str>, exclude: Option<&str>) -> Result<String, ApiError> {
        let mut inner = self.lock();
        let chosen = {
            let entries: Vec<&HostEntry> = inner
                .hosts
                .values()
                .filter(|e| only.is_none_or(|h| e.spec.id == h) && exclude.is_none_or(|h| e.spec.id != h))
                .collect();
            if let Some(h) = only {
                if entries.is_empty() {
                    return Err(ApiError::NotFound(format!("no host {h} on node {}", self.node)));
                }
            }
            let candidates: Vec<Candidate<'_>> = entries.iter().map(|e| e.candidate()).collect();
            let ask = Ask {
                vcpus: vm.vcpus,
                memory_mib: vm.memory_mib,
                selector: &vm.host_selector,
                group: vm.anti_affinity_group.as_deref(),
                weigher: vm.weigher,
            };
            let i = placement::place(&ask, &candidates).map_err(|e| ApiError::NoValidHost(e.to_string()))?;
            entries[i].spec.id.clone()
        };
        let claim = Claim {
            host: chosen.clone(),
            vcpus: vm.vcpus,
            memory_mib: vm.memory_mib,
            group: vm.anti_affinity_group.clone(),
            domain: vm.domain.clone(),
        };
        add(&mut inner, &vm.id, claim);
        Ok(chosen)
    }

    /// Records a VM's existing claim on its host (start-up, adoption), whatever its room.
    pub fn restore_claim(&self, vm: &VmSpec, host: &str) {
        let mut inner = self.lock();
        if !inner.hosts.contains_key(host) {
            return;
        }
        let claim = Claim {
            host: host.to_owned(),
            vcpus: vm.vcpus,
            memory_mib: vm.memory_mib,
            group: vm.anti_affinity_group.clone(),
            domain: vm.domain.clone(),
        };
        add(&mut inner, &vm.id, claim);
    }

    /// Gives back a VM's claim on `host`.
    pub fn release(&self, vm: &str, host: &str) {
        let mut inner = self.lock();
        let Some(claims) = inner.claims.get_mut(vm) else {
            return;
        };
        let Some(i) = claims.iter().position(|c| c.host == host) else {
            return;
        };
        let claim = claims.remove(i);
        if claims.is_empty() {
            inner.claims.remove(vm);
        }
        if let Some(e) = inner.hosts.get_mut(host) {
            e.load.remove(claim.vcpus, claim.memory_mib, claim.group.as_deref());
            e.domains.remove(&claim.domain);
            ratios(e);
        }
    }

    /// Whether the ledger expects this domain on this host (a VM of it, or one migrating in).
    pub fn expects(&self, host: &str, domain: &str) -> bool {
        self.lock().hosts.get(host).is_some_and(|e| e.domains.contains(domain))
    }

    /// The hosts with a claim of this VM.
    pub fn claims_of(&self, vm: &str) -> Vec<String> {
        self.lock()
            .claims
            .get(vm)
            .map(|c| c.iter().map(|c| c.host.clone()).collect())
            .unwrap_or_default()
    }
}

fn add(inner: &mut Inner, vm: &str, claim: Claim) {
    if let Some(e) = inner.hosts.get_mut(&claim.host) {
        e.load.add(claim.vcpus, claim.memory_mib, claim.group.as_deref());
        e.domains.insert(claim.domain.clone());
        ratios(e);
    }
    inner.claims.entry(vm.to_owned()).or_default().push(claim);
}

/// `troupe_host_allocation_ratio{host,resource}`: what is promised over what may be.
fn ratios(e: &HostEntry) {
    let c = e.candidate();
    let ratio = |used: u64, limit: u64| if limit == 0 { 0.0 } else { used as f64 / limit as f64 };
    metrics::gauge!("troupe_host_allocation_ratio", "host" => e.spec.name.clone(), "resource" => "cpu")
        .set(ratio(e.load.vcpus, c.cpu_limit()));
    metrics::gauge!("troupe_host_allocation_ratio", "host" => e.spec.name.clone(), "resource" => "memory")
        .set(ratio(e.load.memory_mib, c.memory_limit()));
}

pub(crate) fn host_event(
    host: &str,
    name: &str,
    before: HostState,
    after: HostState,
    mut data: serde_json::Value,
) -> NewEvent {
    if let Some(map) = data.as_object_mut() {
        map.insert("name".into(), json!(name));
        map.insert("from".into(), json!(before.name()));
        map.insert("to".into(), json!(after.name()));
    }
    NewEvent::new(format!("HOST_{}", after.name()), Some(host.to_owned()), data)
}

//! One host as the fleet knows it: its spec, link, capacity and load, and what placement and
//! the API see of it.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ractor::ActorRef;
use tokio::sync::{watch, Semaphore};

use super::super::link::Link;
use super::super::{DrainProgress, HostMode, HostMsg, HostSpec, HostState, HostView, Libvirt, Listed, NodeCapacity};
use crate::placement::{Candidate, Load};

pub(super) struct HostEntry {
    pub(super) spec: HostSpec,
    pub(super) link: Link,
    pub(super) since: DateTime<Utc>,
    pub(super) capacity: Option<NodeCapacity>,
    pub(super) load: Load,
    /// Domains the ledger expects on this host (its VMs, and VMs migrating in).
    pub(super) domains: HashSet<String>,
    pub(super) driver: Option<ActorRef<HostMsg>>,
    /// Kept across driver restarts: a simulated host's domains live in it.
    pub(super) libvirt: Option<Libvirt>,
    pub(super) outbound: Arc<Semaphore>,
    pub(super) outbound_max: usize,
    pub(super) drain: Option<DrainProgress>,
    pub(super) last_error: Option<String>,
    /// Being removed: closed to placement, so no VM is created on it or moved to it.
    pub(super) removing: bool,
    /// Whether the driver has tried to connect once since the host was registered.
    pub(super) looked: watch::Sender<bool>,
    /// The domains the driver listed last, and when.
    pub(super) listed: Option<Listed>,
}

impl HostEntry {
    pub(super) fn state(&self) -> HostState {
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

    pub(super) fn candidate(&self) -> Candidate<'_> {
        let refuses = match self.removing {
            true => Some("host is being removed"),
            false => self.state().refuses_vms(self.capacity.is_some()),
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

    pub(super) fn view(&self) -> HostView {
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
            seen_at: Some(troupe_runtime::clock::now()),
            listed: self.listed.clone(),
        }
    }

    pub(super) fn outbound_limit(&self) -> usize {
        self.outbound_max
    }
}

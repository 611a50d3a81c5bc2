//! The allocation ledger: placing a VM and claiming its share of a host in one step, and
//! giving claims back.

use super::entry::HostEntry;
use super::{Fleet, Inner};
use crate::error::ApiError;
use crate::placement::{self, Ask, Candidate};
use crate::vm::VmSpec;

/// A VM's claim on a host.
#[derive(Debug, Clone)]
pub(super) struct Claim {
    pub(super) host: String,
    pub(super) vcpus: u32,
    pub(super) memory_mib: u64,
    pub(super) group: Option<String>,
    pub(super) domain: String,
}

impl Fleet {
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
            inner.stats.remove(vm);
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

/// `troupe_host_allocation_ratio{host,resource}`: what is promised over what may be, each
/// host by its qualified name (`sim-1@beta`: every node has a `sim-1`). Set as claims come
/// and go and as the host's capacity becomes known.
pub(super) fn ratios(e: &HostEntry) {
    let c = e.candidate();
    let ratio = |used: u64, limit: u64| if limit == 0 { 0.0 } else { used as f64 / limit as f64 };
    let host = e.spec.qualified_name();
    metrics::gauge!("troupe_host_allocation_ratio", "host" => host.clone(), "resource" => "cpu")
        .set(ratio(e.load.vcpus, c.cpu_limit()));
    metrics::gauge!("troupe_host_allocation_ratio", "host" => host, "resource" => "memory")
        .set(ratio(e.load.memory_mib, c.memory_limit()));
}

/// Sets a host that this node no longer drives to 0 (the exporter cannot drop a series).
pub(super) fn no_ratios(e: &HostEntry) {
    let host = e.spec.qualified_name();
    for resource in ["cpu", "memory"] {
        metrics::gauge!("troupe_host_allocation_ratio", "host" => host.clone(), "resource" => resource).set(0.0);
    }
}

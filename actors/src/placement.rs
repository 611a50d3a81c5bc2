//! Placement: which host takes a VM. Pure code: filters reject hosts (each with its reason),
//! then a weigher orders the ones left. The caller holds the allocation ledger's lock while it
//! places and claims, so concurrent creates never over-commit a host.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// How the hosts that fit are ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Weigher {
    /// The host with the most room left (by the scarcer of CPU and memory) first.
    #[default]
    Spread,
    /// The host with the least room left first: fill hosts before using new ones.
    Pack,
}

/// How far a host's CPUs and memory may be promised beyond what it has.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Overcommit {
    pub cpu: f64,
    pub memory: f64,
}

impl Default for Overcommit {
    fn default() -> Self {
        Self { cpu: 16.0, memory: 1.5 }
    }
}

/// What a VM asks of a host.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub vcpus: u32,
    pub memory_mib: u64,
    pub selector: &'a BTreeMap<String, String>,
    pub group: Option<&'a str>,
    pub weigher: Weigher,
}

/// A host as the placer sees it.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub id: &'a str,
    pub name: &'a str,
    /// Whether it takes new VMs (UP, not draining, not in maintenance); else why not.
    pub refuses: Option<&'a str>,
    pub cpus: u32,
    pub memory_mib: u64,
    pub overcommit: Overcommit,
    pub reserved_memory_mib: u64,
    pub labels: &'a BTreeMap<String, String>,
    pub load: &'a Load,
}

/// What a host has promised to its VMs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Load {
    pub vcpus: u64,
    pub memory_mib: u64,
    /// VMs per anti-affinity group.
    pub groups: HashMap<String, u32>,
    pub vms: u32,
}

impl Load {
    pub fn add(&mut self, vcpus: u32, memory_mib: u64, group: Option<&str>) {
        self.vcpus += u64::from(vcpus);
        self.memory_mib += memory_mib;
        self.vms += 1;
        if let Some(g) = group {
            *self.groups.entry(g.to_owned()).or_default() += 1;
        }
    }

    pub fn remove(&mut self, vcpus: u32, memory_mib: u64, group: Option<&str>) {
        self.vcpus = self.vcpus.saturating_sub(u64::from(vcpus));
        self.memory_mib = self.memory_mib.saturating_sub(memory_mib);
        self.vms = self.vms.saturating_sub(1);
        if let Some(g) = group {
            if let Some(n) = self.groups.get_mut(g) {
                *n -= 1;
                if *n == 0 {
                    self.groups.remove(g);
                }
            }
        }
    }
}

impl Candidate<'_> {
    /// vCPUs the host may promise in all.
    pub fn cpu_limit(&self) -> u64 {
        (f64::from(self.cpus) * self.overcommit.cpu).floor() as u64
    }

    /// MiB the host may promise in all: what it has less what it keeps for itself, times the
    /// memory ratio.
    pub fn memory_limit(&self) -> u64 {
        (self.memory_mib.saturating_sub(self.reserved_memory_mib) as f64 * self.overcommit.memory).floor() as u64
    }

    /// Why the host cannot take the VM, if it cannot.
    pub fn rejects(&self, ask: &Ask<'_>) -> Option<String> {
        if let Some(why) = self.refuses {
            return Some(why.to_owned());
        }
        for (k, v) in ask.selector {
            if self.labels.get(k) != Some(v) {
                return Some(format!("lacks label {k}={v}"));
            }
        }
        if let Some(g) = ask.group {
            if self.load.groups.contains_key(g) {
                return Some(format!("already holds a VM of anti-affinity group {g}"));
            }
        }
        let cpu_limit = self.cpu_limit();
        if self.load.vcpus + u64::from(ask.vcpus) > cpu_limit {
            return Some(format!(
                "not enough CPU: {} of {cpu_limit} vCPUs promised, {} asked",
                self.load.vcpus, ask.vcpus
            ));
        }
        let memory_limit = self.memory_limit();
        if self.load.memory_mib + ask.memory_mib > memory_limit {
            return Some(format!(
                "not enough memory: {} of {memory_limit} MiB promised, {} asked",
                self.load.memory_mib, ask.memory_mib
            ));
        }
        None
    }

    /// The share of the scarcer resource still free after taking `ask` (0..1).
    fn room_after(&self, ask: &Ask<'_>) -> f64 {
        let free = |used: u64, limit: u64| {
            if limit == 0 {
                0.0
            } else {
                1.0 - used as f64 / limit as f64
            }
        };
        free(self.load.vcpus + u64::from(ask.vcpus), self.cpu_limit())
            .min(free(self.load.memory_mib + ask.memory_mib, self.memory_limit()))
    }
}

/// No host fits: each host with why it was rejected.
#[derive(Debug, Clone, PartialEq)]
pub struct NoValidHost(pub Vec<(String, String)>);

impl std::fmt::Display for NoValidHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return write!(f, "no valid host: this node has no hosts");
        }
        write!(f, "no valid host:")?;
        for (i, (host, why)) in self.0.iter().enumerate() {
            write!(f, "{} {host}: {why}", if i == 0 { "" } else { ";" })?;
        }
        Ok(())
    }
}

/// The index of the host that takes the VM.
pub fn place(ask: &Ask<'_>, hosts: &[Candidate<'_>]) -> Result<usize, NoValidHost> {
    let mut rejected = Vec::new();
    let mut best: Option<(usize, f64)> = None;
    for (i, host) in hosts.iter().enumerate() {
        if let Some(why) = host.rejects(ask) {
            rejected.push((host.name.to_owned(), why));
            continue;
        }
        let room = host.room_after(ask);
        let score = match ask.weigher {
            Weigher::Spread => room,
            Weigher::Pack => -room,
        };
        // Ties go to the first host in the caller's (id) order: placement is deterministic.
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i).ok_or(NoValidHost(rejected))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    struct Host {
        id: String,
        cpus: u32,
        memory_mib: u64,
        labels: BTreeMap<String, String>,
        load: Load,
        up: bool,
    }

    fn candidates(hosts: &[Host]) -> Vec<Candidate<'_>> {
        hosts
            .iter()
            .map(|h| Candidate {
                id: &h.id,
                name: &h.id,
                refuses: (!h.up).then_some("host is DOWN"),
                cpus: h.cpus,
                memory_mib: h.memory_mib,
                overcommit: Overcommit::default(),
                reserved_memory_mib: 512,
                labels: &h.labels,
                load: &h.load,
            })
            .collect()
    }

    fn host(id: &str, cpus: u32, memory_mib: u64) -> Host {
        Host {
            id: id.into(),
            cpus,
            memory_mib,
            labels: BTreeMap::new(),
            load: Load::default(),
            up: true,
        }
    }

    fn ask(vcpus: u32, memory_mib: u64, selector: &BTreeMap<String, String>) -> Ask<'_> {
        Ask {
            vcpus,
            memory_mib,
            selector,
            group: None,
            weigher: Weigher::Spread,
        }
    }

    #[test]
    fn spread_takes_the_emptiest_host_and_pack_the_fullest() {
        let none = BTreeMap::new();
        let mut hosts = vec![host("a", 8, 8192), host("b", 8, 8192)];
        hosts[0].load.add(4, 4096, None);
        assert_eq!(place(&ask(1, 512, &none), &candidates(&hosts)), Ok(1));
        let pack = Ask {
            weigher: Weigher::Pack,
            ..ask(1, 512, &none)
        };
        assert_eq!(place(&pack, &candidates(&hosts)), Ok(0));
    }

    #[test]
    fn no_fit_names_why_each_host_was_rejected() {
        let mut selector = BTreeMap::new();
        selector.insert("gpu".to_string(), "yes".to_string());
        let mut hosts = vec![host("a", 2, 2048), host("b", 2, 2048), host("c", 64, 65536)];
        hosts[1].up = false;
        hosts[0].labels.insert("gpu".into(), "yes".into());
        let err = place(&ask(1, 4096, &selector), &candidates(&hosts)).unwrap_err();
        assert_eq!(err.0.len(), 3);
        assert!(err.0[0].1.contains("not enough memory"), "{err}");
        assert_eq!(err.0[1].1, "host is DOWN");
        assert_eq!(err.0[2].1, "lacks label gpu=yes");
        assert!(
            err.to_string().starts_with("no valid host: a: not enough memory"),
            "{err}"
        );
    }

    #[test]
    fn overcommit_ratios_and_reserved_memory_set_the_limits() {
        let hosts = [host("a", 4, 2048 + 512)];
        let c = candidates(&hosts);
        assert_eq!(c[0].cpu_limit(), 64);
        assert_eq!(c[0].memory_limit(), 3072);
    }

    proptest! {
        #[test]
        fn placing_never_over_commits_and_never_pairs_an_anti_affinity_group(
            shapes in prop::collection::vec((1u32..32, 1024u64..65536), 1..6),
            asks in prop::collection::vec((1u32..16, 16u64..8192, prop::option::of(0u8..4), any::<bool>()), 1..300),
        ) {
            let mut hosts: Vec<Host> = shapes
                .iter()
                .enumerate()
                .map(|(i, &(cpus, memory_mib))| host(&format!("h{i}"), cpus, memory_mib))
                .collect();
            let none = BTreeMap::new();
            for (vcpus, memory_mib, group, pack) in asks {
                let group = group.map(|g| format!("g{g}"));
                let want = Ask {
                    group: group.as_deref(),
                    weigher: if pack { Weigher::Pack } else { Weigher::Spread },
                    ..ask(vcpus, memory_mib, &none)
                };
                let chosen = place(&want, &candidates(&hosts));
                if let Ok(i) = chosen {
                    hosts[i].load.add(vcpus, memory_mib, group.as_deref());
                } else {
                    // Refused only when truly no host fits.
                    prop_assert!(candidates(&hosts).iter().all(|c| c.rejects(&want).is_some()));
                }
            }
            for c in candidates(&hosts) {
                prop_assert!(c.load.vcpus <= c.cpu_limit());
                prop_assert!(c.load.memory_mib <= c.memory_limit());
                prop_assert!(c.load.groups.values().all(|&n| n == 1));
            }
        }
    }
}

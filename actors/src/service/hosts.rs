//! The hosts service: hypervisor hosts, wherever they live, and the VMs service beside it
//! (`vms.rs`). A change to a host goes to the hosts service of the node whose driver holds
//! its connection; reads are answered here, from the replica and the beats.

mod vms;

use std::sync::Arc;
use std::time::Duration;

use troupe_runtime::supervision::Intensity;

use super::context::{keep, split, Context};
use super::listing::Listing;
use crate::cluster::remote::{service, At, Located, PEER_TIMEOUT};
use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::host::{AddHostRequest, Fault, Fleet, HostView, Listed};
pub use vms::{Vms, VmsRequest, VmsResponse};

service! {
    service Hosts as "hosts" (HostsMsg, HostsRequest, HostsResponse, HostsLocal);
    /// Adds a host to this node; its driver connects first.
    keyed Add => add(request: AddHostRequest) -> HostView, within Duration::from_secs(30) + PEER_TIMEOUT;
    /// Removes a host of this node; with `force`, its VMs go first (that may take a while).
    call Remove => remove(id: String, force: bool) -> HostView, within Duration::from_secs(15 * 60);
    call Drain => drain(id: String) -> HostView;
    call Maintenance => set_maintenance(id: String, enabled: bool) -> HostView;
    /// Injects a fault into a host or VM of this node.
    call Fault => inject_fault(target: String, fault: Fault) -> String, within Duration::from_secs(30) + PEER_TIMEOUT;
}

#[derive(Clone)]
pub struct Hosts {
    pub(crate) ctx: Arc<Context>,
    /// This node's hosts and their VMs' claims: the host room's state.
    pub(crate) fleet: Arc<Fleet>,
    /// The restart intensity of a host's driver.
    pub(crate) intensity: Intensity,
    /// The peers' hosts, as their beats reported them.
    pub(crate) peers: crate::host::PeerHosts,
}

impl Located for Hosts {
    fn cluster(&self) -> &Cluster {
        &self.ctx.cluster
    }
}

impl Hosts {
    /// Adds a host to this node, or to `request.node`.
    pub async fn add(&self, mut request: AddHostRequest, key: Option<String>) -> Result<HostView, ApiError> {
        request.validate()?;
        let node = request.node.take();
        At::on(self, node.as_deref()).add(request, key).await
    }

    pub async fn remove(&self, host: &str, force: bool) -> Result<HostView, ApiError> {
        let id = self.id_of(host).await?;
        At::holding(self, &id).remove(id, force).await
    }

    pub async fn drain(&self, host: &str) -> Result<HostView, ApiError> {
        let id = self.id_of(host).await?;
        At::holding(self, &id).drain(id).await
    }

    pub async fn set_maintenance(&self, host: &str, enabled: bool) -> Result<HostView, ApiError> {
        let id = self.id_of(host).await?;
        At::holding(self, &id).set_maintenance(id, enabled).await
    }

    /// The id of the host `host` names (its id, name or `name@node`), to route a call by:
    /// this node's own host first (a node's bare `sim-1` is its own), else the one the
    /// replica knows by that name, wherever its driver moved (routing by `sim-2@b` itself
    /// would ask node b, which may hold it no more). A name several hosts share is
    /// INVALID_INPUT naming each; one no host has is left as it is, for the holder to refuse.
    pub(crate) async fn id_of(&self, host: &str) -> Result<String, ApiError> {
        if let Ok(id) = self.fleet.find(host) {
            return Ok(id);
        }
        let found = one_named(host, self.read(Some(host)).await?)?;
        Ok(found.map_or_else(|| host.to_owned(), |h| h.spec.id))
    }

    /// A host by id, name or `name@node`, from this node's replica and the beats of the node
    /// that drives it (see [`Hosts::list`]); one not found is looked for again once this node
    /// has caught up with the cluster. A name two nodes' hosts share (simulated hosts are
    /// `sim-1`… on every node) is INVALID_INPUT naming each as `name@node`.
    pub async fn get(&self, id: &str) -> Result<Option<HostView>, ApiError> {
        let mut found = self.read(Some(id)).await?;
        if found.is_empty() {
            self.ctx.store.linearize().await?;
            found = self.read(Some(id)).await?;
        }
        one_named(id, found)
    }

    /// Every host of the cluster, in id order, asking no peer: the replicated records, with
    /// what each host's driver saw as its node reported it (now for this node's hosts, at
    /// that node's last beat for a peer's: `seen_at` says when).
    pub async fn list(&self) -> Result<Listing<HostView>, ApiError> {
        Ok(Listing::local(self.read(None).await?, false))
    }

    /// The hosts (the one named by `wanted`, id or name, or every one) with their holders'
    /// views of them.
    async fn read(&self, wanted: Option<&str>) -> Result<Vec<HostView>, ApiError> {
        let wanted = wanted.map(str::to_owned);
        let records = self
            .ctx
            .store
            .view(move |v| {
                let mut out = Vec::new();
                v.scan(crate::tables::HOSTS, None, |id, bytes| {
                    let spec: crate::host::HostSpec = troupe_runtime::codec::decode(bytes)?;
                    if wanted
                        .as_deref()
                        .is_none_or(|w| w == id || w == spec.name || w == spec.qualified_name())
                    {
                        let holder = crate::cluster::directory::placement_in(v, id)?.map(|p| p.node);
                        out.push((holder.unwrap_or_else(|| spec.node.clone()), spec));
                    }
                    Ok(true)
                })?;
                Ok(out)
            })
            .await?;
        let me = &self.ctx.node_name;
        Ok(records
            .into_iter()
            .map(|(holder, spec)| {
                let seen = match &holder == me {
                    true => self.fleet.view(&spec.id),
                    false => self.peers.get(&holder, &spec.id),
                };
                seen.unwrap_or_else(|| HostView::unreported(spec))
            })
            .collect())
    }

    /// Every domain libvirt lists on the host, Troupe's or not (not Troupe's records), and
    /// when it listed them: asked of libvirt now for a host this node drives; for a peer's,
    /// the last listing of its driver's reconcile sweep (every `vm_reconcile_ms`) as that
    /// node's last beat carried it, so the read asks no peer. UNAVAILABLE while the host's
    /// node has reported no listing of it (the driver has not reached the host yet).
    pub async fn domains(&self, host: &str) -> Result<Listed, ApiError> {
        if let Ok(id) = self.fleet.find(host) {
            let domains = crate::host::domains(&self.fleet, &id).await?;
            return Ok(Listed {
                at: troupe_runtime::clock::now(),
                domains,
            });
        }
        let view = self
            .get(host)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no host {host}")))?;
        view.listed.ok_or_else(|| {
            ApiError::Unavailable(format!(
                "the node that drives host {} has not reported its domains yet",
                view.spec.qualified_name()
            ))
        })
    }

    /// Whether this node holds the VM or host.
    pub fn holds(&self, id: &str) -> bool {
        self.ctx.cluster.holds(id)
    }

    pub fn stop_timeout(&self) -> Duration {
        self.fleet.settings.stop_timeout
    }

    /// Injects a fault (needs `--fault-injection`): `target` is a host for HOST_* faults and
    /// a VM for DOMAIN_* ones.
    pub async fn inject_fault(&self, target: &str, fault: Fault) -> Result<String, ApiError> {
        let target = self.id_of(target).await?;
        At::holding(self, &target).inject_fault(target, fault).await
    }
}

/// The one host `name` names, if any; INVALID_INPUT naming each when several share it.
fn one_named(name: &str, mut found: Vec<HostView>) -> Result<Option<HostView>, ApiError> {
    if found.len() > 1 {
        let names: Vec<String> = found.iter().map(|h| h.spec.qualified_name()).collect();
        return Err(ApiError::invalid(format!(
            "{name} names {} hosts: say which, as one of {}",
            found.len(),
            names.join(", ")
        )));
    }
    Ok(found.pop())
}

/// The hosts of this node: the service's serving and idempotency checks around the work of
/// `host/`.
impl HostsLocal for Hosts {
    // A peer's request is checked like a local one.
    async fn add(&self, request: AddHostRequest, key: Option<String>) -> Result<HostView, ApiError> {
        request.validate()?;
        self.ctx.ensure_serving()?;
        let guard = match split(self.ctx.claim("addHost", key.as_deref(), &request).await?) {
            Ok(guard) => guard,
            Err(id) => return self.fleet.host_view(&id),
        };
        let view = crate::host::add(&self.fleet, request, self.intensity, guard.as_ref()).await?;
        keep(&self.ctx.store, guard, &view.spec.id).await?;
        Ok(view)
    }

    async fn remove(&self, id: String, force: bool) -> Result<HostView, ApiError> {
        crate::host::remove(&self.fleet, &id, force).await
    }

    async fn drain(&self, id: String) -> Result<HostView, ApiError> {
        crate::host::drain(&self.fleet, &id).await
    }

    async fn set_maintenance(&self, id: String, enabled: bool) -> Result<HostView, ApiError> {
        crate::host::set_maintenance(&self.fleet, &id, enabled).await
    }

    async fn inject_fault(&self, target: String, fault: Fault) -> Result<String, ApiError> {
        crate::host::inject(&self.fleet, &target, fault).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer's stop may take the guest's whole shutdown wait: the call waits that long.
    #[test]
    fn a_peers_vm_stop_waits_for_the_guest_and_plain_reads_do_not() {
        use crate::cluster::remote::Within;
        use crate::vm::VmCommand;
        let stop = VmsRequest::Act {
            id: "v@beta".into(),
            command: VmCommand::Stop {
                timeout: Duration::from_secs(60),
            },
        };
        assert!(stop.within() >= Duration::from_secs(90), "{:?}", stop.within());
        let reboot = VmsRequest::Act {
            id: "v@beta".into(),
            command: VmCommand::Reboot,
        };
        assert!(reboot.within() >= Duration::from_secs(30));
        let drain = HostsRequest::Drain { id: "h@beta".into() };
        assert_eq!(drain.within(), crate::cluster::remote::PEER_TIMEOUT);
    }
}

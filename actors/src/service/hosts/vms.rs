//! The VMs service: create, act on, migrate, look up and list VMs, wherever they live. A
//! request about a VM goes to the VMs service of the node of its host.

use std::time::Duration;

use super::Hosts;
use crate::cluster::remote::{service, At, Located, PEER_TIMEOUT};
use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::host::HostView;
use crate::placement::{self, Ask, Candidate, Load, NoValidHost};
use crate::service::context::{keep, split};
use crate::service::listing::Listing;
use crate::tables::{VMS, VM_STATUS};
use crate::vm::{CreateVmRequest, Migration, VmCommand, VmFilter, VmSpec, VmStatus, VmView};

service! {
    service Vms as "vms" (VmsMsg, VmsRequest, VmsResponse, VmsLocal);
    /// Places and creates a VM on one of this node's hosts.
    keyed Create => create(request: CreateVmRequest) -> VmView, within Duration::from_secs(45) + PEER_TIMEOUT;
    /// Acts on a VM of this node: a stop waits for its guest.
    call Act => act(id: String, command: VmCommand) -> VmView, within command.wait() + PEER_TIMEOUT;
    /// Migrates a VM of this node; answers when the migration has ended.
    keyed Migrate => migrate(id: String, target: Option<String>) -> Migration, within Duration::from_secs(15 * 60);
}

/// VMs live on hosts: the service reaches them through the hosts of its node.
#[derive(Clone)]
pub struct Vms {
    pub(crate) hosts: Hosts,
}

impl Located for Vms {
    fn cluster(&self) -> &Cluster {
        &self.hosts.ctx.cluster
    }
}

impl Vms {
    /// Places and creates a VM on one of this node's hosts (or `node`'s, or the node of
    /// `request.host`). Without either, when none of this node's hosts can take it (it has
    /// none: its simulated hosts moved to other members at a failover, say), the peers' hosts
    /// are tried (see [`Vms::create_on_a_peer`]).
    pub async fn create(
        &self,
        request: CreateVmRequest,
        node: Option<String>,
        key: Option<String>,
    ) -> Result<VmView, ApiError> {
        request.validate()?;
        let me = self.cluster().name();
        let at = match (node.filter(|n| *n != me), request.host.as_deref()) {
            (Some(node), _) => At::on(self, Some(&node)),
            (None, Some(host)) => {
                let id = self.hosts.id_of(host).await?;
                return At::holding(self, &id).create(request, key).await;
            }
            (None, None) => {
                return match At::Here(self).create(request.clone(), key.clone()).await {
                    Err(ApiError::NoValidHost(here)) => self.create_on_a_peer(request, key, here).await,
                    answer => answer,
                };
            }
        };
        at.create(request, key).await
    }

    /// Creates the VM on a peer, the peers' hosts ordered by the placer as their nodes' beats
    /// report them (state, capacity, what is promised): the node of the host it prefers is
    /// asked, and places the VM among its own hosts under its lock, anti-affinity included.
    /// One that finds no room after all (a beat is up to a second old) is left out and the
    /// next is asked. `here` says why this node's hosts could not take it (the answer as it
    /// is when no peer is up: a node alone).
    async fn create_on_a_peer(
        &self,
        request: CreateVmRequest,
        key: Option<String>,
        here: String,
    ) -> Result<VmView, ApiError> {
        let reachable = self.cluster().up_peers();
        if reachable.is_empty() {
            return Err(ApiError::NoValidHost(here));
        }
        let mut hosts: Vec<(String, HostView)> = self
            .hosts
            .list()
            .await?
            .items
            .into_iter()
            .filter_map(|h| Some((self.cluster().holder(&h.spec.id)?, h)))
            .filter(|(node, _)| reachable.contains(node))
            .collect();
        let mut refused = Vec::new();
        loop {
            let node = match peer_to_ask(&request, &hosts) {
                Ok(node) => node,
                Err(rejected) => {
                    refused.extend(rejected.0);
                    return Err(ApiError::NoValidHost(elsewhere(
                        &self.cluster().name(),
                        &here,
                        &refused,
                    )));
                }
            };
            match At::on(self, Some(&node)).create(request.clone(), key.clone()).await {
                Err(ApiError::NoValidHost(why)) => {
                    let why = why.strip_prefix("no valid host:").unwrap_or(&why).trim().to_owned();
                    refused.push((format!("node {node}"), why));
                    hosts.retain(|(n, _)| *n != node);
                }
                answer => return answer,
            }
        }
    }

    pub async fn act(&self, id: &str, command: VmCommand) -> Result<VmView, ApiError> {
        At::holding(self, id).act(id.to_owned(), command).await
    }

    /// Migrates a VM to `target` (a host id or name of the VM's node), or where the placer
    /// puts it; answers when the migration has ended.
    pub async fn migrate(&self, id: &str, target: Option<String>, key: Option<String>) -> Result<Migration, ApiError> {
        At::holding(self, id).migrate(id.to_owned(), target, key).await
    }

    /// A VM, asking no peer: on its holder, as its actor sees it now; elsewhere, as the
    /// replica holds it, with the usage sample the holder's last beat carried (its
    /// `sampledAt` says when it was taken). One not found is looked for again once this node
    /// has caught up with the cluster.
    pub async fn get(&self, id: &str) -> Result<Option<VmView>, ApiError> {
        let Some(peer) = self.cluster().holder(id) else {
            return crate::vm::get(&self.hosts.fleet, id).await;
        };
        let store = &self.hosts.ctx.store;
        let mut found = crate::vm::read_vm(store, id).await?;
        if found.is_none() {
            store.linearize().await?;
            found = crate::vm::read_vm(store, id).await?;
        }
        Ok(found.map(|(spec, mut status)| {
            if let Some(seen) = self.hosts.peers.vm_stats(&peer, id) {
                if seen.sampled_at >= status.stats.sampled_at {
                    status.stats = seen;
                }
            }
            VmView { spec, status }
        }))
    }

    /// The cluster's VMs in id order after the cursor, from this node's replica: each VM's
    /// spec and the status its actor last recorded.
    pub async fn list(
        &self,
        after: Option<String>,
        first: usize,
        filter: VmFilter,
    ) -> Result<Listing<VmView>, ApiError> {
        let (items, more) = list_here(&self.hosts.ctx.store, after, first, filter).await?;
        Ok(Listing::local(items, more))
    }

    /// Whether this node holds the VM.
    pub fn holds(&self, id: &str) -> bool {
        self.hosts.holds(id)
    }

    pub fn stop_timeout(&self) -> Duration {
        self.hosts.stop_timeout()
    }
}

/// The VMs of this node's hosts: the service's serving and idempotency checks around the
/// work of `vm/`.
impl VmsLocal for Vms {
    // A peer's request is checked like a local one.
    async fn create(&self, request: CreateVmRequest, key: Option<String>) -> Result<VmView, ApiError> {
        request.validate()?;
        let ctx = &self.hosts.ctx;
        ctx.ensure_serving()?;
        let guard = match split(ctx.claim("createVm", key.as_deref(), &request).await?) {
            Ok(guard) => guard,
            Err(id) => {
                return crate::vm::get(&self.hosts.fleet, &id)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(format!("no VM {id}")))
            }
        };
        crate::vm::create(&self.hosts.fleet, request, guard.as_ref()).await
    }

    async fn act(&self, id: String, command: VmCommand) -> Result<VmView, ApiError> {
        // Run to the end even if the caller goes away: a half-done stop is worse.
        let fleet = self.hosts.fleet.clone();
        tokio::spawn(async move { crate::vm::act_on(&fleet, &id, command).await })
            .await
            .map_err(|e| ApiError::Internal(format!("the VM mutation did not finish: {e}")))?
    }

    async fn migrate(&self, id: String, target: Option<String>, key: Option<String>) -> Result<Migration, ApiError> {
        let (ctx, fleet) = (&self.hosts.ctx, &self.hosts.fleet);
        ctx.ensure_serving()?;
        let guard = match split(ctx.claim("migrateVm", key.as_deref(), &(&id, &target)).await?) {
            Ok(guard) => guard,
            Err(_) => {
                let (view, _) = crate::vm::locate(fleet, &id).await?;
                return view
                    .status
                    .migration
                    .ok_or_else(|| ApiError::NotFound(format!("VM {id} has no migration")));
            }
        };
        let m = crate::vm::request_migration(fleet, &id, target).await?;
        keep(&ctx.store, guard, &m.id).await?;
        Ok(m)
    }
}

/// The node of the host the placer prefers for `request` among `hosts` (each with its node),
/// as the beats report them; the anti-affinity groups are the holder's to check.
fn peer_to_ask(request: &CreateVmRequest, hosts: &[(String, HostView)]) -> Result<String, NoValidHost> {
    let loads: Vec<Load> = hosts
        .iter()
        .map(|(_, h)| Load {
            vcpus: h.allocated_vcpus,
            memory_mib: h.allocated_memory_mib,
            groups: Default::default(),
            vms: h.vms,
        })
        .collect();
    let names: Vec<String> = hosts.iter().map(|(_, h)| h.spec.qualified_name()).collect();
    let candidates: Vec<Candidate<'_>> = hosts
        .iter()
        .zip(&loads)
        .zip(&names)
        .map(|(((_, h), load), name)| Candidate {
            id: &h.spec.id,
            name,
            refuses: h.state.refuses_vms(h.capacity.is_some()),
            cpus: h.capacity.map_or(0, |c| c.cpus),
            memory_mib: h.capacity.map_or(0, |c| c.memory_mib),
            overcommit: h.spec.overcommit,
            reserved_memory_mib: h.spec.reserved_memory_mib,
            labels: &h.spec.labels,
            load,
        })
        .collect();
    let selector = request.host_selector.iter().cloned().collect();
    let ask = Ask {
        vcpus: request.vcpus,
        memory_mib: request.memory_mib,
        selector: &selector,
        group: None,
        weigher: request.weigher,
    };
    placement::place(&ask, &candidates).map(|i| hosts[i].0.clone())
}

/// NO_VALID_HOST's words when neither this node's hosts nor the peers' took the VM.
fn elsewhere(me: &str, here: &str, refused: &[(String, String)]) -> String {
    let here = here.strip_prefix("no valid host:").unwrap_or(here).trim();
    let here = match here {
        "this node has no hosts" => format!("node {me} has no hosts"),
        reasons => reasons.to_owned(),
    };
    if refused.is_empty() {
        return format!("no valid host: {here}; no other node reported a host");
    }
    let others: Vec<String> = refused.iter().map(|(host, why)| format!("{host}: {why}")).collect();
    format!("no valid host: {here}; {}", others.join("; "))
}

/// A page of the cluster's VMs from this node's replica.
async fn list_here(
    store: &troupe_runtime::store::Store,
    after: Option<String>,
    first: usize,
    filter: VmFilter,
) -> Result<(Vec<VmView>, bool), ApiError> {
    crate::tables::page(store, VMS, after, first.min(1000), move |v, id, bytes| {
        let spec: VmSpec = troupe_runtime::codec::decode(bytes)?;
        let status: VmStatus = match v.get(VM_STATUS, id)? {
            Some(b) => troupe_runtime::codec::decode(&b)?,
            None => VmStatus::new(None),
        };
        Ok(filter.matches(&spec, &status).then_some(VmView { spec, status }))
    })
    .await
}

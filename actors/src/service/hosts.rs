//! The hosts service: hypervisor hosts and the VMs on them, wherever they live. A host's id
//! names the node whose driver holds its connection; a VM's id names the node of its host
//! (VMs move between the hosts of one node).

mod local;
mod remove;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::context::Context;
use super::listing::{merge_pages, Listing};
use crate::cluster::remote::{envelope, Service};
use crate::error::ApiError;
use crate::host::{AddHostRequest, DomainObs, Fault, Fleet, HostView};
use crate::vm::{CreateVmRequest, Migration, VmCommand, VmFilter, VmView};

envelope!(HostsMsg);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HostsRequest {
    Add {
        request: AddHostRequest,
        key: String,
    },
    Remove {
        id: String,
        force: bool,
    },
    Drain {
        id: String,
    },
    Maintenance {
        id: String,
        enabled: bool,
    },
    Get(String),
    List,
    Domains(String),
    CreateVm {
        request: CreateVmRequest,
        key: String,
    },
    ActVm {
        id: String,
        command: VmCommand,
    },
    Migrate {
        id: String,
        target: Option<String>,
        key: String,
    },
    GetVm(String),
    ListVms {
        after: Option<String>,
        first: u32,
        filter: VmFilter,
    },
    Fault {
        target: String,
        fault: Fault,
    },
}

impl HostsRequest {
    /// How long the peer may take: VM commands wait for the VM (a stop for its guest),
    /// migrations for the move, host changes for the host's driver.
    pub(crate) fn timeout(&self) -> Duration {
        let margin = crate::cluster::remote::PEER_TIMEOUT;
        match self {
            Self::ActVm { command, .. } => command.wait() + margin,
            Self::CreateVm { .. } => Duration::from_secs(45) + margin,
            Self::Add { .. } | Self::Domains(_) | Self::Fault { .. } => Duration::from_secs(30) + margin,
            Self::Migrate { .. } | Self::Remove { .. } => Duration::from_secs(15 * 60),
            _ => margin,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HostsResponse {
    Host(HostView),
    FoundHost(Option<HostView>),
    Hosts(Vec<HostView>),
    Domains(Vec<DomainObs>),
    Vm(VmView),
    FoundVm(Option<VmView>),
    Vms(Vec<VmView>, bool),
    Migration(Migration),
    Done(String),
}

#[derive(Clone)]
pub struct Hosts {
    pub(crate) ctx: Arc<Context>,
    pub(crate) fleet: Arc<Fleet>,
}

fn unexpected(what: &str) -> ApiError {
    ApiError::Internal(format!("a peer answered {what} with something else"))
}

macro_rules! answer {
    ($result:expr, $variant:ident, $what:literal) => {
        match $result? {
            HostsResponse::$variant(x) => Ok(x),
            _ => Err(unexpected($what)),
        }
    };
}

impl Hosts {
    fn home<'a>(&self, id: &'a str) -> Option<&'a str> {
        self.ctx.peer_holding(id)
    }

    async fn peer(&self, node: &str, request: HostsRequest) -> Result<HostsResponse, ApiError> {
        self.ctx
            .cluster
            .call_within::<Hosts>(node, &request, request.timeout())
            .await
    }

    /// Forwards a mutation that carries an idempotency key, waiting as long as it may take.
    async fn forward(
        &self,
        node: &str,
        request: impl Fn(String) -> HostsRequest,
        key: Option<String>,
    ) -> Result<HostsResponse, ApiError> {
        let within = request(String::new()).timeout();
        self.ctx.forward_within::<Hosts>(node, request, key, within).await
    }

    /// Adds a host to this node, or to `request.node`.
    pub async fn add(&self, request: AddHostRequest, key: Option<String>) -> Result<HostView, ApiError> {
        request.validate()?;
        match request.node.clone().filter(|n| *n != self.ctx.node_name) {
            Some(node) => {
                let mut request = request;
                request.node = None;
                let asked = self
                    .forward(
                        &node,
                        |key| HostsRequest::Add {
                            request: request.clone(),
                            key,
                        },
                        key,
                    )
                    .await;
                answer!(asked, Host, "addHost")
            }
            None => self.add_local(request, key.as_deref()).await,
        }
    }

    pub async fn remove(&self, id: &str, force: bool) -> Result<HostView, ApiError> {
        match self.home(id) {
            Some(node) => answer!(
                self.peer(node, HostsRequest::Remove { id: id.into(), force }).await,
                Host,
                "removeHost"
            ),
            None => self.remove_local(id, force).await,
        }
    }

    pub async fn drain(&self, id: &str) -> Result<HostView, ApiError> {
        match self.home(id) {
            Some(node) => answer!(
                self.peer(node, HostsRequest::Drain { id: id.into() }).await,
                Host,
                "drainHost"
            ),
            None => self.drain_local(id).await,
        }
    }

    pub async fn set_maintenance(&self, id: &str, enabled: bool) -> Result<HostView, ApiError> {
        match self.home(id) {
            Some(node) => answer!(
                self.peer(node, HostsRequest::Maintenance { id: id.into(), enabled })
                    .await,
                Host,
                "setHostMaintenance"
            ),
            None => self.maintenance_local(id, enabled).await,
        }
    }

    pub async fn get(&self, id: &str) -> Result<Option<HostView>, ApiError> {
        match self.home(id) {
            Some(node) => answer!(self.peer(node, HostsRequest::Get(id.into())).await, FoundHost, "host"),
            None => Ok(self.fleet.resolve(id).and_then(|id| self.fleet.view(&id))),
        }
    }

    /// Every host of the cluster (this node's and each reachable peer's), in id order.
    pub async fn list(&self) -> Result<Listing<HostView>, ApiError> {
        let mut items = self.fleet.views();
        let gathered = self.ctx.cluster.gather::<Hosts>(&HostsRequest::List).await;
        for answer in gathered.answers {
            if let HostsResponse::Hosts(more) = answer {
                items.extend(more);
            }
        }
        items.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
        Ok(Listing {
            items,
            more: false,
            missing: gathered.missing,
        })
    }

    /// What libvirt reports on the host now, asked directly (not Troupe's records).
    pub async fn domains(&self, id: &str) -> Result<Vec<DomainObs>, ApiError> {
        match self.home(id) {
            Some(node) => answer!(
                self.peer(node, HostsRequest::Domains(id.into())).await,
                Domains,
                "domains"
            ),
            None => self.domains_local(id).await,
        }
    }

    /// Places and creates a VM on one of this node's hosts (or `node`'s).
    pub async fn create_vm(
        &self,
        request: CreateVmRequest,
        node: Option<String>,
        key: Option<String>,
    ) -> Result<VmView, ApiError> {
        request.validate()?;
        let node = node
            .filter(|n| *n != self.ctx.node_name)
            .or_else(|| request.host.as_deref().and_then(|h| self.home(h)).map(str::to_owned));
        match node {
            Some(node) => {
                let asked = self
                    .forward(
                        &node,
                        |key| HostsRequest::CreateVm {
                            request: request.clone(),
                            key,
                        },
                        key,
                    )
                    .await;
                answer!(asked, Vm, "createVm")
            }
            None => self.create_vm_local(request, key.as_deref()).await,
        }
    }

    pub async fn act_vm(&self, id: &str, command: VmCommand) -> Result<VmView, ApiError> {
        match self.home(id) {
            Some(node) => answer!(
                self.peer(
                    node,
                    HostsRequest::ActVm {
                        id: id.into(),
                        command: command.clone()
                    }
                )
                .await,
                Vm,
                "a VM mutation"
            ),
            None => {
                // Run to the end even if the caller goes away: a half-done stop is worse.
                let (me, id) = (self.clone(), id.to_owned());
                tokio::spawn(async move { me.act_vm_local(&id, command).await })
                    .await
                    .map_err(|e| ApiError::Internal(format!("the VM mutation did not finish: {e}")))?
            }
        }
    }

    /// Whether this node holds the VM or host (its id names this node).
    pub fn holds(&self, id: &str) -> bool {
        self.ctx.holds(id)
    }

    pub fn stop_timeout(&self) -> Duration {
        self.fleet.settings.stop_timeout
    }

    /// Migrates a VM to `target` (a host id or name of the VM's node), or where the placer
    /// puts it; answers when the migration has ended.
    pub async fn migrate(&self, id: &str, target: Option<String>, key: Option<String>) -> Result<Migration, ApiError> {
        match self.home(id) {
            Some(node) => {
                let asked = self
                    .forward(
                        node,
                        |key| HostsRequest::Migrate {
                            id: id.into(),
                            target: target.clone(),
                            key,
                        },
                        key,
                    )
                    .await;
                answer!(asked, Migration, "migrateVm")
            }
            None => self.migrate_local(id, target, key.as_deref()).await,
        }
    }

    pub async fn get_vm(&self, id: &str) -> Result<Option<VmView>, ApiError> {
        match self.home(id) {
            Some(node) => answer!(self.peer(node, HostsRequest::GetVm(id.into())).await, FoundVm, "vm"),
            None => self.get_vm_local(id).await,
        }
    }

    /// The cluster's VMs in id order after the cursor.
    pub async fn list_vms(
        &self,
        after: Option<String>,
        first: usize,
        filter: VmFilter,
    ) -> Result<Listing<VmView>, ApiError> {
        let mut pages = vec![self.list_vms_local(after.clone(), first, &filter).await?];
        let request = HostsRequest::ListVms {
            after,
            first: first as u32,
            filter,
        };
        let gathered = self.ctx.cluster.gather::<Hosts>(&request).await;
        pages.extend(gathered.answers.into_iter().filter_map(|a| match a {
            HostsResponse::Vms(items, more) => Some((items, more)),
            _ => None,
        }));
        let (items, more) = merge_pages(pages, first, |v| v.spec.id.as_str());
        Ok(Listing {
            items,
            more,
            missing: gathered.missing,
        })
    }

    /// Injects a fault (needs `--fault-injection`): `target` is a host for HOST_* faults and
    /// a VM for DOMAIN_* ones.
    pub async fn inject_fault(&self, target: &str, fault: Fault) -> Result<String, ApiError> {
        match self.home(target) {
            Some(node) => answer!(
                self.peer(
                    node,
                    HostsRequest::Fault {
                        target: target.into(),
                        fault
                    }
                )
                .await,
                Done,
                "injectFault"
            ),
            None => self.fault_local(target, fault).await,
        }
    }
}

impl Service for Hosts {
    const ROLE: &'static str = "hosts";
    type Request = HostsRequest;
    type Response = HostsResponse;
    type Msg = HostsMsg;

    fn node_name(&self) -> &str {
        &self.ctx.node_name
    }

    fn serve(&self, request: HostsRequest) -> BoxFuture<'static, Result<HostsResponse, ApiError>> {
        let me = self.clone();
        Box::pin(async move {
            Ok(match request {
                // A peer's request is checked like a local one.
                HostsRequest::Add { request, key } => {
                    request.validate()?;
                    HostsResponse::Host(me.add_local(request, Some(&key)).await?)
                }
                HostsRequest::Remove { id, force } => HostsResponse::Host(me.remove_local(&id, force).await?),
                HostsRequest::Drain { id } => HostsResponse::Host(me.drain_local(&id).await?),
                HostsRequest::Maintenance { id, enabled } => {
                    HostsResponse::Host(me.maintenance_local(&id, enabled).await?)
                }
                HostsRequest::Get(id) => HostsResponse::FoundHost(me.fleet.view(&id)),
                HostsRequest::List => HostsResponse::Hosts(me.fleet.views()),
                HostsRequest::Domains(id) => HostsResponse::Domains(me.domains_local(&id).await?),
                HostsRequest::CreateVm { request, key } => {
                    request.validate()?;
                    HostsResponse::Vm(me.create_vm_local(request, Some(&key)).await?)
                }
                HostsRequest::ActVm { id, command } => HostsResponse::Vm(me.act_vm_local(&id, command).await?),
                HostsRequest::Migrate { id, target, key } => {
                    HostsResponse::Migration(me.migrate_local(&id, target, Some(&key)).await?)
                }
                HostsRequest::GetVm(id) => HostsResponse::FoundVm(me.get_vm_local(&id).await?),
                HostsRequest::ListVms { after, first, filter } => {
                    let (items, more) = me.list_vms_local(after, first.min(1000) as usize, &filter).await?;
                    HostsResponse::Vms(items, more)
                }
                HostsRequest::Fault { target, fault } => HostsResponse::Done(me.fault_local(&target, fault).await?),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer's stop may take the guest's whole shutdown wait: the call waits that long.
    #[test]
    fn a_peers_vm_stop_waits_for_the_guest_and_plain_reads_do_not() {
        let stop = HostsRequest::ActVm {
            id: "v@beta".into(),
            command: VmCommand::Stop {
                timeout: Duration::from_secs(60),
            },
        };
        assert!(stop.timeout() >= Duration::from_secs(90), "{:?}", stop.timeout());
        let reboot = HostsRequest::ActVm {
            id: "v@beta".into(),
            command: VmCommand::Reboot,
        };
        assert!(reboot.timeout() >= Duration::from_secs(30));
        assert_eq!(HostsRequest::List.timeout(), crate::cluster::remote::PEER_TIMEOUT);
    }
}

//! The hosts service's work on this node's own hosts and VMs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::Batch;
use troupe_runtime::supervision::{ChildSpec, SupervisorMsg};

use super::Hosts;
use crate::error::ApiError;
use crate::host::{host_child, AddHostRequest, DomainObs, Fault, HostMode, HostMsg, HostSpec, HostState, HostView};
use crate::service::context::{ask, keep, split};
use crate::tables::{HOSTS, VMS, VM_STATUS};
use crate::vm::{
    gauge_moved, CreateVmRequest, Migration, RunPolicy, VmCommand, VmFilter, VmSpec, VmState, VmStatus, VmView, Want,
};

impl Hosts {
    pub(super) fn resolve(&self, host: &str) -> Result<String, ApiError> {
        self.fleet
            .resolve(host)
            .ok_or_else(|| ApiError::NotFound(format!("no host {host} on node {}", self.ctx.node_name)))
    }

    pub(super) fn host_view(&self, id: &str) -> Result<HostView, ApiError> {
        self.fleet
            .view(id)
            .ok_or_else(|| ApiError::NotFound(format!("no host {id}")))
    }

    pub(crate) async fn add_local(&self, request: AddHostRequest, key: Option<&str>) -> Result<HostView, ApiError> {
        self.ctx.ensure_serving()?;
        let guard = match split(self.ctx.claim("addHost", key, &request).await?) {
            Ok(guard) => guard,
            Err(id) => return self.host_view(&id),
        };
        if let Some(path) = request.uri.strip_prefix("test://").filter(|p| p.ends_with(".xml")) {
            // libvirt's XML parser would print its complaint to the terminal; say it here.
            if !tokio::fs::try_exists(path).await.unwrap_or(false) {
                return Err(ApiError::invalid(format!("uri: no node XML file at {path}")));
            }
        }
        if self.fleet.resolve(&request.name).is_some() {
            return Err(ApiError::Conflict(format!(
                "node {} already has a host named {}",
                self.ctx.node_name, request.name
            )));
        }
        let spec = HostSpec {
            id: crate::ids::new_id(&self.ctx.node_name),
            name: request.name,
            uri: request.uri,
            node: self.ctx.node_name.clone(),
            labels: request.labels.into_iter().collect(),
            overcommit: request.overcommit.unwrap_or_default(),
            reserved_memory_mib: request.reserved_memory_mib.unwrap_or(0),
            mode: HostMode::Active,
            simulated: false,
            created_at: troupe_runtime::clock::now(),
        };
        let id = spec.id.clone();
        self.start_host(spec, guard.as_ref()).await?;
        keep(&self.ctx.store, guard, &id).await?;
        self.host_view(&id)
    }

    /// Keeps a new host's spec, registers it and starts its driver (which connects before
    /// this answers: the host is UP, or UNREACHABLE with the reason).
    pub(crate) async fn start_host(
        &self,
        spec: HostSpec,
        guard: Option<&troupe_runtime::idempotency::Guard>,
    ) -> Result<(), ApiError> {
        let data = json!({ "name": spec.name, "uri": spec.uri, "node": spec.node, "simulated": spec.simulated });
        let mut batch = Batch::new()
            .put(HOSTS, spec.id.clone(), troupe_runtime::codec::encode(&spec)?)
            .event(NewEvent::new("HOST_ADDED", Some(spec.id.clone()), data));
        if let Some(guard) = guard {
            guard.record(&mut batch, &spec.id)?;
        }
        self.ctx.store.write(batch).await?;
        let id = spec.id.clone();
        self.fleet.register(spec);
        let supervisor = self
            .fleet
            .supervisor
            .get()
            .ok_or_else(|| ApiError::Unavailable("the hosts supervisor is not running".into()))?;
        let child: Arc<dyn ChildSpec> = host_child(&self.fleet, id.clone(), self.ctx.agent_policy.intensity);
        ask(
            &supervisor,
            |r| SupervisorMsg::StartChild(child, r),
            "the hosts supervisor",
        )
        .await?
        .map_err(|e| ApiError::Internal(format!("the driver of host {id} did not start: {e}")))
    }

    pub(super) async fn vm_actors(&self, host: &str) -> Result<Vec<ractor::ActorRef<crate::vm::VmMsg>>, ApiError> {
        let driver = self.fleet.driver(host)?;
        ask(&driver, HostMsg::Vms, "the host driver").await
    }

    pub(crate) async fn drain_local(&self, host: &str) -> Result<HostView, ApiError> {
        let id = self.resolve(host)?;
        match self.fleet.state(&id) {
            Some(HostState::Up) => {}
            Some(HostState::Draining) => return Err(ApiError::Conflict(format!("host {host} is already draining"))),
            Some(s) => {
                return Err(ApiError::Conflict(format!(
                    "host {host} is {}; only an UP host can be drained",
                    s.name()
                )))
            }
            None => return Err(ApiError::NotFound(format!("no host {host}"))),
        }
        self.fleet.set_mode(&id, HostMode::Draining).await?;
        let actors = self.vm_actors(&id).await?;
        // The drain's progress shows from the first answer.
        self.fleet.set_drain(
            &id,
            Some(crate::host::DrainProgress {
                total: actors.len() as u32,
                ..Default::default()
            }),
        );
        tokio::spawn(crate::host::drain(self.fleet.clone(), id.clone(), actors));
        self.host_view(&id)
    }

    pub(crate) async fn maintenance_local(&self, host: &str, enabled: bool) -> Result<HostView, ApiError> {
        let id = self.resolve(host)?;
        if !enabled {
            return self.fleet.set_mode(&id, HostMode::Active).await;
        }
        let holds = self.host_view(&id)?.vms;
        if holds > 0 {
            return Err(ApiError::Conflict(format!(
                "host {host} holds {holds} VM(s): drainHost moves them away and then puts it in MAINTENANCE"
            )));
        }
        self.fleet.set_mode(&id, HostMode::Maintenance).await
    }

    pub(crate) async fn domains_local(&self, host: &str) -> Result<Vec<DomainObs>, ApiError> {
        let id = self.resolve(host)?;
        let driver = self.fleet.driver(&id)?;
        ask(&driver, HostMsg::Domains, "the host driver").await?
    }

    pub(crate) async fn create_vm_local(
        &self,
        request: CreateVmRequest,
        key: Option<&str>,
    ) -> Result<VmView, ApiError> {
        self.ctx.ensure_serving()?;
        let guard = match split(self.ctx.claim("createVm", key, &request).await?) {
            Ok(guard) => guard,
            Err(id) => {
                return self
                    .get_vm_local(&id)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(format!("no VM {id}")))
            }
        };
        let only = match &request.host {
            Some(h) => Some(self.resolve(h)?),
            None => None,
        };
        let id = crate::ids::new_id(&self.ctx.node_name);
        let uuid = id.split('@').next().unwrap_or_default().to_owned();
        let spec = VmSpec {
            domain: format!("troupe-{uuid}"),
            uuid,
            id: id.clone(),
            name: request.name,
            vcpus: request.vcpus,
            memory_mib: request.memory_mib,
            labels: request.labels.into_iter().collect(),
            anti_affinity_group: request.anti_affinity_group,
            want: match request.run_policy {
                RunPolicy::Always | RunPolicy::RerunOnFailure => Want::Running,
                RunPolicy::Manual | RunPolicy::Halted => Want::Stopped,
            },
            run_policy: request.run_policy,
            host_selector: request.host_selector.into_iter().collect::<BTreeMap<_, _>>(),
            weigher: request.weigher,
            created_at: troupe_runtime::clock::now(),
        };
        // The allocation is claimed before anything is written or defined.
        let host = self.fleet.claim(&spec, only.as_deref(), None)?;
        let status = VmStatus::new(Some(host.clone()));
        let data = json!({ "name": spec.name, "host": host, "vcpus": spec.vcpus, "memoryMiB": spec.memory_mib,
                           "runPolicy": format!("{:?}", spec.run_policy) });
        let mut batch = Batch::new()
            .put(VMS, id.clone(), troupe_runtime::codec::encode(&spec)?)
            .put(VM_STATUS, id.clone(), troupe_runtime::codec::encode(&status)?)
            .event(NewEvent::new("VM_CREATED", Some(id.clone()), data));
        if let Some(guard) = &guard {
            guard.record(&mut batch, &id)?;
        }
        if let Err(e) = self.ctx.store.write(batch).await {
            self.fleet.release(&id, &host);
            return Err(e.into());
        }
        gauge_moved(None, Some(VmState::Pending));
        let driver = self.fleet.driver(&host)?;
        let actor = ask(
            &driver,
            |r| HostMsg::AddVm(Box::new((spec, status)), r),
            "the host driver",
        )
        .await??;
        crate::host::act(&actor, VmCommand::Ensure, Duration::from_secs(30)).await
    }

    async fn host_of(&self, vm: &str) -> Result<(VmView, String), ApiError> {
        let (spec, status) = crate::host::read_vm(&self.ctx.store, vm)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no VM {vm}")))?;
        let host = status
            .host
            .clone()
            .ok_or_else(|| ApiError::Conflict(format!("VM {vm} has no host yet")))?;
        Ok((VmView { spec, status }, host))
    }

    pub(crate) async fn act_vm_local(&self, vm: &str, command: VmCommand) -> Result<VmView, ApiError> {
        let (_, host) = self.host_of(vm).await?;
        let actor = crate::host::vm_actor(&self.fleet, &host, vm).await?;
        let wait = command.wait();
        crate::host::act(&actor, command, wait).await
    }

    pub(crate) async fn migrate_local(
        &self,
        vm: &str,
        target: Option<String>,
        key: Option<&str>,
    ) -> Result<Migration, ApiError> {
        self.ctx.ensure_serving()?;
        let guard = match split(self.ctx.claim("migrateVm", key, &(vm, &target)).await?) {
            Ok(guard) => guard,
            Err(_) => {
                let (view, _) = self.host_of(vm).await?;
                return view
                    .status
                    .migration
                    .ok_or_else(|| ApiError::NotFound(format!("VM {vm} has no migration")));
            }
        };
        let (_, source) = self.host_of(vm).await?;
        let target = match target {
            Some(t) => {
                let t = self.resolve(&t)?;
                if t == source {
                    return Err(ApiError::invalid("targetHost is the host the VM is on"));
                }
                Some(t)
            }
            None => None,
        };
        // Runs to the end even if the caller goes away.
        let (fleet, vm_id) = (self.fleet.clone(), vm.to_owned());
        let m = tokio::spawn(async move { crate::host::migrate(&fleet, &vm_id, &source, target, "migrateVm").await })
            .await
            .map_err(|e| ApiError::Internal(format!("the migration did not finish: {e}")))??;
        keep(&self.ctx.store, guard, &m.id).await?;
        Ok(m)
    }

    pub(crate) async fn get_vm_local(&self, vm: &str) -> Result<Option<VmView>, ApiError> {
        let Some((spec, status)) = crate::host::read_vm(&self.ctx.store, vm).await? else {
            return Ok(None);
        };
        // The actor's view carries the latest usage sample.
        if let Some(host) = &status.host {
            if let Ok(actor) = crate::host::vm_actor(&self.fleet, host, vm).await {
                if let Ok(view) = crate::host::view_of(&actor).await {
                    return Ok(Some(view));
                }
            }
        }
        Ok(Some(VmView { spec, status }))
    }

    pub(super) async fn vms_on(&self, host: &str) -> Result<Vec<VmView>, ApiError> {
        let filter = VmFilter {
            host: Some(host.to_owned()),
            ..Default::default()
        };
        Ok(self.list_vms_local(None, usize::MAX - 1, &filter).await?.0)
    }

    pub(crate) async fn list_vms_local(
        &self,
        after: Option<String>,
        first: usize,
        filter: &VmFilter,
    ) -> Result<(Vec<VmView>, bool), ApiError> {
        let filter = filter.clone();
        crate::service::listing::page_local(&self.ctx.store, VMS, after, first, move |v, id, bytes| {
            let spec: VmSpec = troupe_runtime::codec::decode(bytes)?;
            let status: VmStatus = match v.get(VM_STATUS, id)? {
                Some(b) => troupe_runtime::codec::decode(&b)?,
                None => VmStatus::new(None),
            };
            Ok(filter.matches(&spec, &status).then_some(VmView { spec, status }))
        })
        .await
    }

    pub(crate) async fn fault_local(&self, target: &str, fault: Fault) -> Result<String, ApiError> {
        if !self.fleet.settings.fault_injection {
            return Err(ApiError::Forbidden(
                "fault injection is disabled on this node; start it with --fault-injection".into(),
            ));
        }
        let (host, vm) = match fault {
            Fault::HostDisconnect | Fault::HostHang | Fault::HostReconnect | Fault::DriverCrash => {
                (self.resolve(target)?, None)
            }
            Fault::DomainDestroy | Fault::DomainUndefine => {
                let (_, host) = self.host_of(target).await?;
                (host, Some(target.to_owned()))
            }
        };
        if fault == Fault::HostReconnect {
            // A hung host's driver may be waiting on a call that only this heal answers.
            if let Some(libvirt) = self.fleet.libvirt(&host) {
                libvirt.set_hang(false);
            }
        }
        let driver = self.fleet.driver(&host)?;
        ask(&driver, |r| HostMsg::Fault(fault, vm, r), "the host driver").await??;
        let event = NewEvent::new(
            "FAULT_INJECTED",
            Some(target.to_owned()),
            json!({ "kind": format!("{fault:?}"), "host": host }),
        );
        self.ctx.store.write(Batch::new().event(event)).await?;
        Ok(format!("{fault:?} injected on {target}"))
    }
}

//! The hosts service's work on this node's own hosts and VMs: the service's idempotency and
//! serving checks around the calls into `host/` and `vm/`, which do the work.

use super::Hosts;
use crate::error::ApiError;
use crate::host::{AddHostRequest, DomainObs, Fault, HostView};
use crate::service::context::{keep, split};
use crate::tables::{VMS, VM_STATUS};
use crate::vm::{CreateVmRequest, Migration, VmCommand, VmFilter, VmSpec, VmStatus, VmView};

impl Hosts {
    pub(crate) async fn add_local(&self, request: AddHostRequest, key: Option<&str>) -> Result<HostView, ApiError> {
        self.ctx.ensure_serving()?;
        let guard = match split(self.ctx.claim("addHost", key, &request).await?) {
            Ok(guard) => guard,
            Err(id) => return self.fleet.host_view(&id),
        };
        let intensity = self.ctx.agent_policy.intensity;
        let view = crate::host::add(&self.fleet, request, intensity, guard.as_ref()).await?;
        keep(&self.ctx.store, guard, &view.spec.id).await?;
        Ok(view)
    }

    pub(crate) async fn drain_local(&self, host: &str) -> Result<HostView, ApiError> {
        crate::host::drain(&self.fleet, host).await
    }

    pub(crate) async fn maintenance_local(&self, host: &str, enabled: bool) -> Result<HostView, ApiError> {
        crate::host::set_maintenance(&self.fleet, host, enabled).await
    }

    pub(crate) async fn domains_local(&self, host: &str) -> Result<Vec<DomainObs>, ApiError> {
        crate::host::domains(&self.fleet, host).await
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
        crate::vm::create(&self.fleet, request, guard.as_ref()).await
    }

    pub(crate) async fn act_vm_local(&self, vm: &str, command: VmCommand) -> Result<VmView, ApiError> {
        crate::vm::act_on(&self.fleet, vm, command).await
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
                let (view, _) = crate::vm::locate(&self.fleet, vm).await?;
                return view
                    .status
                    .migration
                    .ok_or_else(|| ApiError::NotFound(format!("VM {vm} has no migration")));
            }
        };
        let m = crate::vm::request_migration(&self.fleet, vm, target).await?;
        keep(&self.ctx.store, guard, &m.id).await?;
        Ok(m)
    }

    pub(crate) async fn get_vm_local(&self, vm: &str) -> Result<Option<VmView>, ApiError> {
        crate::vm::get(&self.fleet, vm).await
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
        crate::host::inject(&self.fleet, target, fault).await
    }
}

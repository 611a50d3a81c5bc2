//! `removeHost` on this node's own hosts.

use std::collections::HashSet;

use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::Batch;
use troupe_runtime::supervision::SupervisorMsg;

use super::Hosts;
use crate::error::ApiError;
use crate::host::HostView;
use crate::service::context::ask;
use crate::tables::{HOSTS, VMS, VM_STATUS};
use crate::vm::{gauge_moved, VmCommand, VmView};

impl Hosts {
    /// Removes a host. It is closed to placement first, so nothing is created on it or moved
    /// to it meanwhile; if the removal is refused it is opened again.
    pub(crate) async fn remove_local(&self, host: &str, force: bool) -> Result<HostView, ApiError> {
        let id = self.resolve(host)?;
        let view = self.host_view(&id)?;
        let claimed = self.fleet.close_for_removal(&id);
        let removed = self.remove_closed(&id, &view, force, claimed).await;
        if removed.is_err() {
            self.fleet.reopen(&id);
        }
        removed
    }

    async fn remove_closed(
        &self,
        id: &str,
        view: &HostView,
        force: bool,
        claimed: Vec<String>,
    ) -> Result<HostView, ApiError> {
        let vms = self.vms_on(id).await?;
        let recorded: HashSet<&str> = vms.iter().map(|v| v.spec.id.as_str()).collect();
        let incoming = claimed.iter().filter(|vm| !recorded.contains(vm.as_str())).count();
        if incoming > 0 {
            return Err(ApiError::Conflict(format!(
                "host {} is the target of {incoming} VM(s) being created on it or migrating to it; \
                 remove it when they are done",
                view.spec.name
            )));
        }
        if !vms.is_empty() && !force {
            return Err(ApiError::Conflict(format!(
                "host {} holds {} VM(s): drain it first, or remove it with force: true (its VMs are deleted)",
                view.spec.name,
                vms.len()
            )));
        }
        // A VM recorded here whose actor has not started yet under a running driver is being
        // created right now.
        let driver_runs = self.fleet.driver(id).is_ok();
        for vm in vms.iter().filter(|_| driver_runs) {
            if crate::host::vm_actor(&self.fleet, id, &vm.spec.id).await.is_err() {
                return Err(ApiError::Conflict(format!(
                    "VM {} on host {} is being created; remove the host when it is done",
                    vm.spec.id, view.spec.name
                )));
            }
        }
        for vm in &vms {
            self.delete_with_host(id, vm).await?;
        }
        if let Some(supervisor) = self.fleet.supervisor.get() {
            ask(
                &supervisor,
                |r| SupervisorMsg::TerminateChild(id.to_owned(), r),
                "the hosts supervisor",
            )
            .await?;
        }
        self.fleet.unregister(id);
        let event = NewEvent::new(
            "HOST_REMOVED",
            Some(id.to_owned()),
            json!({ "name": view.spec.name, "force": force }),
        );
        self.ctx
            .store
            .write(Batch::new().delete(HOSTS, id.to_owned()).event(event))
            .await?;
        Ok(view.clone())
    }

    /// Deletes a VM of a host being removed through its actor (its domain goes too). When
    /// that fails, its records go only if its domain is gone or its host cannot be asked (the
    /// domain is then left there); otherwise the error is the answer, and nothing goes.
    async fn delete_with_host(&self, host: &str, vm: &VmView) -> Result<(), ApiError> {
        let refused = match self.act_vm_local(&vm.spec.id, VmCommand::Delete).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        if !crate::host::records_may_go_from(&self.fleet, host, &vm.spec.domain).await {
            return Err(refused);
        }
        gauge_moved(Some(vm.status.state), None);
        let event = NewEvent::new(
            "VM_DELETED",
            Some(vm.spec.id.clone()),
            json!({ "name": vm.spec.name, "host": host, "note": "host unreachable: its domain was left there" }),
        );
        self.ctx
            .store
            .write(
                Batch::new()
                    .delete(VMS, vm.spec.id.clone())
                    .delete(VM_STATUS, vm.spec.id.clone())
                    .event(event),
            )
            .await?;
        Ok(())
    }
}

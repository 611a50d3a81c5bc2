//! `removeHost` on this node's own hosts: the host is closed to placement, its VMs go (with
//! `force`), its driver stops, and its records go.

use std::collections::HashSet;

use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::Batch;
use troupe_runtime::supervision::SupervisorMsg;

use super::{ask, records_may_go_from, Fleet, HostView, ASK};
use crate::error::ApiError;
use crate::tables::{HOSTS, VMS, VM_STATUS};
use crate::vm::{act_on, owned_vms, vm_actor, VmCommand, VmView};

/// Removes a host. It is closed to placement first, so nothing is created on it or moved
/// to it meanwhile; if the removal is refused it is opened again.
pub(crate) async fn remove(fleet: &Fleet, host: &str, force: bool) -> Result<HostView, ApiError> {
    let id = fleet.find(host)?;
    let view = fleet.host_view(&id)?;
    let claimed = fleet.close_for_removal(&id);
    let removed = remove_closed(fleet, &id, &view, force, claimed).await;
    if removed.is_err() {
        fleet.reopen(&id);
    }
    removed
}

async fn remove_closed(
    fleet: &Fleet,
    id: &str,
    view: &HostView,
    force: bool,
    claimed: Vec<String>,
) -> Result<HostView, ApiError> {
    let vms: Vec<VmView> = owned_vms(&fleet.store, id)
        .await?
        .into_iter()
        .map(|(spec, status)| VmView { spec, status })
        .collect();
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
    let driver_runs = fleet.driver(id).is_ok();
    for vm in vms.iter().filter(|_| driver_runs) {
        if vm_actor(fleet, id, &vm.spec.id).await.is_err() {
            return Err(ApiError::Conflict(format!(
                "VM {} on host {} is being created; remove the host when it is done",
                vm.spec.id, view.spec.name
            )));
        }
    }
    for vm in &vms {
        delete_with_host(fleet, id, vm).await?;
    }
    if let Some(supervisor) = fleet.supervisor.get() {
        ask(
            &supervisor,
            |r| SupervisorMsg::TerminateChild(id.to_owned(), r),
            "the hosts supervisor",
            ASK,
        )
        .await?;
    }
    fleet.unregister(id);
    let event = NewEvent::new(
        "HOST_REMOVED",
        Some(id.to_owned()),
        json!({ "name": view.spec.name, "force": force }),
    );
    fleet
        .store
        .write(Batch::new().delete(HOSTS, id.to_owned()).event(event))
        .await?;
    Ok(view.clone())
}

/// Deletes a VM of a host being removed through its actor (its domain goes too). When
/// that fails, its records go only if its domain is gone or its host cannot be asked (the
/// domain is then left there); otherwise the error is the answer, and nothing goes.
async fn delete_with_host(fleet: &Fleet, host: &str, vm: &VmView) -> Result<(), ApiError> {
    let refused = match act_on(fleet, &vm.spec.id, VmCommand::Delete).await {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    if !records_may_go_from(fleet, host, &vm.spec.domain).await {
        return Err(refused);
    }
    let event = NewEvent::new(
        "VM_DELETED",
        Some(vm.spec.id.clone()),
        json!({ "name": vm.spec.name, "host": host, "note": "host unreachable: its domain was left there" }),
    );
    fleet
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

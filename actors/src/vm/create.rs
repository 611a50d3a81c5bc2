//! Creating a VM on this node: placed and claimed in one step, recorded, then defined and
//! started by a new actor under its host's driver.

use std::collections::BTreeMap;

use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::idempotency::Guard;
use troupe_runtime::store::Batch;

use super::handle::{act, CALL};
use super::{CreateVmRequest, RunPolicy, VmCommand, VmSpec, VmStatus, VmView, Want};
use crate::error::ApiError;
use crate::host::{ask, Fleet, HostMsg, ASK};
use crate::tables::{VMS, VM_STATUS};

/// Creates the VM `request` describes; the guard's answer is recorded with the VM.
pub(crate) async fn create(fleet: &Fleet, request: CreateVmRequest, guard: Option<&Guard>) -> Result<VmView, ApiError> {
    let only = match &request.host {
        Some(h) => Some(fleet.find(h)?),
        None => None,
    };
    let id = crate::ids::new_id(&fleet.node);
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
    let host = fleet.claim(&spec, only.as_deref(), None)?;
    let status = VmStatus::new(Some(host.clone()));
    let data = json!({ "name": spec.name, "host": host, "vcpus": spec.vcpus, "memoryMiB": spec.memory_mib,
                       "runPolicy": format!("{:?}", spec.run_policy) });
    let mut batch = Batch::new()
        .put(VMS, id.clone(), troupe_runtime::codec::encode(&spec)?)
        .put(VM_STATUS, id.clone(), troupe_runtime::codec::encode(&status)?)
        .event(NewEvent::new("VM_CREATED", Some(id.clone()), data));
    if let Some(guard) = guard {
        guard.record(&mut batch, &id)?;
    }
    if let Err(e) = fleet.store.write(batch).await {
        fleet.release(&id, &host);
        return Err(e.into());
    }
    let driver = fleet.driver(&host)?;
    let actor = ask(
        &driver,
        |r| HostMsg::AddVm(Box::new((spec, status)), r),
        "the host driver",
        ASK,
    )
    .await??;
    act(&actor, VmCommand::Ensure, CALL).await
}

//! Handles on VMs: their actors (found through their host's driver) and their records.

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::ActorRef;
use troupe_runtime::store::Store;

use super::{VmCommand, VmMsg, VmSpec, VmStatus, VmView};
use crate::error::ApiError;
use crate::host::{ask, Fleet, HostMsg};
use crate::tables::{VMS, VM_STATUS};

/// How long a VM's actor, or a driver adopting one, may take over a call.
pub(crate) const CALL: Duration = Duration::from_secs(30);

pub(crate) async fn call<T: Send + 'static, M: ractor::Message>(
    actor: &ActorRef<M>,
    msg: impl FnOnce(ractor::RpcReplyPort<T>) -> M,
    what: &str,
) -> Result<T, ApiError> {
    ask(actor, msg, what, CALL).await
}

pub(crate) async fn vm_actor(fleet: &Fleet, host: &str, vm: &str) -> Result<ActorRef<VmMsg>, ApiError> {
    let driver = fleet.driver(host)?;
    call(&driver, |r| HostMsg::Vm(vm.to_owned(), r), "the host driver")
        .await?
        .ok_or_else(|| ApiError::Unavailable(format!("VM {vm} has no running actor on its host")))
}

pub(crate) async fn view_of(actor: &ActorRef<VmMsg>) -> Result<VmView, ApiError> {
    call(actor, VmMsg::Get, "the VM's actor").await
}

/// The VMs whose status names this host.
pub(crate) async fn owned_vms(store: &Store, host: &str) -> Result<Vec<(VmSpec, VmStatus)>, ApiError> {
    let host = host.to_owned();
    Ok(store
        .view(move |v| {
            let mut out = Vec::new();
            v.scan(VM_STATUS, None, |id, bytes| {
                let status: VmStatus = troupe_runtime::codec::decode(bytes)?;
                if status.host.as_deref() == Some(host.as_str()) {
                    if let Some(spec) = v.get(VMS, id)? {
                        out.push((troupe_runtime::codec::decode(&spec)?, status));
                    }
                }
                Ok(true)
            })?;
            Ok(out)
        })
        .await?)
}

pub(crate) async fn read_vm(store: &Store, id: &str) -> Result<Option<(VmSpec, VmStatus)>, ApiError> {
    let id = id.to_owned();
    Ok(store
        .view(move |v| {
            let Some(spec) = v.get(VMS, &id)? else {
                return Ok(None);
            };
            let status = match v.get(VM_STATUS, &id)? {
                Some(b) => troupe_runtime::codec::decode(&b)?,
                None => VmStatus::new(None),
            };
            Ok(Some((troupe_runtime::codec::decode(&spec)?, status)))
        })
        .await?)
}

/// Asks a VM actor to act, and waits for its answer.
pub(crate) async fn act(actor: &ActorRef<VmMsg>, command: VmCommand, wait: Duration) -> Result<VmView, ApiError> {
    match actor.call(|r| VmMsg::Act(command, r), Some(wait)).await {
        Ok(CallResult::Success(answer)) => answer,
        Ok(CallResult::Timeout) => Err(ApiError::Unavailable("the VM did not answer in time".into())),
        _ => Err(ApiError::Unavailable("the VM's actor is not running".into())),
    }
}

/// The VM's record and the host it is on.
pub(crate) async fn locate(fleet: &Fleet, vm: &str) -> Result<(VmView, String), ApiError> {
    let (spec, status) = read_vm(&fleet.store, vm)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no VM {vm}")))?;
    let host = status
        .host
        .clone()
        .ok_or_else(|| ApiError::Conflict(format!("VM {vm} has no host yet")))?;
    Ok((VmView { spec, status }, host))
}

/// Has the VM's actor carry out `command`.
pub(crate) async fn act_on(fleet: &Fleet, vm: &str, command: VmCommand) -> Result<VmView, ApiError> {
    let (_, host) = locate(fleet, vm).await?;
    let actor = vm_actor(fleet, &host, vm).await?;
    let wait = command.wait();
    act(&actor, command, wait).await
}

/// The VM as its actor sees it (with the latest usage sample), else as recorded.
pub(crate) async fn get(fleet: &Fleet, vm: &str) -> Result<Option<VmView>, ApiError> {
    let Some((spec, status)) = read_vm(&fleet.store, vm).await? else {
        return Ok(None);
    };
    if let Some(host) = &status.host {
        if let Ok(actor) = vm_actor(fleet, host, vm).await {
            if let Ok(view) = view_of(&actor).await {
                return Ok(Some(view));
            }
        }
    }
    Ok(Some(VmView { spec, status }))
}

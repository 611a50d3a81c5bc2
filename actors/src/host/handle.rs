//! Calls into this node's actors of hosts and VMs, each bounded: a host's driver (its VM
//! actors, what libvirt lists on it) and the `hosts` supervisor.

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};

use super::{DomainObs, Fleet, HostMsg};
use crate::error::ApiError;
use crate::vm::VmMsg;

/// How long a quick call into a driver or supervisor may take.
pub(crate) const ASK: Duration = Duration::from_secs(10);

/// Calls a local actor and waits at most `limit` for its answer.
pub(crate) async fn ask<M: ractor::Message, T: Send + 'static>(
    actor: &ActorRef<M>,
    msg: impl FnOnce(RpcReplyPort<T>) -> M,
    what: &str,
    limit: Duration,
) -> Result<T, ApiError> {
    match actor.call(msg, Some(limit)).await {
        Ok(CallResult::Success(answer)) => Ok(answer),
        Ok(CallResult::Timeout) => Err(ApiError::Unavailable(format!("{what} did not answer in time"))),
        _ => Err(ApiError::Unavailable(format!("{what} is not running"))),
    }
}

/// The actors of the VMs on `host`, by VM id, if its driver answers within `limit`.
pub(crate) async fn vm_actors(
    fleet: &Fleet,
    host: &str,
    limit: Duration,
) -> Result<Vec<(String, ActorRef<VmMsg>)>, ApiError> {
    let driver = fleet.driver(host)?;
    ask(&driver, HostMsg::Vms, "the host driver", limit).await
}

/// What libvirt reports on the host (an id or name) now.
pub(crate) async fn domains(fleet: &Fleet, host: &str) -> Result<Vec<DomainObs>, ApiError> {
    let id = fleet.find(host)?;
    let driver = fleet.driver(&id)?;
    ask(&driver, HostMsg::Domains, "the host driver", ASK).await?
}

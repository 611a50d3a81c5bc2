//! Adding a host to this node: its spec is kept, it is registered in the fleet, and its driver
//! starts under the `hosts` supervisor.

use std::sync::Arc;

use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::idempotency::Guard;
use troupe_runtime::store::Batch;
use troupe_runtime::supervision::{ChildSpec, Intensity, SupervisorMsg};

use super::children::FIRST_LOOK;
use super::handle::{ask, ASK};
use super::{host_child, AddHostRequest, Fleet, HostMode, HostSpec, HostView};
use crate::error::ApiError;
use crate::tables::HOSTS;

/// Adds the host `request` describes; `intensity` bounds its driver's restarts. The guard's
/// answer is recorded with the host.
pub(crate) async fn add(
    fleet: &Arc<Fleet>,
    request: AddHostRequest,
    intensity: Intensity,
    guard: Option<&Guard>,
) -> Result<HostView, ApiError> {
    if let Some(path) = request.uri.strip_prefix("test://").filter(|p| p.ends_with(".xml")) {
        // libvirt's XML parser would print its complaint to the terminal; say it here.
        if !tokio::fs::try_exists(path).await.unwrap_or(false) {
            return Err(ApiError::invalid(format!("uri: no node XML file at {path}")));
        }
    }
    // Unique in the cluster, read from this node's replica (two adds racing on two nodes
    // can both pass); every node's simulated hosts share their names, named `sim-1@node`.
    // Nor does a host of this node drive the URI already: two hosts of one hypervisor each
    // took the other's VMs for stale copies and destroyed them, every second.
    let (name, uri, node) = (request.name.clone(), request.uri.clone(), fleet.node.clone());
    let (named, driving) = fleet
        .store
        .view(move |v| {
            let (mut named, mut driving) = (None, None);
            v.scan(HOSTS, None, |_, bytes| {
                let spec: crate::host::HostSpec = troupe_runtime::codec::decode(bytes)?;
                if spec.name == name {
                    named = Some(spec.node);
                } else if !spec.uri.is_empty() && spec.uri == uri && spec.node == node {
                    driving = Some(spec.name);
                }
                Ok(named.is_none() && driving.is_none())
            })?;
            Ok((named, driving))
        })
        .await?;
    if let Some(node) = named {
        return Err(ApiError::Conflict(format!(
            "a host named {} exists already, on node {node}: host names are unique in the cluster",
            request.name
        )));
    }
    if let Some(other) = driving {
        return Err(ApiError::Conflict(format!(
            "host {other} of node {} drives {} already: two hosts of one hypervisor would each take the \
             other's VMs for stale copies and destroy them (remove {other} first, or give another URI)",
            fleet.node, request.uri
        )));
    }
    let spec = HostSpec {
        id: crate::ids::new_id(&fleet.node),
        name: request.name,
        uri: request.uri,
        node: fleet.node.clone(),
        labels: request.labels.into_iter().collect(),
        overcommit: request.overcommit.unwrap_or_default(),
        reserved_memory_mib: request.reserved_memory_mib.unwrap_or(0),
        mode: HostMode::Active,
        simulated: false,
        created_at: troupe_runtime::clock::now(),
    };
    let id = spec.id.clone();
    launch(fleet, spec, intensity, guard).await?;
    fleet.host_view(&id)
}

/// Keeps a new host's spec, registers it and starts its driver, then waits for the driver's
/// first look at the host (outside the `hosts` supervisor, which a host that does not answer
/// holds up in no way): the host is UP, or UNREACHABLE with the reason.
async fn launch(
    fleet: &Arc<Fleet>,
    spec: HostSpec,
    intensity: Intensity,
    guard: Option<&Guard>,
) -> Result<(), ApiError> {
    let data = json!({ "name": spec.name, "uri": spec.uri, "node": spec.node, "simulated": spec.simulated });
    let mut batch = Batch::new()
        .put(HOSTS, spec.id.clone(), troupe_runtime::codec::encode(&spec)?)
        .event(NewEvent::new("HOST_ADDED", Some(spec.id.clone()), data));
    if let Some(guard) = guard {
        guard.record(&mut batch, &spec.id)?;
    }
    fleet.store.write(batch).await?;
    let id = spec.id.clone();
    fleet.register(spec);
    let supervisor = fleet
        .supervisor
        .get()
        .ok_or_else(|| ApiError::Unavailable("the hosts supervisor is not running".into()))?;
    let child: Arc<dyn ChildSpec> = host_child(fleet, id.clone(), intensity);
    ask(
        &supervisor,
        |r| SupervisorMsg::StartChild(child, r),
        "the hosts supervisor",
        ASK,
    )
    .await?
    .map_err(|e| ApiError::Internal(format!("the driver of host {id} did not start: {e}")))?;
    fleet.first_looks(std::slice::from_ref(&id), FIRST_LOOK).await;
    Ok(())
}

//! Driving a host as its node's start does: a simulated host's node file made in this node's
//! data dir, its VMs' claims restored (a migration cut short marked FAILED), its driver
//! started. Used at start for the node's own hosts, and for a host the cluster moved here
//! from a lost node (see `crate::failover`).

use std::collections::HashSet;
use std::sync::Arc;

use troupe_runtime::events::NewEvent;
use troupe_runtime::store::Batch;
use troupe_runtime::supervision::{ChildSpec, Intensity, SupervisorMsg};

use super::children::FIRST_LOOK;
use super::handle::{ask, ASK};
use super::{host_child, Fleet, HostSpec};
use crate::error::ApiError;
use crate::tables::{HOSTS, VMS, VM_STATUS};
use crate::vm::{MigrationPhase, VmSpec, VmStatus};

/// Makes the node file libvirt's test driver reads for a simulated host (32 CPUs and 64 GiB)
/// in this node's data dir, and points the host's URI at it. A host another node made (one
/// that moved here) has its qualified name's file: this node's own `sim-1` has `sim-1.xml`.
pub(crate) async fn prepare_simulated(fleet: &Fleet, spec: &mut HostSpec) -> Result<(), ApiError> {
    let dir = fleet.settings.data_dir.join("hosts");
    let file = match crate::ids::home(&spec.id) == Some(fleet.node.as_str()) {
        true => spec.name.clone(),
        false => spec.qualified_name(),
    };
    let path = std::path::absolute(dir.join(format!("{file}.xml"))).map_err(|e| ApiError::Internal(e.to_string()))?;
    let (parent, file) = (dir.clone(), path.clone());
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&parent)?;
        if !file.exists() {
            std::fs::write(&file, super::simulated_node_xml(32, 64 * 1024))?;
        }
        Ok::<_, std::io::Error>(())
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(format!("{}: {e}", dir.display())))?;
    let uri = format!("test://{}", path.display());
    if spec.uri != uri {
        spec.uri = uri;
        fleet
            .store
            .write(Batch::new().put(HOSTS, spec.id.clone(), troupe_runtime::codec::encode(&*spec)?))
            .await?;
    }
    Ok(())
}

/// Restores the claims of the VMs on `hosts` (and, with `unplaced`, of those on no host that
/// this node holds), marking FAILED a migration that was cut short: the VM's record still
/// names its source host, whose driver re-creates or adopts it; a copy on the target is
/// stale and destroyed.
pub(crate) async fn restore_vms(fleet: &Fleet, hosts: &HashSet<String>, unplaced: bool) -> Result<(), ApiError> {
    let node = fleet.node.clone();
    // Each VM with whether this node holds it when no host holds it.
    let vms: Vec<(VmSpec, VmStatus, bool)> = fleet
        .store
        .view(move |v| {
            let mut out = Vec::new();
            v.scan(VMS, None, |id, bytes| {
                if let Some(status) = v.get(VM_STATUS, id)? {
                    out.push((
                        troupe_runtime::codec::decode(bytes)?,
                        troupe_runtime::codec::decode(&status)?,
                        crate::cluster::directory::held_in(v, id, &node)?,
                    ));
                }
                Ok(true)
            })?;
            Ok(out)
        })
        .await?;
    let held = |status: &VmStatus, held_here: bool| match &status.host {
        Some(host) => hosts.contains(host.as_str()),
        None => unplaced && held_here,
    };
    let vms = vms
        .into_iter()
        .filter(|(_, status, here)| held(status, *here))
        .map(|(spec, status, _)| (spec, status));
    for (spec, mut status) in vms {
        if let Some(host) = &status.host {
            fleet.restore_claim(&spec, host);
        }
        let cut_short = status.migration.as_mut().filter(|m| !m.phase.is_over()).map(|m| {
            m.phase = MigrationPhase::Failed;
            m.error = Some("the node that ran the migration stopped or was lost before it ended".into());
            m.finished_at = Some(troupe_runtime::clock::now());
            m.clone()
        });
        // Told as a migration that fails while its node runs is: an event, the count.
        if let Some(m) = &cut_short {
            let mut data = crate::vm::migration_data(m);
            data["name"] = serde_json::json!(spec.name);
            data["host"] = serde_json::json!(status.host);
            let event = NewEvent::new("VM_MIGRATION_FAILED", Some(spec.id.clone()), data);
            fleet
                .store
                .write(
                    Batch::new()
                        .put(VM_STATUS, spec.id.clone(), troupe_runtime::codec::encode(&status)?)
                        .event(event),
                )
                .await?;
            crate::vm::count_migration(m);
        }
    }
    Ok(())
}

/// Drives here the host `id` the cluster moved to this node: a simulated one is re-created
/// from a node file of this node, a remote one is reconnected to from here, and its driver
/// re-creates or adopts its VMs as after a node restart.
pub(crate) async fn take_over(fleet: &Arc<Fleet>, id: &str, intensity: Intensity) -> Result<(), ApiError> {
    let bytes = fleet
        .store
        .get(HOSTS, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("host {id} is not stored")))?;
    let mut spec: HostSpec = troupe_runtime::codec::decode(&bytes)?;
    let supervisor = fleet
        .supervisor
        .get()
        .ok_or_else(|| ApiError::Unavailable("the hosts supervisor is not running".into()))?;
    let running = ask(
        &supervisor,
        |r| SupervisorMsg::Holds(id.to_owned(), r),
        "the hosts supervisor",
        ASK,
    )
    .await?;
    if running {
        return Ok(());
    }
    if spec.simulated {
        prepare_simulated(fleet, &mut spec).await?;
    }
    fleet.register(spec);
    restore_vms(fleet, &HashSet::from([id.to_owned()]), false).await?;
    let child: Arc<dyn ChildSpec> = host_child(fleet, id.to_owned(), intensity);
    ask(
        &supervisor,
        |r| SupervisorMsg::StartChild(child, r),
        "the hosts supervisor",
        ASK,
    )
    .await?
    .map_err(|e| ApiError::Internal(format!("the driver of host {id} did not start: {e}")))?;
    fleet.first_looks(&[id.to_owned()], FIRST_LOOK).await;
    Ok(())
}

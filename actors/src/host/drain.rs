//! Draining a host: every VM moves off it (live where the driver can), at most
//! `max_outbound_migrations` at once, and the host then enters MAINTENANCE.

use std::sync::Arc;

use ractor::ActorRef;
use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::Batch;

use super::{vm_actors, DrainProgress, Fleet, HostMode, HostState, HostView};
use crate::error::ApiError;
use crate::vm::{migrate, view_of, MigrationPhase, VmMsg};

/// Starts draining an UP host (`drainHost`); answers the host as DRAINING at once.
pub(crate) async fn drain(fleet: &Arc<Fleet>, host: &str) -> Result<HostView, ApiError> {
    let id = fleet.find(host)?;
    match fleet.state(&id) {
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
    fleet.set_mode(&id, HostMode::Draining).await?;
    let actors: Vec<_> = vm_actors(fleet, &id, super::ASK)
        .await?
        .into_iter()
        .map(|(_, actor)| actor)
        .collect();
    // The drain's progress shows from the first answer.
    fleet.set_drain(
        &id,
        Some(DrainProgress {
            total: actors.len() as u32,
            ..Default::default()
        }),
    );
    tokio::spawn(move_all(fleet.clone(), id.clone(), actors));
    fleet.host_view(&id)
}

/// Puts an empty host in MAINTENANCE, or takes a host out of it (or calls off its drain).
pub(crate) async fn set_maintenance(fleet: &Fleet, host: &str, enabled: bool) -> Result<HostView, ApiError> {
    let id = fleet.find(host)?;
    if !enabled {
        return fleet.set_mode(&id, HostMode::Active).await;
    }
    let holds = fleet.host_view(&id)?.vms;
    if holds > 0 {
        return Err(ApiError::Conflict(format!(
            "host {host} holds {holds} VM(s): drainHost moves them away and then puts it in MAINTENANCE"
        )));
    }
    fleet.set_mode(&id, HostMode::Maintenance).await
}

/// Moves every VM off `host`, at most `max_outbound_migrations` at once, then puts the host
/// in MAINTENANCE (or leaves it DRAINING, with the failures counted, if some could not move).
async fn move_all(fleet: Arc<Fleet>, host: String, actors: Vec<ActorRef<VmMsg>>) {
    let total = actors.len() as u32;
    let mut progress = DrainProgress {
        total,
        ..Default::default()
    };
    fleet.drain_progress(&host, progress.clone());
    let mut moves = futures::stream::FuturesUnordered::new();
    for actor in actors {
        let (fleet, host) = (fleet.clone(), host.clone());
        moves.push(tokio::spawn(async move {
            let vm = view_of(&actor).await?.spec.id;
            migrate(&fleet, &vm, &host, None, "drain").await
        }));
    }
    use futures::StreamExt;
    while let Some(done) = moves.next().await {
        match done {
            Ok(Ok(m)) if m.phase == MigrationPhase::Succeeded => progress.moved += 1,
            _ => progress.failed += 1,
        }
        fleet.drain_progress(&host, progress.clone());
        let event = NewEvent::new(
            "HOST_DRAIN_PROGRESS",
            Some(host.clone()),
            json!({ "total": progress.total, "moved": progress.moved, "failed": progress.failed }),
        );
        let _ = fleet.store.write(Batch::new().event(event)).await;
    }
    progress.done = true;
    if let Err(e) = fleet.finish_drain(&host, progress.clone()).await {
        tracing::error!(%host, error = %e, "drained, but could not enter MAINTENANCE");
    }
    if progress.failed > 0 {
        fleet.note_error(
            &host,
            format!("{} of {} VMs could not be moved", progress.failed, progress.total),
        );
        tracing::warn!(%host, failed = progress.failed, "drain incomplete; the host stays DRAINING");
    }
}

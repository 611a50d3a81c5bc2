//! Evacuation of a host that is DOWN: its VMs that should run are re-created elsewhere from
//! their specs (their domains cannot be asked to move).

use std::sync::Arc;

use ractor::ActorRef;
use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::Batch;

use super::Fleet;
use crate::vm::{hand_over, view_of, Migration, MigrationKind, MigrationPhase, RunPolicy, VmMsg};

/// Re-creates a DOWN host's ALWAYS and RERUN_ON_FAILURE VMs on other hosts from their specs.
/// Those that find no host stay and are tried again at the driver's next tick.
pub async fn evacuate(fleet: &Arc<Fleet>, host: &str, actors: Vec<ActorRef<VmMsg>>) {
    for actor in actors {
        let Ok(view) = view_of(&actor).await else { continue };
        let spec = &view.spec;
        if !matches!(spec.run_policy, RunPolicy::Always | RunPolicy::RerunOnFailure) {
            continue;
        }
        let target = match fleet.claim(spec, None, Some(host)) {
            Ok(t) => t,
            Err(e) => {
                if view.status.last_error.as_deref() != Some(e.to_string().as_str()) {
                    let event = NewEvent::new(
                        "VM_EVACUATION_FAILED",
                        Some(spec.id.clone()),
                        json!({ "name": spec.name, "host": host, "error": e.to_string() }),
                    );
                    let _ = fleet.store.write(Batch::new().event(event)).await;
                }
                continue;
            }
        };
        let now = troupe_runtime::clock::now();
        let m = Migration {
            id: uuid::Uuid::now_v7().to_string(),
            source: host.to_owned(),
            target: Some(target.clone()),
            phase: MigrationPhase::Succeeded,
            kind: Some(MigrationKind::Orchestrated),
            reason: "evacuation".into(),
            error: None,
            started_at: now,
            finished_at: Some(now),
        };
        match hand_over(fleet, &actor, &m, &target).await {
            Ok(_) => tracing::info!(vm = %spec.id, from = %host, to = %target, "VM evacuated"),
            Err(e) => {
                fleet.release(&spec.id, &target);
                tracing::error!(vm = %spec.id, error = %e, "evacuation failed");
            }
        }
    }
}

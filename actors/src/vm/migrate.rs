//! Moving a VM between this node's hosts: migration (live through libvirt where the driver
//! can, else orchestrated), and the hand-over of the VM to an actor under the new host's
//! driver (which evacuation uses too).

use std::sync::Arc;

use ractor::ActorRef;

use super::handle::{act, call, locate, view_of, vm_actor, CALL};
use super::{Migration, MigrationKind, MigrationPhase, VmCommand, VmMsg, VmView};
use crate::error::ApiError;
use crate::host::{Fleet, HostMsg, LibvirtError};

async fn progress(actor: &ActorRef<VmMsg>, m: &Migration) -> Result<(), ApiError> {
    call(actor, |r| VmMsg::Migrating(m.clone(), r), "the VM's actor").await?
}

/// Migrates a VM (`migrateVm`) to `target` (a host id or name of this node), or where the
/// placer puts it; answers when the migration has ended.
pub(crate) async fn request(fleet: &Arc<Fleet>, vm: &str, target: Option<String>) -> Result<Migration, ApiError> {
    let (_, source) = locate(fleet, vm).await?;
    let target = match target {
        Some(t) => {
            let t = fleet.find(&t)?;
            if t == source {
                return Err(ApiError::invalid("targetHost is the host the VM is on"));
            }
            Some(t)
        }
        None => None,
    };
    // Runs to the end even if the caller goes away.
    let (fleet, vm) = (fleet.clone(), vm.to_owned());
    tokio::spawn(async move { migrate(&fleet, &vm, &source, target, "migrateVm").await })
        .await
        .map_err(|e| ApiError::Internal(format!("the migration did not finish: {e}")))?
}

/// Moves a VM from `source` to `target` (or where the placer puts it). Always ends with the
/// migration SUCCEEDED or FAILED; a failed one leaves the VM where it was.
pub async fn migrate(
    fleet: &Arc<Fleet>,
    vm: &str,
    source: &str,
    target: Option<String>,
    reason: &str,
) -> Result<Migration, ApiError> {
    let actor = vm_actor(fleet, source, vm).await?;
    let view = view_of(&actor).await?;
    if view.status.migration.as_ref().is_some_and(|m| !m.phase.is_over()) {
        return Err(ApiError::Conflict(format!("VM {vm} is already migrating")));
    }
    let mut m = Migration {
        id: uuid::Uuid::now_v7().to_string(),
        source: source.to_owned(),
        target: None,
        phase: MigrationPhase::Pending,
        kind: None,
        reason: reason.to_owned(),
        error: None,
        started_at: troupe_runtime::clock::now(),
        finished_at: None,
    };
    progress(&actor, &m).await?;
    let outcome = run(fleet, &actor, &view, &mut m, target).await;
    let result = match outcome {
        Ok(done) => Ok(done),
        Err(e) => {
            m.phase = MigrationPhase::Failed;
            m.error = Some(e.to_string());
            m.finished_at = Some(troupe_runtime::clock::now());
            if let Some(t) = &m.target {
                fleet.release(vm, t);
            }
            let _ = progress(&actor, &m).await;
            tracing::warn!(%vm, error = %e, "migration failed; the VM stays where it was");
            Ok(m)
        }
    };
    if let Ok(m) = &result {
        count(m);
    }
    result
}

/// Counts a migration that ended in `troupe_migrations_total{outcome,kind}` (`kind` is
/// `NONE` for one that ended before its kind was chosen).
pub(crate) fn count(m: &Migration) {
    let kind = m.kind.map_or("NONE", |k| {
        if k == MigrationKind::Live {
            "LIVE"
        } else {
            "ORCHESTRATED"
        }
    });
    metrics::counter!("troupe_migrations_total", "outcome" => m.phase.name(), "kind" => kind).increment(1);
}

async fn run(
    fleet: &Arc<Fleet>,
    actor: &ActorRef<VmMsg>,
    view: &VmView,
    m: &mut Migration,
    target: Option<String>,
) -> Result<Migration, ApiError> {
    let spec = &view.spec;
    let outbound = fleet
        .outbound(&m.source)
        .ok_or_else(|| ApiError::NotFound(format!("no host {}", m.source)))?;
    // At most max_outbound_migrations leave one host at once; the rest wait in PENDING.
    let _permit = outbound
        .acquire_owned()
        .await
        .map_err(|_| ApiError::Unavailable("the host is being removed".into()))?;
    m.phase = MigrationPhase::Scheduling;
    progress(actor, m).await?;
    let chosen = fleet.claim(spec, target.as_deref(), Some(&m.source))?;
    m.target = Some(chosen.clone());
    m.phase = MigrationPhase::PreparingTarget;
    progress(actor, m).await?;
    let lost = |e: LibvirtError| ApiError::Unavailable(e.to_string());
    let src = fleet
        .libvirt(&m.source)
        .ok_or_else(|| ApiError::Unavailable("the source host has no connection".into()))?;
    let dst = fleet
        .libvirt(&chosen)
        .ok_or_else(|| ApiError::Unavailable("the target host has no connection".into()))?;
    dst.capacity().await.map_err(lost)?;
    let current = src.observe(&spec.domain).await.map_err(lost)?;
    let active = current.as_ref().is_some_and(|o| o.state.is_active());
    let test_driver = src.uri().starts_with("test:") || dst.uri().starts_with("test:");
    m.phase = MigrationPhase::Running;
    if active && !test_driver {
        m.kind = Some(MigrationKind::Live);
        progress(actor, m).await?;
        match src.migrate_live(&spec.domain, &dst).await {
            Ok(()) => return handover(fleet, actor, m, &chosen).await,
            Err(e) if e.is_unsupported() => {
                tracing::info!(vm = %spec.id, error = %e, "live migration unsupported; moving the VM instead");
            }
            Err(e) => return Err(lost(e)),
        }
    }
    m.kind = Some(MigrationKind::Orchestrated);
    progress(actor, m).await?;
    let xml = crate::host::domain_xml(dst.uri(), &spec.domain, &spec.uuid, spec.vcpus, spec.memory_mib);
    let prepared = async {
        dst.define(xml).await?;
        if active {
            dst.on_domain(&spec.domain, |d| d.create().map(|_| ())).await?;
        }
        Ok::<_, LibvirtError>(())
    }
    .await;
    if let Err(e) = prepared {
        let _ = dst.remove(&spec.domain).await;
        return Err(lost(e));
    }
    // The copy on the target runs; the source's goes. If the source cannot be reached now,
    // its copy is stale and its driver destroys it when it can.
    if let Err(e) = src.remove(&spec.domain).await {
        if !e.is_lost() {
            let _ = dst.remove(&spec.domain).await;
            return Err(lost(e));
        }
        tracing::warn!(vm = %spec.id, error = %e, "source unreachable; its stale copy goes when it is back");
    }
    handover(fleet, actor, m, &chosen).await
}

/// Ends a successful move: the VM's actor on `target` takes it over.
async fn handover(
    fleet: &Arc<Fleet>,
    actor: &ActorRef<VmMsg>,
    m: &mut Migration,
    target: &str,
) -> Result<Migration, ApiError> {
    m.phase = MigrationPhase::Succeeded;
    m.finished_at = Some(troupe_runtime::clock::now());
    hand_over(fleet, actor, m, target).await?;
    Ok(m.clone())
}

/// Hands the VM from its actor on the source to a new one under `target`'s driver. The
/// record names the target only once the new actor holds the VM: if the target's driver is
/// gone (the host removed meanwhile) the VM stays with its source actor, never with none.
pub(crate) async fn hand_over(
    fleet: &Arc<Fleet>,
    actor: &ActorRef<VmMsg>,
    m: &Migration,
    target: &str,
) -> Result<(), ApiError> {
    let view = call(
        actor,
        |r| VmMsg::Leave {
            host: target.to_owned(),
            migration: m.clone(),
            reply: r,
        },
        "the VM's actor",
    )
    .await?;
    let vm = view.spec.id.clone();
    if let Err(e) = adopt(fleet, target, view).await {
        let _ = actor.cast(VmMsg::Stay);
        return Err(e);
    }
    actor.stop(Some("handed over".into()));
    fleet.release(&vm, &m.source);
    tracing::info!(%vm, from = %m.source, to = %target, "VM handed over to another host");
    Ok(())
}

/// Starts the VM's actor under `host`'s driver, has it record the VM there, and reconcile.
async fn adopt(fleet: &Fleet, host: &str, view: VmView) -> Result<(), ApiError> {
    let driver = fleet.driver(host)?;
    let actor = call(
        &driver,
        |r| HostMsg::AddVm(Box::new((view.spec, view.status)), r),
        "the target host's driver",
    )
    .await??;
    if let Err(e) = call(&actor, VmMsg::Arrive, "the VM's new actor").await.and_then(|a| a) {
        actor.stop(Some("the hand-over failed".into()));
        return Err(e);
    }
    // The VM is on the target now; a failed first reconcile is retried at the next sweep.
    if let Err(e) = act(&actor, VmCommand::Ensure, CALL).await {
        tracing::warn!(host = %host, error = %e, "a VM taken over could not be reconciled yet");
    }
    Ok(())
}

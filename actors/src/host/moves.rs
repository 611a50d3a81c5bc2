//! Moving VMs between this node's hosts: migration (live through libvirt where the driver
//! can, else orchestrated), drain, and evacuation of a host that is DOWN.

use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::ActorRef;
use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::Batch;

use super::{DrainProgress, Fleet, HostMsg, LibvirtError};
use crate::error::ApiError;
use crate::vm::{Migration, MigrationKind, MigrationPhase, RunPolicy, VmCommand, VmMsg, VmView};

const CALL: Duration = Duration::from_secs(30);

async fn call<T: Send + 'static, M: ractor::Message>(
    actor: &ActorRef<M>,
    msg: impl FnOnce(ractor::RpcReplyPort<T>) -> M,
    what: &str,
) -> Result<T, ApiError> {
    match actor.call(msg, Some(CALL)).await {
        Ok(CallResult::Success(answer)) => Ok(answer),
        Ok(CallResult::Timeout) => Err(ApiError::Unavailable(format!("{what} did not answer in time"))),
        _ => Err(ApiError::Unavailable(format!("{what} is not running"))),
    }
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

async fn progress(actor: &ActorRef<VmMsg>, m: &Migration) -> Result<(), ApiError> {
    call(actor, |r| VmMsg::Migrating(m.clone(), r), "the VM's actor").await?
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
        let kind = m.kind.map_or("NONE", |k| {
            if k == MigrationKind::Live {
                "LIVE"
            } else {
                "ORCHESTRATED"
            }
        });
        metrics::counter!("troupe_migrations_total", "outcome" => m.phase.name(), "kind" => kind).increment(1);
    }
    result
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
    let xml = super::domain_xml(dst.uri(), &spec.domain, &spec.uuid, spec.vcpus, spec.memory_mib);
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
async fn hand_over(fleet: &Arc<Fleet>, actor: &ActorRef<VmMsg>, m: &Migration, target: &str) -> Result<(), ApiError> {
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
    if let Err(e) = super::driver::act(&actor, VmCommand::Ensure, CALL).await {
        tracing::warn!(host = %host, error = %e, "a VM taken over could not be reconciled yet");
    }
    Ok(())
}

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

/// Moves every VM off `host`, at most `max_outbound_migrations` at once, then puts the host
/// in MAINTENANCE (or leaves it DRAINING, with the failures counted, if some could not move).
pub async fn drain(fleet: Arc<Fleet>, host: String, actors: Vec<ActorRef<VmMsg>>) {
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

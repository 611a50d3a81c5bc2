//! Each action's prediction (the expected effects), injection and revert.

use std::time::Duration;

use chrono::Utc;
use ractor::ActorRef;
use tokio::sync::{oneshot, watch};
use troupe_runtime::supervision::{CrashPlan, CrashRequest, SupervisorMsg};

use super::select::Candidate;
use super::{Expected, FaultAction, Injection};
use crate::agent::AgentMsg;
use crate::error::ApiError;
use crate::host::{Fault, HostState};
use crate::service::Api;

/// How long a crash request may take to reach the child's supervisor through the tree.
const ROUTE: Duration = Duration::from_secs(10);
/// How long a hang waits for the agent's loop to take it before counting it armed anyway
/// (the loop may be busy with a long message).
const HOLD_WITHIN: Duration = Duration::from_secs(5);

/// What an armed fault needs to be undone.
pub(crate) enum Armed {
    /// Nothing stays armed (a crash, a kill).
    Nothing,
    /// A held loop, released by sending true (or by dropping the sender).
    Release(watch::Sender<bool>),
    /// Stopped process groups, continued by SIGCONT.
    Continue(Vec<u32>),
    /// A host's broken or hung connection, healed by a reconnect.
    Reconnect(String, crate::service::Hosts),
}

fn expected(id: &str, effect: &str) -> Expected {
    Expected {
        id: id.to_owned(),
        effect: effect.to_owned(),
    }
}

async fn crash(api: &Api, target: &Candidate, dry_run: bool, allow_escalation: bool) -> Result<CrashPlan, ApiError> {
    let root = api.slots.root.running("the node's supervision tree")?;
    let request = CrashRequest {
        owner: target.owner.clone(),
        child: target.id.clone(),
        dry_run,
        allow_escalation,
        kill: false,
    };
    let answer = crate::call::ask_within(
        &root,
        |r| SupervisorMsg::Crash(request, r),
        "the supervision tree",
        ROUTE,
    )
    .await?;
    match answer {
        Ok(Some(plan)) => Ok(plan),
        Ok(None) => Err(ApiError::NotFound(format!(
            "no supervisor {} holds {} now",
            target.owner, target.id
        ))),
        Err(refused) if refused.starts_with("refused") => Err(ApiError::Conflict(refused)),
        Err(other) => Err(ApiError::Conflict(other)),
    }
}

fn host(target: &Candidate, action: FaultAction) -> Result<(), ApiError> {
    if target.kind != "HOST" {
        return Err(ApiError::invalid(format!(
            "{action:?} reaches hosts; {} is a {}",
            target.id, target.kind
        )));
    }
    Ok(())
}

fn agent(api: &Api, target: &Candidate, action: FaultAction) -> Result<ActorRef<AgentMsg>, ApiError> {
    if target.kind != "AGENT" {
        return Err(ApiError::invalid(format!(
            "{action:?} reaches agents; {} is a {}",
            target.id, target.kind
        )));
    }
    api.slots
        .handles
        .get(&target.id)
        .and_then(|h| h.actor())
        .ok_or_else(|| ApiError::Conflict(format!("agent {} is not running", target.id)))
}

async fn groups(actor: &ActorRef<AgentMsg>, target: &Candidate) -> Result<Vec<u32>, ApiError> {
    let probe = crate::call::ask(actor, AgentMsg::Probe, "the agent").await?;
    if probe.process_groups.is_empty() {
        return Err(ApiError::Conflict(format!(
            "agent {} runs no process now (only process and exec agents do)",
            target.id
        )));
    }
    Ok(probe.process_groups)
}

/// What the fault is expected to do, checked against the target as it is now (a crash that
/// would push a supervisor past its intensity is refused unless allowed).
pub(crate) async fn predict(
    api: &Api,
    action: FaultAction,
    target: &Candidate,
    allow_escalation: bool,
) -> Result<Vec<Expected>, ApiError> {
    Ok(match action {
        FaultAction::Crash => {
            let plan = crash(api, target, true, allow_escalation).await?;
            let mut effects: Vec<Expected> = plan.restart.iter().map(|id| expected(id, "RESTART")).collect();
            if plan.escalate {
                effects.push(expected(&target.id, "FAIL"));
                effects.push(expected(&plan.supervisor, "ESCALATE"));
            }
            if plan.give_up {
                effects.push(expected(&target.id, "GIVE_UP"));
            }
            effects
        }
        FaultAction::Hang => {
            agent(api, target, action)?;
            vec![expected(&target.id, "HELD")]
        }
        FaultAction::ProcessKill => {
            groups(&agent(api, target, action)?, target).await?;
            vec![expected(&target.id, "PROCESS_REPLACED")]
        }
        FaultAction::ProcessPause => {
            groups(&agent(api, target, action)?, target).await?;
            vec![expected(&target.id, "PAUSED_THEN_CONTINUED")]
        }
        FaultAction::HostDisconnect | FaultAction::HostHang => {
            host(target, action)?;
            vec![expected(&target.id, "UNREACHABLE_THEN_UP")]
        }
    })
}

fn signal(groups: &[u32], sig: libc::c_int) {
    for &g in groups {
        crate::agent::signal_group(g, sig);
    }
}

/// Injects the fault; answers what must be undone later.
pub(crate) async fn inject(
    api: &Api,
    action: FaultAction,
    target: &Candidate,
    allow_escalation: bool,
    inj: &mut Injection,
) -> Result<Armed, ApiError> {
    inj.injected_at = Utc::now();
    match action {
        FaultAction::Crash => {
            crash(api, target, false, allow_escalation).await?;
            Ok(Armed::Nothing)
        }
        FaultAction::Hang => {
            let actor = agent(api, target, action)?;
            let (gate, released) = watch::channel(false);
            let (held, taken) = oneshot::channel();
            actor
                .cast(AgentMsg::Hang { gate: released, held })
                .map_err(|e| ApiError::Conflict(format!("agent {}: {e}", target.id)))?;
            if tokio::time::timeout(HOLD_WITHIN, taken).await.is_ok_and(|r| r.is_ok()) {
                inj.effective_at = Some(Utc::now());
            }
            Ok(Armed::Release(gate))
        }
        FaultAction::ProcessKill => {
            let groups = groups(&agent(api, target, action)?, target).await?;
            signal(&groups, libc::SIGKILL);
            inj.effective_at = Some(Utc::now());
            inj.groups = groups;
            Ok(Armed::Nothing)
        }
        FaultAction::ProcessPause => {
            let groups = groups(&agent(api, target, action)?, target).await?;
            signal(&groups, libc::SIGSTOP);
            inj.effective_at = Some(Utc::now());
            inj.groups = groups.clone();
            Ok(Armed::Continue(groups))
        }
        FaultAction::HostDisconnect | FaultAction::HostHang => {
            host(target, action)?;
            let fault = if action == FaultAction::HostHang {
                Fault::HostHang
            } else {
                Fault::HostDisconnect
            };
            api.hosts().inject_fault(&target.id, fault).await?;
            inj.effective_at = Some(Utc::now());
            Ok(Armed::Reconnect(target.id.clone(), api.hosts().clone()))
        }
    }
}

/// Undoes an armed fault; idempotent.
pub(crate) async fn undo(armed: Armed) {
    match armed {
        Armed::Nothing => {}
        Armed::Release(gate) => {
            let _ = gate.send(true);
        }
        Armed::Continue(groups) => signal(&groups, libc::SIGCONT),
        Armed::Reconnect(host, hosts) => {
            if let Err(e) = hosts.inject_fault(&host, Fault::HostReconnect).await {
                tracing::warn!(%host, error = %e, "a host fault could not be healed");
            }
        }
    }
}

/// Whether the host is UP again.
pub(crate) async fn host_recovered(api: &Api, host: &str) -> bool {
    matches!(api.hosts().get(host).await, Ok(Some(h)) if h.state == HostState::Up)
}

/// Whether the agent answers now, and, for a killed process, runs another one.
pub(crate) async fn agent_recovered(api: &Api, target: &str, killed: &[u32]) -> bool {
    let Some(actor) = api.slots.handles.get(target).and_then(|h| h.actor()) else {
        return false;
    };
    match crate::call::ask_within(&actor, AgentMsg::Probe, "the agent", Duration::from_millis(500)).await {
        Ok(probe) => {
            probe.healthy
                && (killed.is_empty()
                    || (!probe.process_groups.is_empty() && probe.process_groups.iter().all(|g| !killed.contains(g))))
        }
        Err(_) => false,
    }
}

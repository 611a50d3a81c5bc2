//! Each action's prediction (the expected effects), injection and revert.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::ActorRef;
use tokio::sync::{mpsc, oneshot, watch};
use troupe_runtime::supervision::{CrashPlan, CrashRequest, Reach, ReachRequest, SupervisorMsg};

use super::select::Candidate;
use super::{Expected, FaultAction, Injection};
use crate::agent::AgentMsg;
use crate::cluster::remote::Service;
use crate::error::ApiError;
use crate::host::{Fault, HostState};
use crate::messaging::faults::{LinkFault, LinkFaults};
use crate::service::node::NodeService;
use crate::service::Api;
use crate::vm::VmMsg;
use troupe_runtime::store::{Hits, NodeFault};

/// How long a crash request may take to reach the child's supervisor through the tree.
const ROUTE: Duration = Duration::from_secs(10);
/// How long a hang waits for the agent's loop to take it before counting it armed anyway
/// (the loop may be busy with a long message).
const HOLD_WITHIN: Duration = Duration::from_secs(5);

/// A target picked for a fault, with what it arms on nodes (node actions only).
pub(crate) struct Target {
    pub action: FaultAction,
    pub candidate: Candidate,
    /// The node faults to arm, node by node; empty for faults of the tree.
    pub gates: Vec<(String, NodeFault)>,
    /// How long a node fault may stay armed at most (it heals itself then).
    pub hold: Duration,
    /// The link fault to arm on the target's messages (message actions only).
    pub link: Option<LinkFault>,
}

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
    /// A link fault armed as `id` on this node's mailboxes.
    Link(String, LinkFaults),
    /// Node faults armed as `id` on these nodes (this one's own first), disarmed in turn.
    Gates {
        id: String,
        nodes: Vec<String>,
        service: Box<NodeService>,
    },
}

/// What undoing a fault found.
#[derive(Default)]
pub(crate) struct Undone {
    /// How often its node faults were met, first when.
    pub hits: Hits,
    /// Nodes that could not be told to heal (their gates expire on their own).
    pub unhealed: Vec<String>,
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
pub(crate) async fn predict(api: &Api, t: &Target, allow_escalation: bool) -> Result<Vec<Expected>, ApiError> {
    let (action, target) = (t.action, &t.candidate);
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
            if target.kind == "AGENT" {
                agent(api, target, action)?;
            } else if target.kind == "VM" {
                vm_actor(api, target).await?;
            } else if reach(api, target, Reach::Ping(PROBE_WITHIN)).await.is_err() {
                return Err(ApiError::invalid(format!(
                    "{} ({}) cannot be held: HANG reaches agents, supervisors, the scheduler, swarm coordinators, host drivers and VMs",
                    target.id, target.kind
                )));
            }
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
        FaultAction::DomainDestroy | FaultAction::DomainUndefine => {
            let effect = vm_effect(api, target).await?;
            vec![expected(&target.id, effect)]
        }
        FaultAction::MessageDelay | FaultAction::MessageDrop => {
            agent(api, target, action)?;
            let effect = match action {
                FaultAction::MessageDelay => "MESSAGES_DELAYED",
                _ => "MESSAGES_DROPPED",
            };
            vec![expected(&target.id, effect)]
        }
        FaultAction::Partition | FaultAction::StoreReject | FaultAction::StoreSlowCommit | FaultAction::DiskFull => {
            reachable(api, t)?;
            let effect = match action {
                FaultAction::Partition => "CUT_OFF_THEN_UP",
                FaultAction::StoreReject => "WRITES_REJECTED",
                FaultAction::StoreSlowCommit => "COMMITS_SLOWED",
                _ => "WRITES_REFUSED",
            };
            vec![expected(&target.id, effect)]
        }
    })
}

/// Every node a node fault arms must be reachable now, so it can be armed and healed.
fn reachable(api: &Api, t: &Target) -> Result<(), ApiError> {
    let me = &api.ctx.node_name;
    for (node, _) in &t.gates {
        if node != me && !crate::cluster::remote::is_connected(NodeService::ROLE, node) {
            return Err(ApiError::Unavailable(format!(
                "node {node} is not connected to {me}: its fault could not be armed or healed"
            )));
        }
    }
    Ok(())
}

fn signal(groups: &[u32], sig: libc::c_int) {
    for &g in groups {
        crate::agent::signal_group(g, sig);
    }
}

/// Injects the fault; answers what must be undone later.
pub(crate) async fn inject(
    api: &Api,
    t: &Target,
    allow_escalation: bool,
    inj: &mut Injection,
) -> Result<Armed, ApiError> {
    let (action, target) = (t.action, &t.candidate);
    inj.injected_at = Utc::now();
    if action.reaches_nodes() {
        return arm(api, t, inj).await;
    }
    match action {
        FaultAction::Crash => {
            crash(api, target, false, allow_escalation).await?;
            Ok(Armed::Nothing)
        }
        FaultAction::Hang if target.kind != "AGENT" => {
            let (gate, released) = watch::channel(false);
            let (held, mut taken) = mpsc::unbounded_channel();
            if target.kind == "VM" {
                vm_actor(api, target)
                    .await?
                    .cast(VmMsg::Hold(released, held))
                    .map_err(|e| ApiError::Conflict(format!("VM {}: {e}", target.id)))?;
            } else {
                let hold = Reach::Hold {
                    release: released,
                    held,
                };
                reach(api, target, hold).await?;
            }
            if tokio::time::timeout(HOLD_WITHIN, taken.recv())
                .await
                .is_ok_and(|r| r.is_some())
            {
                inj.effective_at = Some(Utc::now());
            }
            Ok(Armed::Release(gate))
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
        FaultAction::DomainDestroy | FaultAction::DomainUndefine => {
            let fault = match action {
                FaultAction::DomainDestroy => Fault::DomainDestroy,
                _ => Fault::DomainUndefine,
            };
            api.hosts().inject_fault(&target.id, fault).await?;
            inj.effective_at = Some(Utc::now());
            Ok(Armed::Nothing)
        }
        FaultAction::MessageDelay | FaultAction::MessageDrop => {
            agent(api, target, action)?;
            let link = t
                .link
                .clone()
                .ok_or_else(|| ApiError::Internal("a message fault without its link".into()))?;
            let links = api.messages().mailboxes.links().clone();
            links.arm(&inj.id, link);
            Ok(Armed::Link(inj.id.clone(), links))
        }
        FaultAction::Partition | FaultAction::StoreReject | FaultAction::StoreSlowCommit | FaultAction::DiskFull => {
            unreachable!("node faults are armed above")
        }
    }
}

/// Arms a node fault's gates: the peers' first, this node's last (so this node can still
/// reach them while they are armed), each for at most the target's hold. If one cannot be
/// armed, those armed already are disarmed again.
async fn arm(api: &Api, t: &Target, inj: &mut Injection) -> Result<Armed, ApiError> {
    let me = api.ctx.node_name.clone();
    let service = api.node_service();
    let mut order: Vec<&(String, NodeFault)> = t.gates.iter().filter(|(n, _)| *n != me).collect();
    order.extend(t.gates.iter().filter(|(n, _)| *n == me));
    let mut armed = Armed::Gates {
        id: inj.id.clone(),
        nodes: Vec::new(),
        service: Box::new(service.clone()),
    };
    for (node, fault) in order {
        let hold = t.hold.as_millis() as u64;
        let done = match *node == me {
            true => api.experiments.arm_here(&inj.id, fault.clone(), t.hold),
            false => {
                crate::cluster::remote::Peer(&service, node.clone())
                    .arm(inj.id.clone(), fault.clone(), hold)
                    .await
            }
        };
        if let Err(e) = done {
            undo(armed).await;
            return Err(ApiError::Unavailable(format!(
                "the fault could not be armed on {node}: {e}"
            )));
        }
        if let Armed::Gates { nodes, .. } = &mut armed {
            nodes.push(node.clone());
        }
    }
    inj.nodes = t.gates.iter().map(|(n, _)| n.clone()).collect();
    if t.action == FaultAction::Partition {
        inj.effective_at = Some(Utc::now());
    }
    Ok(armed)
}

/// Undoes an armed fault; idempotent.
pub(crate) async fn undo(armed: Armed) -> Undone {
    let mut undone = Undone::default();
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
        Armed::Link(id, links) => {
            undone.hits = links.disarm(&id).unwrap_or_default();
        }
        Armed::Gates { id, mut nodes, service } => {
            // This node's own gate first: with it gone, this node reaches the others again.
            let me = service.cluster.name();
            nodes.sort_by_key(|n| *n != me);
            for node in nodes {
                let hits = match node == me {
                    true => Ok(service.experiments.armed.disarm(&id)),
                    false => disarm_on(&node, &id).await,
                };
                match hits {
                    Ok(Some(h)) => {
                        undone.hits.hits += h.hits;
                        undone.hits.first = match (undone.hits.first, h.first) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(%node, error = %e, "a node fault could not be healed; it expires on its own");
                        undone.unhealed.push(node);
                    }
                }
            }
        }
    }
    undone
}

/// Disarms `id` on a peer, even one this node holds down: the peer a partition cut off is
/// the one that most needs healing.
async fn disarm_on(node: &str, id: &str) -> Result<Option<Hits>, ApiError> {
    use crate::cluster::remote::{self, Call};
    use crate::service::node::{NodeRequest, NodeResponse};
    let call = Call {
        key: None,
        request: NodeRequest::Disarm { id: id.to_owned() },
    };
    match remote::call::<NodeService>(node, &call, remote::PEER_TIMEOUT).await? {
        NodeResponse::Disarm(hits) => Ok(hits),
        _ => Err(remote::unexpected("disarm")),
    }
}

/// Whether the node's store takes writes again: a RECOVERY_OBSERVED recorded through it
/// commits (and when it did).
pub(crate) async fn store_recovered(api: &Api, node: &str, experiment: &str, injection: &str) -> Option<DateTime<Utc>> {
    let service = api.node_service();
    let answer = match node == api.ctx.node_name {
        true => service.experiments.writable_here(experiment, injection).await,
        false => {
            crate::cluster::remote::Peer(&service, node.to_owned())
                .writable(experiment.to_owned(), injection.to_owned())
                .await
        }
    };
    answer.ok()
}

/// Whether every node a partition cut is UP again as this node sees the cluster.
pub(crate) async fn nodes_up(api: &Api, nodes: &[String]) -> bool {
    match api.cluster_state().await {
        Ok(state) => nodes.iter().all(|n| {
            state
                .members
                .iter()
                .any(|m| m.name == *n && m.state == crate::cluster::lease::MemberState::Up)
        }),
        Err(_) => false,
    }
}

/// How long a ping of a held child's kind may take when checking it can be held, and when
/// checking it answers again.
const PROBE_WITHIN: Duration = Duration::from_millis(500);

/// Pings or holds a child of the tree through its supervisor.
async fn reach(api: &Api, target: &Candidate, reach: Reach) -> Result<bool, ApiError> {
    let root = api.slots.root.running("the node's supervision tree")?;
    let request = ReachRequest {
        owner: target.owner.clone(),
        child: target.id.clone(),
        reach,
    };
    match crate::call::ask_within(
        &root,
        |r| SupervisorMsg::Reach(request, r),
        "the supervision tree",
        ROUTE,
    )
    .await?
    {
        Ok(Some(answered)) => Ok(answered),
        Ok(None) => Err(ApiError::NotFound(format!(
            "no supervisor {} holds {} now",
            target.owner, target.id
        ))),
        Err(e) => Err(ApiError::Conflict(e)),
    }
}

/// Whether a child that is not an agent answers a ping again.
pub(crate) async fn child_recovered(api: &Api, target: &Candidate) -> bool {
    if target.kind == "VM" {
        let Ok(actor) = vm_actor(api, target).await else {
            return false;
        };
        return matches!(
            actor.call(VmMsg::Ping, Some(PROBE_WITHIN)).await,
            Ok(ractor::rpc::CallResult::Success(()))
        );
    }
    reach(api, target, Reach::Ping(PROBE_WITHIN)).await.unwrap_or(false)
}

/// The actor of a VM on one of this node's hosts (a VM's HANG holds it here).
async fn vm_actor(api: &Api, target: &Candidate) -> Result<ActorRef<VmMsg>, ApiError> {
    let fleet = &api.hosts().fleet;
    if fleet.driver(&target.owner).is_err() {
        return Err(ApiError::invalid(format!(
            "VM {} is on host {}, which {} does not drive: start the experiment on the host's node",
            target.id, target.owner, api.ctx.node_name
        )));
    }
    crate::vm::vm_actor(fleet, &target.owner, &target.id).await
}

/// What a VM's run policy makes Troupe do when its domain goes behind its back: define and
/// start it again, or leave it stopped. (Whether a domain runs is libvirt's to say when the
/// fault is injected: Troupe's view of it may lag.)
async fn vm_effect(api: &Api, target: &Candidate) -> Result<&'static str, ApiError> {
    use crate::vm::RunPolicy;
    let vm = api
        .vms()
        .get(&target.id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no VM {}", target.id)))?;
    Ok(match vm.spec.run_policy {
        RunPolicy::Always | RunPolicy::RerunOnFailure => "DOMAIN_RECREATED",
        RunPolicy::Manual | RunPolicy::Halted => "LEFT_STOPPED",
    })
}

/// Whether a VM whose domain went is as its run policy wants it: running again (started or
/// re-created since the injection), or recorded as left stopped.
pub(crate) async fn vm_recovered(
    api: &Api,
    inj: &Injection,
    events: &[std::sync::Arc<troupe_runtime::events::Event>],
) -> bool {
    let after = |kinds: &[&str]| {
        events.iter().any(|e| {
            e.seq >= inj.after_seq
                && e.subject.as_deref() == Some(inj.target.as_str())
                && kinds.contains(&e.kind.as_str())
        })
    };
    if inj.expected.iter().any(|e| e.effect == "LEFT_STOPPED") {
        return after(&["VM_LEFT_STOPPED"]);
    }
    after(&["VM_RESTARTED", "VM_RECREATED", "VM_STARTED"])
        && matches!(api.vms().get(&inj.target).await, Ok(Some(v)) if v.status.state == crate::vm::VmState::Running)
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

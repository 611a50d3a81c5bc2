//! One round of an experiment: its targets resolved from the selectors (the picks seeded by
//! the experiment's seed and the round), then injected one by one. An experiment of `count`
//! rounds runs one every `everyMs`; the first is injected when it starts.

use std::time::Duration;

use serde_json::json;
use troupe_runtime::events::NewEvent;

use super::inject::{self, Armed, Target};
use super::{injection, lock, select, Expected, ExperimentInput, FaultAction, FaultGate, Injection, GATE_GRACE};
use crate::error::ApiError;
use crate::service::Api;

/// The seed of a fault's picks in a round: the first round's is the one it always was, so a
/// seed replays a one-round experiment exactly.
fn seed_of(seed: u64, round: u32, fault: usize) -> u64 {
    seed.wrapping_add(fault as u64)
        .wrapping_add(u64::from(round).wrapping_mul(1_000_003))
}

/// The targets of every fault of the input in `round`, each armed at most `hold` (plus a
/// grace for a peer's gates).
pub(super) async fn resolve(
    api: &Api,
    input: &ExperimentInput,
    seed: u64,
    round: u32,
    hold: Duration,
) -> Result<Vec<Target>, ApiError> {
    let experiments = &api.experiments;
    let tree = api.own_tree().await?;
    let all = select::flatten(&tree);
    let me = api.ctx.node_name.clone();
    let mut members: Vec<String> = api.ctx.store.status().members.into_iter().map(|m| m.name).collect();
    if members.is_empty() {
        members.push(me.clone());
    }
    let mut targets: Vec<Target> = Vec::new();
    for (n, fault) in input.faults.iter().enumerate() {
        let action = fault.action;
        let matching = if action.reaches_nodes() {
            if action == FaultAction::Partition && fault.target.nodes.is_empty() {
                return Err(ApiError::invalid(format!(
                    "fault {n}: a PARTITION names the nodes it cuts off in target.nodes"
                )));
            }
            select::narrow_nodes(&members, &fault.target, std::slice::from_ref(&me))?
        } else if fault.hits_vms() {
            vms(api, fault, n).await?
        } else {
            if fault.to.is_some() || (!fault.params.is_null() && !action.reaches_messages()) {
                return Err(ApiError::invalid(format!(
                    "fault {n}: {action:?} takes neither `to` (the far side of a PARTITION) nor `params`"
                )));
            }
            if let Some(other) = fault.target.nodes.iter().find(|n| **n != me) {
                return Err(ApiError::invalid(format!(
                    "fault {n} selects node {other}: {action:?} reaches the tree of the node the experiment is started on ({me}); start it there"
                )));
            }
            let mut matching = select::narrow(&all, &fault.target);
            if !fault.target.labels.is_empty() {
                matching = api.with_labels(matching, &fault.target.labels).await?;
            }
            matching
        };
        let picked = select::pick(matching, &fault.target, seed_of(seed, round, n))?;
        if picked.is_empty() {
            return Err(ApiError::invalid(format!(
                "fault {n} ({action:?}): its selector matches nothing in the supervision tree of {me}{}",
                names_given(api, &fault.target.ids).await
            )));
        }
        if picked.len() > experiments.max_targets {
            return Err(ApiError::invalid(format!(
                "fault {n} selects {} targets; fault_max_targets allows {}",
                picked.len(),
                experiments.max_targets
            )));
        }
        for candidate in picked {
            let invalid = |e: String| ApiError::invalid(format!("fault {n} ({action:?}): {e}"));
            let gates = super::params::node_gates(fault, &candidate, &members).map_err(invalid)?;
            let link = super::params::link_fault(fault, &candidate, seed_of(seed, round, n)).map_err(invalid)?;
            targets.push(Target {
                action,
                candidate,
                gates,
                link,
                // A peer's gate outlives the experiment's hold a little, then heals itself.
                hold: hold + GATE_GRACE,
            });
        }
    }
    Ok(targets)
}

/// The VMs a domain fault names by id (VMs are not children of the tree), wherever they run;
/// a HANG's may name the node it runs on (it is placed there).
async fn vms(api: &Api, fault: &super::FaultSpec, n: usize) -> Result<Vec<select::Candidate>, ApiError> {
    let s = &fault.target;
    let placed = fault.action == FaultAction::Hang && s.nodes.iter().all(|node| *node == api.ctx.node_name);
    if s.ids.is_empty()
        || !s.labels.is_empty()
        || s.under.is_some()
        || (!s.nodes.is_empty() && !placed)
        || s.kinds.iter().any(|k| k != "VM")
    {
        return Err(ApiError::invalid(format!(
            "fault {n} ({:?}) hits VMs: name them with `ids`",
            fault.action
        )));
    }
    if fault.to.is_some() || !fault.params.is_null() {
        return Err(ApiError::invalid(format!(
            "fault {n} ({:?}) takes neither `to` nor `params`",
            fault.action
        )));
    }
    let mut found = Vec::new();
    for id in s.ids.iter().filter(|id| !s.exclude.contains(id)) {
        if let Some(vm) = api.vms().get(id).await? {
            found.push(select::Candidate {
                id: vm.spec.id.clone(),
                kind: "VM".into(),
                owner: vm.status.host.clone().unwrap_or_default(),
                state: format!("{:?}", vm.status.state).to_uppercase(),
                path: Vec::new(),
            });
        }
    }
    Ok(found)
}

/// Injects a round's targets, numbering its injections from `first`; what stays armed is
/// kept in the experiment's record for the revert. A target that cannot be hit is an
/// injection NOT_INJECTED with the reason.
pub(super) async fn inject_round(
    api: &Api,
    id: &str,
    input: &ExperimentInput,
    targets: Vec<Target>,
    plans: Vec<Vec<Expected>>,
    first: usize,
) -> Result<Vec<Injection>, ApiError> {
    let after_seq = api.last_seq().await? + 1;
    let mut made = Vec::new();
    for (n, (t, expected)) in targets.iter().zip(plans).enumerate() {
        let (action, target) = (t.action, &t.candidate);
        let mut inj = injection(id, first + n, action, target, expected, "PENDING", after_seq);
        match inject::inject(api, t, input.allow_escalation, &mut inj).await {
            Ok(armed) => {
                inj.outcome = match armed {
                    Armed::Nothing => "PENDING",
                    _ => "ARMED",
                }
                .into();
                api.record(NewEvent::new(
                    "FAULT_INJECTED",
                    Some(target.id.clone()),
                    json!({ "experiment": id, "injection": inj.id, "action": format!("{action:?}"), "supervisor": target.owner }),
                ))
                .await;
                if !matches!(armed, Armed::Nothing) {
                    let gate = FaultGate {
                        experiment: id.to_owned(),
                        injection: inj.id.clone(),
                        action,
                        target: target.id.clone(),
                        since: inj.injected_at,
                    };
                    if let Some(r) = lock(&api.experiments.records).get_mut(id) {
                        r.gates.push((gate, armed));
                    }
                }
            }
            Err(e) => {
                // What was armed so far is reverted by the runner; this one never was.
                inj.outcome = format!("NOT_INJECTED: {e}");
            }
        }
        made.push(inj);
    }
    Ok(made)
}

/// A later round: resolved, predicted and injected as the first was, except that a round
/// that cannot be made (nothing matches now, a refused crash) is one injection
/// NOT_INJECTED saying why, not an error: the experiment goes on and its report tells.
pub(super) async fn next_round(
    api: &Api,
    id: &str,
    input: &ExperimentInput,
    seed: u64,
    round: u32,
    hold: Duration,
    first: usize,
) -> Vec<Injection> {
    let made = async {
        let targets = resolve(api, input, seed, round, hold).await?;
        let mut plans = Vec::new();
        for t in &targets {
            plans.push(inject::predict(api, t, input.allow_escalation).await?);
        }
        inject_round(api, id, input, targets, plans, first).await
    }
    .await;
    match made {
        Ok(made) => made,
        Err(e) => {
            let fault = &input.faults[0];
            let nobody = select::Candidate {
                id: format!("round {round}"),
                kind: String::new(),
                owner: String::new(),
                state: String::new(),
                path: Vec::new(),
            };
            let mut inj = injection(id, first, fault.action, &nobody, Vec::new(), "", 0);
            inj.outcome = format!("NOT_INJECTED: round {round}: {e}");
            vec![inj]
        }
    }
}

/// What to say of `ids` that are agents' names, not ids (a name is what people know an
/// agent by): "; `ids` takes ids: w1 is agent 01…@b". Empty when none is.
async fn names_given(api: &Api, ids: &[String]) -> String {
    if ids.is_empty() {
        return String::new();
    }
    let names = ids.to_vec();
    let named = api
        .ctx
        .store
        .view(move |v| {
            let mut named = Vec::new();
            v.scan(crate::tables::AGENTS, None, |id, bytes| {
                let spec: crate::agent::AgentSpec = troupe_runtime::codec::decode(bytes)?;
                if names.contains(&spec.name) {
                    named.push(format!("{} is agent {id}", spec.name));
                }
                Ok(true)
            })?;
            Ok(named)
        })
        .await
        .unwrap_or_default();
    match named.is_empty() {
        true => String::new(),
        false => format!("; `ids` takes ids, not names: {}", named.join(", ")),
    }
}

//! The watchdog of the actors that are not agents (agents have their own, `agent::watchdog`):
//! every running supervisor, the scheduler, swarm coordinators and host drivers are pinged
//! through their supervisors (`Reach::Ping`), each with its kind's deadline (`watchdog_ms`).
//! One that misses it is reported (`<KIND>_UNRESPONSIVE`); one that misses `watchdog_misses`
//! in a row is killed through its supervisor, which records the failure and restarts it by
//! its strategy. One that answers again after being reported gives `<KIND>_RESPONSIVE`.
//! Children of a supervisor that does not answer are not blamed: only it is reported.
//! VM actors, children of their host's driver rather than of a supervisor, are listed by
//! their driver (one that answers in time), pinged directly (`VmMsg::Ping`) and killed
//! through it; the driver starts them again (`VM_ACTOR_RESTARTED`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::future::join_all;
use ractor::rpc::CallResult;
use ractor::ActorRef;
use serde_json::json;
use troupe_runtime::supervision::{ChildInfo, Reach, ReachRequest, SupervisorInfo, SupervisorMsg};

use crate::host::HostMsg;
use crate::service::Api;
use crate::vm::VmMsg;

/// A running child the watchdog pings, with the supervisors above it.
struct Watched {
    id: String,
    kind: String,
    owner: String,
    deadline: Duration,
    /// The ids of the supervisors above it (as children of theirs).
    above: Vec<String>,
    /// A VM's actor, pinged directly (VMs are their host driver's children).
    vm: Option<ActorRef<VmMsg>>,
}

/// The VMs of these host drivers, each listing them within its deadline.
async fn vms(api: &Api, drivers: &[Watched], deadline: Duration) -> Vec<Watched> {
    let fleet = &api.hosts().fleet;
    let listed = join_all(drivers.iter().map(|host| async move {
        let vms = crate::host::vm_actors(fleet, &host.id, host.deadline)
            .await
            .unwrap_or_default();
        vms.into_iter().map(move |(id, actor)| Watched {
            id,
            kind: "VM".into(),
            owner: host.id.clone(),
            deadline,
            above: host.above.iter().chain([&host.id]).cloned().collect(),
            vm: Some(actor),
        })
    }))
    .await;
    listed.into_iter().flatten().collect()
}

/// Whether the child answered its ping in time; None when it could not be asked (gone
/// meanwhile, out of reach behind a stuck supervisor, or of a kind without a ping).
async fn ping(root: &ActorRef<SupervisorMsg>, w: &Watched) -> Option<bool> {
    if let Some(vm) = &w.vm {
        return match vm.call(VmMsg::Ping, Some(w.deadline)).await {
            Ok(CallResult::Success(())) => Some(true),
            Ok(CallResult::Timeout) => Some(false),
            _ => None,
        };
    }
    let request = ReachRequest {
        owner: w.owner.clone(),
        child: w.id.clone(),
        reach: Reach::Ping(w.deadline),
    };
    let asked = crate::call::ask_within(
        root,
        |r| SupervisorMsg::Reach(request, r),
        "the supervision tree",
        w.deadline + Duration::from_secs(5),
    )
    .await;
    match asked {
        Ok(Ok(Some(answered))) => Some(answered),
        _ => None,
    }
}

/// Kills a child that missed too many pings, through whoever supervises it.
async fn kill(api: &Api, w: &Watched) {
    if w.vm.is_some() {
        if let Ok(driver) = api.hosts().fleet.driver(&w.owner) {
            let _ = driver.cast(HostMsg::KillVm(w.id.clone()));
        }
        return;
    }
    crate::agent::watchdog::kill(&api.slots.root, &w.owner, &w.id).await;
}

fn watched(tree: &SupervisorInfo, deadlines: &BTreeMap<String, Duration>) -> Vec<Watched> {
    fn walk(info: &SupervisorInfo, above: &mut Vec<String>, d: &BTreeMap<String, Duration>, out: &mut Vec<Watched>) {
        for child in &info.children {
            let ChildInfo {
                id, kind, state, owner, ..
            } = child;
            if state == "RUNNING" {
                if let Some(deadline) = d.get(kind) {
                    out.push(Watched {
                        id: id.clone(),
                        kind: kind.clone(),
                        owner: owner.clone(),
                        deadline: *deadline,
                        above: above.clone(),
                        vm: None,
                    });
                }
            }
            if let Some(sub) = &child.supervisor {
                above.push(id.clone());
                walk(sub, above, d, out);
                above.pop();
            }
        }
    }
    let mut out = Vec::new();
    walk(tree, &mut Vec::new(), deadlines, &mut out);
    out
}

/// Runs the watchdog until the node stops serving.
pub(crate) fn start(api: Api, deadlines: BTreeMap<String, Duration>, misses: u32) {
    let Some(every) = deadlines.values().min().copied() else {
        return;
    };
    tokio::spawn(async move {
        // Keyed by the supervisors above and the id: ids repeat under different supervisors
        // (every swarm's coordinator is `coordinator`).
        let mut missed: HashMap<(Vec<String>, String), u32> = HashMap::new();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if api.ctx.serving.is_draining() {
                return;
            }
            let Ok(root) = api.slots.root.running("the node's supervision tree") else {
                continue;
            };
            // The tree as the supervisors answer within a few deadlines: a stuck one is
            // listed without its subtree after its share of that time, not after seconds.
            let within = (every * 4).min(Duration::from_secs(2));
            let described = crate::call::ask_within(
                &root,
                |r| SupervisorMsg::DescribeWithin(within, r),
                "the supervision tree",
                within + Duration::from_secs(1),
            )
            .await;
            let Ok(tree) = described else {
                continue;
            };
            let mut children = watched(&tree, &deadlines);
            if let Some(vm_deadline) = deadlines.get("VM").copied() {
                // Every running driver lists its VMs, whether drivers are watched or not.
                let drivers = watched(&tree, &BTreeMap::from([("HOST".to_owned(), vm_deadline)]));
                children.extend(vms(&api, &drivers, vm_deadline).await);
            }
            // Only a ping that went unanswered is a miss.
            let answers = join_all(children.iter().map(|w| ping(&root, w))).await;
            let stuck: Vec<&str> = children
                .iter()
                .zip(&answers)
                .filter(|(_, a)| **a == Some(false))
                .map(|(w, _)| w.id.as_str())
                .collect();
            let key = |w: &Watched| (w.above.clone(), w.id.clone());
            let mut seen = HashMap::with_capacity(missed.len());
            for (w, answer) in children.iter().zip(&answers) {
                let before = missed.get(&key(w)).copied().unwrap_or(0);
                match answer {
                    None => {
                        if before > 0 {
                            seen.insert(key(w), before);
                        }
                    }
                    Some(true) => {
                        if before > 0 {
                            record(
                                &api,
                                &format!("{}_RESPONSIVE", w.kind),
                                &w.id,
                                json!({ "missed": before, "supervisor": w.owner }),
                            )
                            .await;
                        }
                    }
                    // Below a stuck supervisor, the stuck one is the one to blame.
                    Some(false) if w.above.iter().any(|a| stuck.contains(&a.as_str())) => {}
                    Some(false) => {
                        let now = before + 1;
                        if now == 1 {
                            tracing::warn!(child = %w.id, kind = %w.kind, deadline_ms = w.deadline.as_millis() as u64, "actor unresponsive");
                            let data = json!({
                                "deadlineMs": w.deadline.as_millis() as u64,
                                "restartAfter": misses,
                                "supervisor": w.owner,
                            });
                            record(&api, &format!("{}_UNRESPONSIVE", w.kind), &w.id, data).await;
                        }
                        if now >= misses {
                            kill(&api, w).await;
                            continue;
                        }
                        seen.insert(key(w), now);
                    }
                }
            }
            missed = seen;
        }
    });
}

async fn record(api: &Api, kind: &str, id: &str, data: serde_json::Value) {
    let event = troupe_runtime::events::NewEvent::new(kind, Some(id.to_owned()), data);
    if let Err(e) = api
        .ctx
        .store
        .write(troupe_runtime::store::Batch::new().event(event))
        .await
    {
        tracing::warn!(child = %id, error = %e, "the watchdog's event was not recorded");
    }
}

//! The watchdog of the actors that are not agents (agents have their own, `agent::watchdog`):
//! every running supervisor, the scheduler, swarm coordinators and host drivers are pinged
//! through their supervisors (`Reach::Ping`), each with its kind's deadline (`watchdog_ms`).
//! One that misses it is reported (`<KIND>_UNRESPONSIVE`); one that misses `watchdog_misses`
//! in a row is killed through its supervisor, which records the failure and restarts it by
//! its strategy. One that answers again after being reported gives `<KIND>_RESPONSIVE`.
//! Children of a supervisor that does not answer are not blamed: only it is reported.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::future::join_all;
use serde_json::json;
use troupe_runtime::supervision::{ChildInfo, Reach, ReachRequest, SupervisorInfo, SupervisorMsg};

use crate::service::Api;

/// A running child the watchdog pings, with the supervisors above it.
struct Watched {
    id: String,
    kind: String,
    owner: String,
    deadline: Duration,
    /// The ids of the supervisors above it (as children of theirs).
    above: Vec<String>,
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
        let mut missed: HashMap<String, u32> = HashMap::new();
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
            let children = watched(&tree, &deadlines);
            let answers = join_all(children.iter().map(|w| {
                let root = root.clone();
                let request = ReachRequest {
                    owner: w.owner.clone(),
                    child: w.id.clone(),
                    reach: Reach::Ping(w.deadline),
                };
                async move {
                    let asked = crate::call::ask_within(
                        &root,
                        |r| SupervisorMsg::Reach(request, r),
                        "the supervision tree",
                        w.deadline + Duration::from_secs(5),
                    )
                    .await;
                    // Only a ping that went unanswered is a miss: a child gone meanwhile, out
                    // of reach behind a stuck supervisor, or of a kind without ping is not.
                    match asked {
                        Ok(Ok(Some(answered))) => Some(answered),
                        _ => None,
                    }
                }
            }))
            .await;
            let stuck: Vec<&str> = children
                .iter()
                .zip(&answers)
                .filter(|(_, a)| **a == Some(false))
                .map(|(w, _)| w.id.as_str())
                .collect();
            let mut seen = HashMap::with_capacity(missed.len());
            for (w, answer) in children.iter().zip(&answers) {
                let before = missed.get(&w.id).copied().unwrap_or(0);
                match answer {
                    None => {
                        if before > 0 {
                            seen.insert(w.id.clone(), before);
                        }
                    }
                    Some(true) => {
                        if before > 0 {
                            record(
                                &api,
                                &format!("{}_RESPONSIVE", w.kind),
                                &w.id,
                                json!({ "missed": before }),
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
                            crate::agent::watchdog::kill(&api, &w.id).await;
                            continue;
                        }
                        seen.insert(w.id.clone(), now);
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

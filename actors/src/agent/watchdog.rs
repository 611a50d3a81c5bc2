//! The agents' watchdog: every deadline (`agent_watchdog_ms`), each running agent's loop is
//! asked a question it answers at once unless it is stuck. An agent that misses a deadline is
//! reported (AGENT_UNRESPONSIVE); one that misses `agent_watchdog_misses` in a row is killed
//! through its supervisor, which records the failure and restarts it by its strategy (a
//! stuck loop would never take a stop). An agent that answers again after being reported is
//! recorded too (AGENT_RESPONSIVE).
//!
//! Only the agent's own loop is asked: its tasks, messages and a process's replies run
//! beside it, so a long task never looks like a hang.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;
use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{Batch, Store};
use troupe_runtime::supervision::{ChildSpec, Chore, CrashRequest, SupervisorMsg};

use super::{AgentMsg, Handles};
use crate::serving::Serving;
use crate::slots::Slot;

/// What the watchdog takes: the agents it asks, the tree that kills the stuck ones, the store
/// it records in, and whether the node still serves.
#[derive(Clone)]
pub(crate) struct Watching {
    pub handles: Handles,
    pub root: Slot<SupervisorMsg>,
    pub store: Store,
    pub serving: Serving,
}

/// The watchdog, a chore of the node (`watchdog`): it watches until the node drains.
pub(crate) fn chore(api: Watching, deadline: Duration, misses: u32) -> std::sync::Arc<dyn ChildSpec> {
    Chore::new("watchdog", move || Box::pin(watch(api.clone(), deadline, misses)))
}

/// Pings every running agent each `deadline`; a restarted watchdog counts misses afresh.
async fn watch(api: Watching, deadline: Duration, misses: u32) {
    let mut missed: HashMap<String, u32> = HashMap::new();
    let mut tick = tokio::time::interval(deadline);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if api.serving.is_draining() {
            // Agents stopping for a shutdown are not hung: nothing is watched any more.
            return std::future::pending().await;
        }
        let agents = api.handles.running();
        let answers = join_all(agents.iter().map(|(_, actor)| {
            let actor = actor.clone();
            async move {
                matches!(
                    actor.call(AgentMsg::Ping, Some(deadline)).await,
                    Ok(ractor::rpc::CallResult::Success(()))
                )
            }
        }))
        .await;
        let mut seen = HashMap::with_capacity(missed.len());
        for ((id, _), answered) in agents.into_iter().zip(answers) {
            let before = missed.get(&id).copied().unwrap_or(0);
            if answered {
                if before > 0 {
                    record(&api.store, "AGENT_RESPONSIVE", &id, json!({ "missed": before })).await;
                }
                continue;
            }
            let now = before + 1;
            if now == 1 {
                tracing::warn!(agent = %id, deadline_ms = deadline.as_millis() as u64, "agent unresponsive");
                record(
                    &api.store,
                    "AGENT_UNRESPONSIVE",
                    &id,
                    json!({ "deadlineMs": deadline.as_millis() as u64, "restartAfter": misses }),
                )
                .await;
            }
            if now >= misses {
                kill(&api.root, "", &id).await;
                continue;
            }
            seen.insert(id, now);
        }
        missed = seen;
    }
}

async fn record(store: &Store, kind: &str, id: &str, data: serde_json::Value) {
    let event = NewEvent::new(kind, Some(id.to_owned()), data);
    if let Err(e) = store.write(Batch::new().event(event)).await {
        tracing::warn!(agent = %id, error = %e, "the watchdog's event was not recorded");
    }
}

/// Has the child's supervisor kill it as failed: `owner` names that supervisor, as the tree
/// lists it (`ChildInfo::owner`); empty, whichever supervisor holds a child of that id,
/// which only an id unique in the tree (an agent's) may use: every swarm's coordinator is
/// `coordinator`.
pub(crate) async fn kill(root: &Slot<SupervisorMsg>, owner: &str, id: &str) {
    let Ok(root) = root.running("the node's supervision tree") else {
        return;
    };
    let request = CrashRequest {
        owner: owner.to_owned(),
        child: id.to_owned(),
        dry_run: false,
        allow_escalation: true,
        kill: true,
    };
    let asked = crate::call::ask_within(
        &root,
        |r| SupervisorMsg::Crash(request, r),
        "the supervision tree",
        Duration::from_secs(10),
    )
    .await;
    match asked {
        Ok(Ok(Some(_))) => tracing::warn!(child = %id, "unresponsive child killed for a restart"),
        Ok(Ok(None)) => tracing::warn!(child = %id, "no supervisor holds the unresponsive child"),
        Ok(Err(e)) => tracing::warn!(child = %id, error = %e, "the unresponsive child could not be killed"),
        Err(e) => tracing::warn!(child = %id, error = %e, "the supervision tree did not answer"),
    }
}

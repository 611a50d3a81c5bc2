//! Swarms: named teams of agents, each led by a coordinator, run as a subtree of the node's
//! `swarms` supervisor:
//!
//! ```text
//! swarms (one_for_one)
//! └── <swarm id> (one_for_one, members first)
//!     ├── members      the swarm's agents (one_for_one or one_for_all, as the swarm asks)
//!     ├── coordinator  sizes the swarm, follows its health, conducts its tasks
//!     └── <team id>    a sub-team led by one of the members: a swarm subtree of its own
//! ```
//!
//! A coordinator that crashes is restarted alone and finds the members still running: it
//! counts them from the store, so it never starts duplicates. Swarm tasks are durable records
//! that a restarted coordinator takes up where they were; their subtasks are ordinary tasks
//! (submitted under idempotency keys, so nothing is submitted twice).
//!
//! The room's operations are methods on [`Port`], all the room takes from the rest of the
//! node: `create.rs` (with its undo), `change.rs` (scale, topology, adopt, release),
//! `destroy.rs`, `view.rs` (a swarm's view, its actors, who owns and leads what),
//! `submit.rs` (swarm tasks) and `memory/access.rs` (the shared memory). The swarms service
//! routes each request to the swarm's node and calls them there.
//!
//! The room's decisions are plain functions: membership and autoscale in `plan.rs`, the
//! conductor's choices in `choices.rs`, health, aggregation and the ADAPTIVE rule in
//! [`rules`]. `records.rs` changes a swarm's spec and status one writer at a time, and
//! `open.rs` indexes its open tasks.

mod change;
mod choices;
mod coordinator;
mod create;
mod destroy;
mod handout;
mod locks;
pub mod memory;
mod open;
mod plan;
mod port;
mod records;
pub mod rules;
mod settle;
pub mod spec;
mod submit;
mod task;
mod team;
mod view;
mod watch;
mod work;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{ActorProcessingErr, ActorRef};
use serde_json::json;
use troupe_runtime::supervision::{ChildSpec, Nest, Nested, StartOrder, Strategy, SupervisorArgs, SupervisorMsg};

pub(crate) use coordinator::StartFailure;
pub use coordinator::{Coordinator, CoordinatorMsg};
pub use handout::Handout;
pub use locks::Locks;
pub(crate) use open::{forget as forget_open_task, index as index_open_task};
pub use port::{Members, Port, Subtasks};
pub(crate) use records::{change as change_records, load_spec, load_status};
pub use rules::{Aggregate, Answer};
pub use spec::{
    queue_capability, Autoscale, CreateSwarmRequest, Lead, MemberStrategy, SwarmHealth, SwarmSpec, SwarmStatus,
    SwarmView, Template, Topology,
};
pub use task::{Stage, Step, SwarmTask, SwarmTaskMode, SwarmTaskState};
pub use watch::Watch;
pub(crate) use work::wait_end;

use crate::agent::{AgentsChild, Owner};
use crate::error::ApiError;
use crate::tables::{SWARMS, SWARM_TEAMS};

/// The node's `swarms` supervisor: each start rebuilds it with every top-level swarm of this
/// node (sub-teams start inside their parents).
pub struct SwarmsChild {
    pub port: Port,
}

impl Nest for SwarmsChild {
    fn id(&self) -> &str {
        "swarms"
    }

    fn start_timeout(&self) -> Duration {
        Duration::from_secs(120)
    }

    fn args(&self) -> BoxFuture<'static, Result<SupervisorArgs, ActorProcessingErr>> {
        let port = self.port.clone();
        Box::pin(async move {
            let store = port.store.clone();
            let children = teams_of(&store, &port.node, None)
                .await?
                .into_iter()
                .map(|id| swarm_child(&port, id, StartFailure::default()))
                .collect();
            Ok(SupervisorArgs {
                name: "swarms".into(),
                strategy: Strategy::OneForOne,
                intensity: None,
                backoff: port.backoff,
                children,
                start_order: StartOrder::Concurrent,
                store,
            })
        })
    }

    fn started(&self, supervisor: &ActorRef<SupervisorMsg>) -> BoxFuture<'static, ()> {
        self.port.slots.swarms.set(supervisor.clone());
        Box::pin(async {})
    }
}

/// The ids of the swarms `node` holds (of every swarm for `None`), in id order.
pub(crate) async fn ids(store: &troupe_runtime::store::Store, node: Option<&str>) -> Result<Vec<String>, ApiError> {
    let node = node.map(str::to_owned);
    Ok(store
        .view(move |v| {
            let mut out = Vec::new();
            v.scan(SWARMS, None, |id, _| {
                let held = match &node {
                    Some(node) => crate::cluster::directory::held_in(v, id, node)?,
                    None => true,
                };
                if held {
                    out.push(id.to_owned());
                }
                Ok(true)
            })?;
            Ok(out)
        })
        .await?)
}

/// The ids of the swarms that hang under `parent` (the top-level ones for `None`), in id order.
pub(crate) async fn teams_of(
    store: &troupe_runtime::store::Store,
    node: &str,
    parent: Option<&str>,
) -> Result<Vec<String>, ApiError> {
    Ok(match parent {
        Some(parent) => teams(store, Some(parent))
            .await?
            .into_iter()
            .map(|(_, team, _)| team)
            .collect(),
        None => {
            let nested: std::collections::BTreeSet<String> =
                teams(store, None).await?.into_iter().map(|(_, team, _)| team).collect();
            let mut all = ids(store, Some(node)).await?;
            all.retain(|id| !nested.contains(id));
            all
        }
    })
}

/// The sub-teams of `parent` (of every swarm for `None`): (parent, team, leader), by parent
/// then team.
pub(crate) async fn teams(
    store: &troupe_runtime::store::Store,
    parent: Option<&str>,
) -> Result<Vec<(String, String, String)>, ApiError> {
    let prefix = parent.map(|p| format!("{p}/"));
    Ok(store
        .view(move |v| {
            let mut out = Vec::new();
            v.scan_prefix(SWARM_TEAMS, prefix.as_deref().unwrap_or_default(), |key, leader| {
                let Some((parent, team)) = key.split_once('/') else {
                    return Ok(true);
                };
                out.push((
                    parent.to_owned(),
                    team.to_owned(),
                    String::from_utf8_lossy(leader).into_owned(),
                ));
                Ok(true)
            })?;
            Ok(out)
        })
        .await?)
}

/// A sub-team's key in [`SWARM_TEAMS`].
pub(crate) fn team_key(lead: &Lead, team: &str) -> String {
    format!("{}/{team}", lead.swarm)
}

/// One swarm's subtree; why its coordinator's start failed goes to `failure`.
pub(crate) fn swarm_child(api: &Port, id: String, failure: StartFailure) -> Arc<dyn ChildSpec> {
    Nested::child(SwarmChild {
        api: api.clone(),
        id,
        failure,
    })
}

/// One swarm's subtree: its members supervisor, then its coordinator.
struct SwarmChild {
    api: Port,
    id: String,
    failure: StartFailure,
}

impl Nest for SwarmChild {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &str {
        "SWARM"
    }

    fn event_data(&self) -> serde_json::Value {
        json!({ "swarm": self.id })
    }

    fn start_timeout(&self) -> Duration {
        // Its coordinator starts the members it lacks before it is up.
        Duration::from_secs(120)
    }

    fn args(&self) -> BoxFuture<'static, Result<SupervisorArgs, ActorProcessingErr>> {
        let (api, id, failure) = (self.api.clone(), self.id.clone(), self.failure.clone());
        Box::pin(async move {
            let store = api.store.clone();
            let bytes = store
                .get(SWARMS, &id)
                .await?
                .ok_or_else(|| format!("swarm {id} is not stored"))?;
            let spec: SwarmSpec = troupe_runtime::codec::decode(&bytes)?;
            let members = Nested::child(AgentsChild {
                node: api.node.clone(),
                store: store.clone(),
                slots: api.slots.clone(),
                policy: api.policy.clone(),
                backoff: api.backoff,
                owner: Owner::Swarm(id.clone()),
                strategy: match spec.strategy {
                    MemberStrategy::OneForOne => Strategy::OneForOne,
                    MemberStrategy::OneForAll => Strategy::OneForAll,
                },
            });
            let coordinator: Arc<dyn ChildSpec> = Arc::new(coordinator::CoordinatorChild {
                api: api.clone(),
                id: id.clone(),
                failure,
            });
            let mut children = vec![members, coordinator];
            for team in teams_of(&store, &api.node, Some(&id)).await? {
                children.push(swarm_child(&api, team, StartFailure::default()));
            }
            Ok(SupervisorArgs {
                // Names repeat, ids do not: the watchdog and fault injection reach a child
                // through its supervisor's name, and every swarm's coordinator is `coordinator`.
                name: format!("swarm {} ({id})", spec.name),
                strategy: Strategy::OneForOne,
                intensity: None,
                backoff: api.backoff,
                children,
                start_order: StartOrder::Sequential,
                store,
            })
        })
    }

    fn started(&self, supervisor: &ActorRef<SupervisorMsg>) -> BoxFuture<'static, ()> {
        self.api.slots.swarm_supervisors.set(&self.id, supervisor.clone());
        Box::pin(async {})
    }
}

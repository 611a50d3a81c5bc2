//! Why a queued task waits, told of the cluster. The engine knows this node's agents only:
//! its "no agent has capability x" means none here. Another node's agents may have it (one
//! spawned a moment ago, before its node's heartbeat reported it, so the task was queued
//! here): the task is then handed to them (`actor/handoff.rs`), and saying "no agent has"
//! (with a `NO_AGENT` warning and a `TASK_WAITING` event) would be false. The replica,
//! which holds every agent, tells.

use std::collections::{BTreeMap, BTreeSet};

use troupe_runtime::store::{StoreError, View};

use super::TaskQueue;
use crate::agent::{AgentSpec, AgentState, AgentStatus};
use crate::cluster::directory::placement_in;
use crate::tables::{AGENTS, AGENT_STATUS};
use crate::task::TaskRecord;

/// Whether an agent in `state` has its capabilities now (it runs, or will again without
/// anyone acting): a stopped, failed or never started agent does not.
fn serves(state: AgentState) -> bool {
    !matches!(state, AgentState::Defined | AgentState::Stopped | AgentState::Failed)
}

/// For each of `capabilities`, the nodes other than `here` whose agents have it, as `v`
/// holds them.
fn nodes_serving(
    v: &View<'_>,
    capabilities: &BTreeSet<String>,
    here: &str,
) -> Result<BTreeMap<String, BTreeSet<String>>, StoreError> {
    let mut serving: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    v.scan(AGENTS, None, |id, bytes| {
        let spec: AgentSpec = troupe_runtime::codec::decode(bytes)?;
        let status: Option<AgentStatus> = match v.get(AGENT_STATUS, id)? {
            Some(b) => Some(troupe_runtime::codec::decode(&b)?),
            None => None,
        };
        if status.as_ref().is_some_and(|s| !serves(s.state)) {
            return Ok(true);
        }
        let discovered = status.iter().flat_map(|s| s.discovered.iter());
        let has: Vec<&String> = spec
            .capabilities
            .iter()
            .chain(discovered)
            .filter(|c| capabilities.contains(*c))
            .collect();
        if has.is_empty() {
            return Ok(true);
        }
        let Some(node) = placement_in(v, id)?.map(|p| p.node) else {
            return Ok(true);
        };
        if node != here {
            for c in has {
                serving.entry(c.clone()).or_default().insert(node.clone());
            }
        }
        Ok(true)
    })?;
    Ok(serving)
}

/// The engine's reason for a task of `capability` queued on `here`, told of the cluster:
/// `None` when it stands as it is.
fn told_of_the_cluster(
    reason: &str,
    capability: &str,
    here: &str,
    serving: &BTreeMap<String, BTreeSet<String>>,
) -> Option<String> {
    if reason != format!("no agent has capability {capability}") {
        return None;
    }
    let nodes = serving.get(capability).filter(|n| !n.is_empty())?;
    let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
    Some(format!(
        "no agent on {here} has capability {capability}; agents on {} have it, and it goes to them once their node reports their room",
        nodes.join(", ")
    ))
}

impl TaskQueue {
    /// The queued tasks' reasons "no agent has capability x" told of the cluster (see the
    /// module's doc), from one scan of the replica's agents when any task says so.
    pub(super) async fn told_of_the_cluster(&self, mut tasks: Vec<TaskRecord>) -> Vec<TaskRecord> {
        let wanted: BTreeSet<String> = tasks
            .iter()
            .filter(|t| t.waiting_for.as_deref().is_some_and(super::no_agent_has))
            .filter_map(|t| t.spec.capability.clone())
            .collect();
        if wanted.is_empty() {
            return tasks;
        }
        let here = self.node.clone();
        let serving = match self.store.view(move |v| nodes_serving(v, &wanted, &here)).await {
            Ok(serving) => serving,
            Err(e) => {
                tracing::warn!(error = %e, "could not read which nodes' agents serve the waiting tasks");
                return tasks;
            }
        };
        for task in &mut tasks {
            let (Some(reason), Some(capability)) = (&task.waiting_for, &task.spec.capability) else {
                continue;
            };
            if let Some(told) = told_of_the_cluster(reason, capability, &self.node, &serving) {
                task.waiting_for = Some(told);
            }
        }
        tasks
    }
}

#[cfg(test)]
mod tests {
    use troupe_runtime::store::{Batch, Store};

    use super::*;
    use crate::agent::Owner;

    fn spec(id: &str, capabilities: &[&str]) -> AgentSpec {
        let mut spec = AgentSpec::example(id, Owner::Node);
        spec.capabilities = capabilities.iter().map(|c| c.to_string()).collect();
        spec
    }

    async fn with_agents(agents: &[(&str, &[&str], Option<AgentState>)]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let mut batch = Batch::new();
        for (id, capabilities, state) in agents {
            batch = batch.put(
                AGENTS,
                *id,
                troupe_runtime::codec::encode(&spec(id, capabilities)).unwrap(),
            );
            if let Some(state) = state {
                let status = AgentStatus::new(*state);
                batch = batch.put(AGENT_STATUS, *id, troupe_runtime::codec::encode(&status).unwrap());
            }
        }
        store.write(batch).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_capability_only_another_nodes_agents_have_is_not_said_to_be_had_by_none() {
        let (_d, store) = with_agents(&[
            ("x@c", &["nap"], Some(AgentState::Running)),
            // Just spawned: no status yet.
            ("y@a", &["nap", "draw"], None),
            ("z@a", &["sing"], Some(AgentState::Stopped)),
            ("w@b", &["hum"], Some(AgentState::Running)),
        ])
        .await;
        let wanted: BTreeSet<String> = ["nap", "draw", "sing", "hum", "fly"]
            .iter()
            .map(|c| c.to_string())
            .collect();
        let serving = store.view(move |v| nodes_serving(v, &wanted, "b")).await.unwrap();
        let told = |capability: &str| {
            told_of_the_cluster(
                &format!("no agent has capability {capability}"),
                capability,
                "b",
                &serving,
            )
        };
        assert_eq!(
            told("nap").as_deref(),
            Some("no agent on b has capability nap; agents on a, c have it, and it goes to them once their node reports their room")
        );
        assert!(told("draw").is_some_and(|r| r.contains("agents on a have it")));
        // Stopped, only here, or nowhere: the engine's reason stands.
        assert_eq!(told("sing"), None);
        assert_eq!(told("hum"), None);
        assert_eq!(told("fly"), None);
        // Another reason stands too.
        assert_eq!(
            told_of_the_cluster("every agent with capability nap is busy", "nap", "b", &serving),
            None
        );
    }
}

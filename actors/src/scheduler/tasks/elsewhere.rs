//! Why a queued task waits, told of the cluster. The engine knows this node's agents only:
//! its "no agent has capability x" means none here. Another node's agents may have it (one
//! spawned a moment ago, before its node's heartbeat reported it, so the task was queued
//! here): the task is then handed to them (`actor/handoff.rs`), and saying "no agent has"
//! (with a `NO_AGENT` warning and a `TASK_WAITING` event) would be false. The replica,
//! which holds every agent, tells.

use std::collections::BTreeMap;

use troupe_runtime::events::Event;
use troupe_runtime::store::{StoreError, View, Window};

use super::TaskQueue;
use crate::agent::{AgentSpec, AgentState, AgentStatus};
use crate::cluster::directory::placement_in;
use crate::scheduler::engine::index::Want;
use crate::scheduler::engine::{Limits, Requirement};
use crate::tables::{AGENTS, AGENT_STATUS};
use crate::task::{TaskRecord, TaskSpec};

/// Whether an agent in `state` has its capabilities now (it runs, or will again without
/// anyone acting): a stopped, failed or never started agent does not.
fn serves(state: AgentState) -> bool {
    !matches!(state, AgentState::Defined | AgentState::Stopped | AgentState::Failed)
}

/// What a task aimed at no agent in particular needs of one: its capability, or its
/// requirement set (several capabilities, a least proficiency). `None` for a task aimed at
/// an agent.
pub(crate) fn needs(spec: &TaskSpec) -> Option<Requirement> {
    let limits = Limits::from(spec);
    match (limits.requires, limits.want) {
        (Some(r), _) => Some(r),
        (None, Want::Capability(c)) => Some(Requirement {
            capabilities: vec![c],
            min_proficiency: 0.0,
        }),
        (None, Want::Agent(_)) => None,
    }
}

/// For each of `needs`, how many agents meet it on each node other than `here`, as `v`
/// holds the agents (their specs, the capabilities their backends found, their states and
/// where they are placed).
pub(crate) fn nodes_meeting(
    v: &View<'_>,
    needs: &[Requirement],
    here: &str,
) -> Result<Vec<BTreeMap<String, u32>>, StoreError> {
    let mut meeting: Vec<BTreeMap<String, u32>> = vec![BTreeMap::new(); needs.len()];
    v.scan(AGENTS, None, |id, bytes| {
        let spec: AgentSpec = troupe_runtime::codec::decode(bytes)?;
        let status: Option<AgentStatus> = match v.get(AGENT_STATUS, id)? {
            Some(b) => Some(troupe_runtime::codec::decode(&b)?),
            None => None,
        };
        if status.as_ref().is_some_and(|s| !serves(s.state)) {
            return Ok(true);
        }
        let mut capabilities = spec.capabilities.clone();
        capabilities.extend(status.iter().flat_map(|s| s.discovered.iter().cloned()));
        let skills = spec.skills();
        let met: Vec<usize> = (0..needs.len())
            .filter(|&i| needs[i].met_by(&capabilities, &skills))
            .collect();
        if met.is_empty() {
            return Ok(true);
        }
        let Some(node) = placement_in(v, id)?.map(|p| p.node) else {
            return Ok(true);
        };
        if node != here {
            for i in met {
                *meeting[i].entry(node.clone()).or_default() += 1;
            }
        }
        Ok(true)
    })?;
    Ok(meeting)
}

/// The engine's reason for a task queued on `here`, told of the cluster: `None` when it
/// stands as it is (another reason than "no agent has", or no other node's agent has it
/// either). `nodes` are the other nodes whose agents meet what the task needs.
fn told_of_the_cluster(reason: &str, here: &str, nodes: &BTreeMap<String, u32>) -> Option<String> {
    let what = reason.strip_prefix("no agent has ")?;
    if nodes.is_empty() {
        return None;
    }
    let nodes: Vec<&str> = nodes.keys().map(String::as_str).collect();
    Some(format!(
        "no agent on {here} has {what}; agents on {} have it, and it goes to them once their node reports their room",
        nodes.join(", ")
    ))
}

/// Why a task queued on another member waits, as the replica holds it: the reason of the
/// newest `TASK_WAITING` event about it (its holder's scheduler, which alone knows the
/// reason now, writes one when no agent has what the task needs), with when it was said;
/// without one, that the holder knows. Never `null`, which would say that it runs. The
/// event names the member that said it, which held the task then: one that moved since is
/// not said to be waiting by its new holder's words (an event of an earlier release names
/// none, and is taken as the holder's).
fn said_by_holder(holder: &str, said: Option<&Event>) -> String {
    match said.and_then(|e| {
        Some((
            e.data.get("reason")?.as_str()?,
            e.at,
            e.data.get("node").and_then(|n| n.as_str()),
        ))
    }) {
        Some((reason, at, Some(by))) if by != holder => format!(
            "queued on {holder}; {by} said at {}, when it held it: {reason}",
            at.format("%H:%M:%S UTC")
        ),
        Some((reason, at, _)) => format!(
            "queued on {holder}, which said at {}: {reason}",
            at.format("%H:%M:%S UTC")
        ),
        None => format!("queued on {holder}, whose scheduler knows why it waits"),
    }
}

impl TaskQueue {
    /// The queued tasks held by other members (`held`: each one's place in `tasks` and its
    /// holder), with why each waits as the replica says (see [`said_by_holder`]): one read
    /// of the subject index per task, and no call to the holder.
    pub(super) async fn said_by_their_holders(
        &self,
        mut tasks: Vec<TaskRecord>,
        held: Vec<(usize, String)>,
    ) -> Vec<TaskRecord> {
        if held.is_empty() {
            return tasks;
        }
        let ids: Vec<String> = held.iter().map(|(t, _)| tasks[*t].spec.id.clone()).collect();
        let kinds = vec!["TASK_WAITING".to_owned()];
        let said = self
            .store
            .view(move |v| {
                ids.iter()
                    .map(|id| Ok(v.events_about(id, Window::Last, Some(&kinds), 1)?.pop()))
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not read why the tasks held by other members wait");
                vec![None; held.len()]
            });
        for ((t, holder), said) in held.into_iter().zip(said) {
            tasks[t].waiting_for = Some(said_by_holder(&holder, said.as_ref()));
        }
        tasks
    }

    /// The queued tasks' reasons "no agent has …" told of the cluster (see the module's
    /// doc), from one scan of the replica's agents when any task says so.
    pub(super) async fn told_of_the_cluster(&self, mut tasks: Vec<TaskRecord>) -> Vec<TaskRecord> {
        // Each task that says so, with what it needs (as an index into `wanted`).
        let mut wanted: Vec<Requirement> = Vec::new();
        let mut asking: Vec<(usize, usize)> = Vec::new();
        for (t, task) in tasks.iter().enumerate() {
            if !task.waiting_for.as_deref().is_some_and(super::no_agent_has) {
                continue;
            }
            let Some(r) = needs(&task.spec) else { continue };
            let i = wanted.iter().position(|w| *w == r).unwrap_or_else(|| {
                wanted.push(r);
                wanted.len() - 1
            });
            asking.push((t, i));
        }
        if wanted.is_empty() {
            return tasks;
        }
        let here = self.node.clone();
        let asked = wanted.clone();
        let meeting = match self.store.view(move |v| nodes_meeting(v, &asked, &here)).await {
            Ok(meeting) => meeting,
            Err(e) => {
                tracing::warn!(error = %e, "could not read which nodes' agents serve the waiting tasks");
                return tasks;
            }
        };
        for (t, i) in asking {
            let task = &mut tasks[t];
            let Some(reason) = &task.waiting_for else { continue };
            if let Some(told) = told_of_the_cluster(reason, &self.node, &meeting[i]) {
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

    #[test]
    fn a_task_queued_on_another_member_says_why_as_its_holder_said_it() {
        let said = Event {
            seq: 7,
            kind: "TASK_WAITING".into(),
            subject: Some("t@c".into()),
            data: serde_json::json!({ "reason": "no agent has capability far", "capability": "far" }),
            at: "2026-11-29T10:11:12Z".parse().unwrap(),
        };
        assert_eq!(
            said_by_holder("c", Some(&said)),
            "queued on c, which said at 10:11:12 UTC: no agent has capability far"
        );
        assert_eq!(
            said_by_holder("c", None),
            "queued on c, whose scheduler knows why it waits"
        );
        // Said by a member that held it before it moved to c.
        let mut moved = said.clone();
        moved.data["node"] = "a".into();
        assert_eq!(
            said_by_holder("c", Some(&moved)),
            "queued on c; a said at 10:11:12 UTC, when it held it: no agent has capability far"
        );
        moved.data["node"] = "c".into();
        assert_eq!(
            said_by_holder("c", Some(&moved)),
            "queued on c, which said at 10:11:12 UTC: no agent has capability far"
        );
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
        let wanted: Vec<Requirement> = ["nap", "draw", "sing", "hum", "fly"]
            .iter()
            .map(|c| Requirement {
                capabilities: vec![c.to_string()],
                min_proficiency: 0.0,
            })
            .collect();
        let serving = store.view(move |v| nodes_meeting(v, &wanted, "b")).await.unwrap();
        let told = |i: usize, capability: &str| {
            told_of_the_cluster(&format!("no agent has capability {capability}"), "b", &serving[i])
        };
        assert_eq!(
            told(0, "nap").as_deref(),
            Some("no agent on b has capability nap; agents on a, c have it, and it goes to them once their node reports their room")
        );
        assert!(told(1, "draw").is_some_and(|r| r.contains("agents on a have it")));
        // Stopped, only here, or nowhere: the engine's reason stands.
        assert_eq!(told(2, "sing"), None);
        assert_eq!(told(3, "hum"), None);
        assert_eq!(told(4, "fly"), None);
        // Another reason stands too.
        assert_eq!(
            told_of_the_cluster("every agent with capability nap is busy", "b", &serving[0]),
            None
        );
    }

    #[tokio::test]
    async fn a_requirement_another_nodes_agent_meets_is_not_said_to_be_met_by_none() {
        let (_d, store) = with_agents(&[
            ("x@a", &["nap", "draw"], Some(AgentState::Running)),
            ("y@c", &["nap"], Some(AgentState::Running)),
        ])
        .await;
        // x is good at napping, y is not.
        let mut batch = Batch::new();
        for (id, caps, skill) in [("x@a", &["nap", "draw"][..], 0.9), ("y@c", &["nap"][..], 0.3)] {
            let mut agent = spec(id, caps);
            agent.proficiency.insert("nap".into(), skill);
            batch = batch.put(AGENTS, id, troupe_runtime::codec::encode(&agent).unwrap());
        }
        store.write(batch).await.unwrap();
        let need = |caps: &[&str], min: f64| Requirement {
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            min_proficiency: min,
        };
        let wanted = vec![need(&["nap"], 0.5), need(&["draw", "nap"], 0.0), need(&["nap"], 0.95)];
        let meeting = store.view(move |v| nodes_meeting(v, &wanted, "b")).await.unwrap();
        let on = |m: &BTreeMap<String, u32>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(on(&meeting[0]), ["a"]);
        assert_eq!(on(&meeting[1]), ["a"]);
        assert!(meeting[2].is_empty());
        let reason = "no agent has capabilities nap with proficiency at least 0.5";
        assert_eq!(
            told_of_the_cluster(reason, "b", &meeting[0]).as_deref(),
            Some("no agent on b has capabilities nap with proficiency at least 0.5; agents on a have it, and it goes to them once their node reports their room")
        );
        assert_eq!(told_of_the_cluster(reason, "b", &meeting[2]), None);
    }
}

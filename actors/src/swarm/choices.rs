//! The conductor's choices as pure functions of what it knows: the topology a piece of work
//! goes out as, which members a scatter goes to, which plan steps are ready and what each is
//! given, and what a plan answers. The conductor ([`super::work`]) reads the swarm and its
//! records, asks these, and carries out the answer (handouts, submits, waits).

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};

use super::rules;
use super::spec::Topology;
use super::task::Step;
use crate::error::ApiError;

/// The topology chosen for a piece of work, and the switch to record for an ADAPTIVE swarm
/// (its reason) when the rule chose it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chosen {
    pub(crate) topology: Topology,
    pub(crate) switch: Option<String>,
}

/// The topology for work whose handout recorded `recorded` (the work goes on as it started),
/// else the swarm's own, else for an ADAPTIVE swarm the rule's on the work and the members'
/// free slots.
pub(crate) fn topology(
    recorded: Option<Topology>,
    swarm: Topology,
    has_dependencies: bool,
    subtasks: usize,
    free_slots: usize,
) -> Chosen {
    match (recorded, swarm) {
        (Some(topology), _) => Chosen { topology, switch: None },
        (None, Topology::Adaptive) => {
            let (topology, reason) = rules::adaptive(has_dependencies, subtasks, free_slots);
            Chosen {
                topology,
                switch: Some(reason),
            }
        }
        (None, topology) => Chosen { topology, switch: None },
    }
}

/// The `k` members a scatter goes to: the first `k` capable running ones, or why it cannot.
pub(crate) fn scatter_members(capable: &[&str], k: usize) -> Result<Vec<Option<String>>, ApiError> {
    if capable.len() < k {
        return Err(ApiError::Unavailable(format!(
            "scatter-gather to {k} members, but {} running members can take it",
            capable.len()
        )));
    }
    Ok(capable.iter().take(k).map(|m| Some((*m).to_owned())).collect())
}

/// The plan's steps not yet started whose dependencies have all given a result, with their
/// place in the plan (their turn for a pick).
pub(crate) fn ready_steps<'a>(
    steps: &'a [Step],
    started: &BTreeSet<&str>,
    results: &HashMap<&str, (String, Value)>,
) -> Vec<(usize, &'a Step)> {
    steps
        .iter()
        .enumerate()
        .filter(|(_, s)| !started.contains(s.key.as_str()))
        .filter(|(_, s)| s.depends_on.iter().all(|d| results.contains_key(d.as_str())))
        .collect()
}

/// What a step is given: its payload alone, or with its dependencies' results by the task
/// that gave each (`{"payload": …, "dependencies": {"<task id>": <result>}}`, as a task graph
/// gives them).
pub(crate) fn step_input(step: &Step, results: &HashMap<&str, (String, Value)>) -> Value {
    if step.depends_on.is_empty() {
        return step.payload.clone();
    }
    let inputs: serde_json::Map<String, Value> = step
        .depends_on
        .iter()
        .filter_map(|d| results.get(d.as_str()).cloned())
        .collect();
    json!({ "payload": step.payload, "dependencies": inputs })
}

/// A plan's answer: the result of the one step nothing depends on, or each such step's by
/// key.
pub(crate) fn plan_result(steps: &[Step], mut results: HashMap<&str, (String, Value)>) -> Value {
    let needed: BTreeSet<&str> = steps
        .iter()
        .flat_map(|s| s.depends_on.iter().map(String::as_str))
        .collect();
    let mut sinks: Vec<(&str, Value)> = steps
        .iter()
        .filter(|s| !needed.contains(s.key.as_str()))
        .filter_map(|s| Some((s.key.as_str(), results.remove(s.key.as_str())?.1)))
        .collect();
    match sinks.len() {
        1 => sinks.remove(0).1,
        _ => Value::Object(sinks.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(key: &str, depends_on: &[&str]) -> Step {
        Step {
            key: key.into(),
            capabilities: Vec::new(),
            payload: json!(key),
            depends_on: depends_on.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn recorded_work_keeps_its_topology_and_only_adaptive_swarms_switch() {
        let kept = topology(Some(Topology::Mesh), Topology::Adaptive, false, 9, 1);
        assert_eq!(
            kept,
            Chosen {
                topology: Topology::Mesh,
                switch: None
            }
        );
        let own = topology(None, Topology::Hierarchical, false, 9, 1);
        assert_eq!(
            own,
            Chosen {
                topology: Topology::Hierarchical,
                switch: None
            }
        );
        let loaded = topology(None, Topology::Adaptive, false, 9, 1);
        assert_eq!(loaded.topology, Topology::Mesh);
        assert!(loaded.switch.is_some_and(|r| r.contains("under load")));
        let dependent = topology(None, Topology::Adaptive, true, 9, 1);
        assert_eq!(dependent.topology, Topology::Hierarchical);
    }

    #[test]
    fn a_scatter_takes_the_first_k_capable_members_or_says_why_not() {
        assert_eq!(
            scatter_members(&["a", "b", "c"], 2).unwrap(),
            [Some("a".to_owned()), Some("b".to_owned())]
        );
        let short = scatter_members(&["a"], 2).unwrap_err();
        assert!(matches!(short, ApiError::Unavailable(m) if m.contains("1 running members")));
    }

    #[test]
    fn plan_steps_start_once_their_dependencies_have_answered_with_their_results() {
        let steps = [step("a", &[]), step("b", &[]), step("c", &["a", "b"])];
        let mut started = BTreeSet::new();
        let mut results = HashMap::new();
        let keys = |r: Vec<(usize, &Step)>| r.into_iter().map(|(i, s)| (i, s.key.clone())).collect::<Vec<_>>();
        assert_eq!(
            keys(ready_steps(&steps, &started, &results)),
            [(0, "a".into()), (1, "b".into())]
        );
        started.extend(["a", "b"]);
        assert!(ready_steps(&steps, &started, &results).is_empty(), "started steps wait");
        results.insert("a", ("t-a".to_owned(), json!(1)));
        assert!(ready_steps(&steps, &started, &results).is_empty(), "c waits for b too");
        results.insert("b", ("t-b".to_owned(), json!(2)));
        assert_eq!(keys(ready_steps(&steps, &started, &results)), [(2, "c".into())]);
        assert_eq!(step_input(&steps[0], &results), json!("a"));
        assert_eq!(
            step_input(&steps[2], &results),
            json!({ "payload": "c", "dependencies": { "t-a": 1, "t-b": 2 } })
        );
    }

    #[test]
    fn a_plan_answers_its_one_last_step_or_each_by_key() {
        let chain = [step("a", &[]), step("b", &["a"])];
        let results = HashMap::from([("a", ("t1".to_owned(), json!(1))), ("b", ("t2".to_owned(), json!(2)))]);
        assert_eq!(plan_result(&chain, results.clone()), json!(2));
        let fork = [step("a", &[]), step("b", &[])];
        assert_eq!(plan_result(&fork, results), json!({ "a": 1, "b": 2 }));
    }
}

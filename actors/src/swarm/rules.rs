//! The swarm's decisions as pure functions: its health from its members' states, how a
//! scatter-gather is aggregated, which topology an ADAPTIVE swarm uses, and how autoscale
//! moves its size. The coordinator applies them.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::spec::{Autoscale, SwarmHealth, Topology};
use crate::agent::AgentState;

/// The health its members' states make, and why.
pub fn health(states: &[AgentState], min_agents: u32) -> (SwarmHealth, String) {
    let running = states.iter().filter(|s| **s == AgentState::Running).count();
    let total = states.len();
    if total == 0 && min_agents == 0 {
        return (SwarmHealth::Healthy, "no members, none required".into());
    }
    if running == 0 {
        return (SwarmHealth::Failed, format!("none of its {total} members is running"));
    }
    if running < total || (running as u32) < min_agents {
        return (
            SwarmHealth::Degraded,
            format!("{running} of {total} members are running (at least {min_agents} wanted)"),
        );
    }
    (SwarmHealth::Healthy, format!("all {total} members are running"))
}

/// How a scatter-gather's answers become its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Aggregate {
    /// The first answer.
    First,
    /// Every answer, by member.
    All,
    /// The answer more than half the members gave; the others are the dissent.
    Majority,
}

/// One member's answer (its result, or why it gave none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub agent: String,
    pub result: Result<Value, String>,
}

/// The aggregated result of a scatter-gather, or why there is none. For MAJORITY, the dissent
/// names each member whose answer differs (or who gave none).
pub fn aggregate(mode: Aggregate, answers: &[Answer]) -> Result<Value, String> {
    match mode {
        Aggregate::First => answers
            .iter()
            .find_map(|a| a.result.as_ref().ok().cloned())
            .ok_or_else(|| "no member answered".into()),
        Aggregate::All => {
            let failed: Vec<&Answer> = answers.iter().filter(|a| a.result.is_err()).collect();
            if let Some(f) = failed.first() {
                return Err(format!(
                    "{} of {} members failed (first: {}: {})",
                    failed.len(),
                    answers.len(),
                    f.agent,
                    f.result.as_ref().err().map_or("", String::as_str)
                ));
            }
            Ok(json!({
                "answers": answers.iter().map(|a| json!({ "agent": a.agent, "result": a.result.as_ref().ok() })).collect::<Vec<_>>()
            }))
        }
        Aggregate::Majority => {
            let mut tally: Vec<(&Value, usize)> = Vec::new();
            for a in answers {
                if let Ok(v) = &a.result {
                    match tally.iter_mut().find(|(w, _)| *w == v) {
                        Some((_, n)) => *n += 1,
                        None => tally.push((v, 1)),
                    }
                }
            }
            let best = tally.iter().max_by_key(|(_, n)| *n).copied();
            match best {
                Some((value, votes)) if votes * 2 > answers.len() => {
                    let dissent: Vec<Value> = answers
                        .iter()
                        .filter(|a| a.result.as_ref() != Ok(value))
                        .map(|a| match &a.result {
                            Ok(v) => json!({ "agent": a.agent, "result": v }),
                            Err(e) => json!({ "agent": a.agent, "error": e }),
                        })
                        .collect();
                    Ok(json!({ "result": value, "votes": votes, "of": answers.len(), "dissent": dissent }))
                }
                _ => Err(format!(
                    "no majority among {} answers ({} distinct)",
                    answers.len(),
                    tally.len()
                )),
            }
        }
    }
}

/// The topology an ADAPTIVE swarm uses for a piece of work: work with dependencies (a plan
/// whose subtasks depend on each other, or a pipeline) goes hierarchical; independent work
/// goes mesh when it is more than the members can start at once (under load), else
/// hierarchical. Answers the topology and the reason.
pub fn adaptive(has_dependencies: bool, subtasks: usize, free_slots: usize) -> (Topology, String) {
    if has_dependencies {
        (Topology::Hierarchical, "the work has dependencies".into())
    } else if subtasks > free_slots {
        (
            Topology::Mesh,
            format!("{subtasks} independent subtasks and {free_slots} free member slots: under load"),
        )
    } else {
        (
            Topology::Hierarchical,
            format!("{subtasks} independent subtasks fit the {free_slots} free member slots"),
        )
    }
}

/// What autoscale asks of a swarm's size now, and why: `Some(new size)` or nothing.
pub fn autoscale(
    policy: &Autoscale,
    size: u32,
    (min, max): (u32, u32),
    queued: usize,
    busy_slots: usize,
    slots: usize,
) -> Option<(u32, String)> {
    let per_member = queued as f64 / size.max(1) as f64;
    if size < min {
        return Some((min, format!("{size} members, below minAgents {min}")));
    }
    if size > max {
        return Some((max, format!("{size} members, above maxAgents {max}")));
    }
    if per_member > policy.queue_per_agent && size < max {
        let wanted = ((queued as f64 / policy.queue_per_agent).ceil() as u32).clamp(size + 1, max);
        return Some((
            wanted,
            format!(
                "{queued} tasks wait for {size} members ({per_member:.1} each, above {})",
                policy.queue_per_agent
            ),
        ));
    }
    let utilisation = if slots == 0 {
        0.0
    } else {
        busy_slots as f64 / slots as f64
    };
    if queued == 0 && utilisation < policy.idle_below && size > min {
        return Some((
            size - 1,
            format!(
                "nothing waits and {:.0} % of member slots are busy (below {:.0} %)",
                utilisation * 100.0,
                policy.idle_below * 100.0
            ),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(agent: &str, result: Result<Value, &str>) -> Answer {
        Answer {
            agent: agent.into(),
            result: result.map_err(str::to_owned),
        }
    }

    #[test]
    fn health_follows_the_members() {
        use AgentState::*;
        assert_eq!(health(&[Running, Running], 2).0, SwarmHealth::Healthy);
        assert_eq!(health(&[Running, Starting], 1).0, SwarmHealth::Degraded);
        assert_eq!(health(&[Running], 2).0, SwarmHealth::Degraded);
        assert_eq!(health(&[Failed, Stopped], 1).0, SwarmHealth::Failed);
        assert_eq!(health(&[], 1).0, SwarmHealth::Failed);
        assert_eq!(health(&[], 0).0, SwarmHealth::Healthy);
    }

    #[test]
    fn a_majority_outvotes_a_faulty_member_and_names_it() {
        let answers = [
            answer("a", Ok(json!(4))),
            answer("b", Ok(json!(5))),
            answer("c", Ok(json!(4))),
        ];
        let r = aggregate(Aggregate::Majority, &answers).unwrap();
        assert_eq!(r["result"], 4);
        assert_eq!(r["votes"], 2);
        assert_eq!(r["dissent"], json!([{ "agent": "b", "result": 5 }]));
        let split = [
            answer("a", Ok(json!(1))),
            answer("b", Ok(json!(2))),
            answer("c", Err("x")),
        ];
        assert!(aggregate(Aggregate::Majority, &split).is_err());
        // Half is not a majority.
        let tie = [answer("a", Ok(json!(1))), answer("b", Ok(json!(2)))];
        assert!(aggregate(Aggregate::Majority, &tie).is_err());
    }

    #[test]
    fn first_takes_the_first_answer_and_all_needs_every_one() {
        let answers = [answer("a", Err("boom")), answer("b", Ok(json!("x")))];
        assert_eq!(aggregate(Aggregate::First, &answers), Ok(json!("x")));
        assert!(aggregate(Aggregate::All, &answers).unwrap_err().contains("a: boom"));
        let all = aggregate(Aggregate::All, &[answer("a", Ok(json!(1)))]).unwrap();
        assert_eq!(all, json!({ "answers": [{ "agent": "a", "result": 1 }] }));
    }

    #[test]
    fn adaptive_goes_hierarchical_for_dependencies_and_mesh_under_load() {
        assert_eq!(adaptive(true, 100, 1).0, Topology::Hierarchical);
        assert_eq!(adaptive(false, 10, 4).0, Topology::Mesh);
        assert_eq!(adaptive(false, 3, 4).0, Topology::Hierarchical);
    }

    #[test]
    fn autoscale_grows_with_the_queue_and_shrinks_when_idle_within_bounds() {
        let p = Autoscale::default();
        assert_eq!(autoscale(&p, 2, (1, 10), 20, 2, 2).map(|d| d.0), Some(10));
        assert_eq!(autoscale(&p, 2, (1, 4), 20, 2, 2).map(|d| d.0), Some(4));
        assert_eq!(autoscale(&p, 2, (1, 10), 5, 2, 2).map(|d| d.0), Some(3));
        assert_eq!(autoscale(&p, 2, (1, 10), 4, 2, 2), None);
        assert_eq!(autoscale(&p, 3, (1, 10), 0, 0, 3).map(|d| d.0), Some(2));
        assert_eq!(autoscale(&p, 1, (1, 10), 0, 0, 1), None);
        assert_eq!(autoscale(&p, 0, (2, 10), 0, 0, 0).map(|d| d.0), Some(2));
    }
}

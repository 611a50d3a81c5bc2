//! An experiment over several nodes' trees: its faults name different nodes (one each), so
//! it is started as one part per node (each an experiment of that node, with the same seed,
//! duration and lease), and answered as one: its id is this node's, its state the least
//! advanced part's until all have ended, its injections and report the parts' together.
//! Stopping or renewing it stops or renews every part; the kill switch reaches every part
//! as it reaches every node. It is kept in the replicated store as its parts (see `kept`),
//! so every node reads it, each part from that part's own record.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use troupe_runtime::store::Batch;

use super::kept::{Kept, EXPERIMENTS};
use super::{Experiment, ExperimentState};
use super::{ExperimentInput, RecoveryReport};
use crate::error::ApiError;
use crate::service::Api;

/// An experiment over several nodes, as its parts started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Spread {
    name: String,
    seed: u64,
    started_at: DateTime<Utc>,
    /// Each part as it started (read again from its own record), by node, in node order.
    pub(super) parts: BTreeMap<String, Experiment>,
}

/// The faults of `input` by the node whose tree each selects in: a fault that names no
/// node, and the faults of nodes and VMs, go with this node's part. `None` when they all
/// select in one tree. A fault that names several nodes' trees is refused.
pub(super) fn parts(me: &str, input: &ExperimentInput) -> Result<Option<BTreeMap<String, ExperimentInput>>, ApiError> {
    let mut by_node: BTreeMap<String, ExperimentInput> = BTreeMap::new();
    for (n, fault) in input.faults.iter().enumerate() {
        let tree = fault.runs_on_its_node();
        let node = match &fault.target.nodes[..] {
            [one] if tree => one.clone(),
            [] => me.to_owned(),
            _ if !tree => me.to_owned(),
            several => {
                return Err(ApiError::invalid(format!(
                    "fault {n} selects in the trees of {}: name one node per fault (a fault per node)",
                    several.join(", ")
                )))
            }
        };
        by_node
            .entry(node)
            .or_insert_with(|| ExperimentInput {
                faults: Vec::new(),
                ..input.clone()
            })
            .faults
            .push(fault.clone());
    }
    Ok((by_node.len() > 1).then_some(by_node))
}

/// The experiment as one: the parts' state, injections and report together.
pub(super) fn merged(id: &str, s: &Spread) -> Experiment {
    let parts: Vec<&Experiment> = s.parts.values().collect();
    let all_final = parts.iter().all(|p| p.state.is_final());
    let has = |state: ExperimentState| parts.iter().any(|p| p.state == state);
    let state = match all_final {
        false if has(ExperimentState::Pending) => ExperimentState::Pending,
        false if has(ExperimentState::Active) => ExperimentState::Active,
        false => ExperimentState::Recovering,
        true if has(ExperimentState::Aborted) => ExperimentState::Aborted,
        true if has(ExperimentState::Failed) => ExperimentState::Failed,
        true => ExperimentState::Passed,
    };
    let reports: Vec<(&String, &RecoveryReport)> = s
        .parts
        .iter()
        .filter_map(|(node, p)| p.report.as_ref().map(|r| (node, r)))
        .collect();
    let report = (all_final && reports.len() == parts.len()).then(|| RecoveryReport {
        verdict: match reports.iter().all(|(_, r)| r.verdict == "PASS") {
            true => "PASS".into(),
            false => "FAIL".into(),
        },
        reason: reports
            .iter()
            .map(|(node, r)| format!("on {node}: {}", r.reason))
            .collect::<Vec<_>>()
            .join("; "),
        injected: reports.iter().map(|(_, r)| r.injected).sum(),
        recovered: reports.iter().map(|(_, r)| r.recovered).sum(),
        max_time_to_recover_ms: reports.iter().filter_map(|(_, r)| r.max_time_to_recover_ms).max(),
        invariants: reports
            .iter()
            .flat_map(|(node, r)| {
                r.invariants.iter().map(move |i| super::InvariantResult {
                    detail: Some(format!("on {node}: {}", i.detail.clone().unwrap_or_default())),
                    ..i.clone()
                })
            })
            .collect(),
        unexpected: reports.iter().flat_map(|(_, r)| r.unexpected.iter().cloned()).collect(),
    });
    Experiment {
        id: id.to_owned(),
        name: s.name.clone(),
        state,
        seed: s.seed,
        started_at: s.started_at,
        finished_at: match all_final {
            true => parts.iter().filter_map(|p| p.finished_at).max(),
            false => None,
        },
        injections: parts.iter().flat_map(|p| p.injections.iter().cloned()).collect(),
        report,
    }
}

impl Api {
    /// Starts one part per node (this node's first, then the others in node order); if one
    /// is refused, the parts started already are stopped and the refusal is the answer.
    pub(super) async fn start_spread(
        &self,
        mut input: ExperimentInput,
        parts: BTreeMap<String, ExperimentInput>,
    ) -> Result<Experiment, ApiError> {
        let me = self.ctx.node_name.clone();
        let seed = *input.seed.get_or_insert_with(|| rand::random::<u64>() >> 1);
        for node in parts.keys().filter(|n| **n != me) {
            super::remote::member(self, node)?;
        }
        let mut order: Vec<(String, ExperimentInput)> = parts.into_iter().collect();
        order.sort_by_key(|(node, _)| *node != me);
        let mut started: BTreeMap<String, Experiment> = BTreeMap::new();
        for (node, mut part) in order {
            part.seed = Some(seed);
            let answer = match node == me {
                true => self.start_here(part).await,
                false => super::remote::start_on(self, &node, part).await,
            };
            match answer {
                Ok(e) => {
                    started.insert(node, e);
                }
                Err(e) => {
                    for part in started.values() {
                        if let Err(e) = self.stop_experiment(&part.id).await {
                            tracing::warn!(experiment = %part.id, error = %e, "a part started before a refusal could not be stopped");
                        }
                    }
                    return Err(match e {
                        ApiError::InvalidInput(m) => ApiError::InvalidInput(format!("on {node}: {m}")),
                        other => other,
                    });
                }
            }
        }
        let id = format!("{}@{}", uuid::Uuid::now_v7(), me);
        let spread = Spread {
            name: input.name,
            seed,
            started_at: Utc::now(),
            parts: started,
        };
        let view = merged(&id, &spread);
        let record = troupe_runtime::codec::encode(&Kept::Parts(spread))?;
        if let Err(e) = self
            .ctx
            .store
            .write(Batch::new().put(EXPERIMENTS, id.clone(), record))
            .await
        {
            // Its parts run, and each is read as an experiment of its own node.
            tracing::warn!(experiment = %id, error = %e, "an experiment over several nodes was not recorded as one");
        }
        Ok(view)
    }

    /// Stops or renews every part; the first refusal is the answer, after every part was asked.
    pub(super) async fn spread_each(&self, id: &str, s: Spread, stop: bool) -> Result<Experiment, ApiError> {
        let mut refused = None;
        for part in s.parts.values() {
            let answer = match stop {
                true => self.stop_experiment(&part.id).await,
                false => self.renew_experiment(&part.id).await,
            };
            if let Err(e) = answer {
                refused.get_or_insert(e);
            }
        }
        match refused {
            Some(e) => Err(e),
            None => self
                .experiment(id)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("no experiment {id}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::experiments::{FaultAction, FaultSpec, InvariantResult};

    fn part(id: &str, state: ExperimentState, verdict: Option<&str>) -> Experiment {
        Experiment {
            report: verdict.map(|v| RecoveryReport {
                verdict: v.into(),
                reason: format!("{v} here"),
                injected: 1,
                recovered: usize::from(v == "PASS"),
                max_time_to_recover_ms: Some(3),
                invariants: vec![InvariantResult {
                    name: "TREE_RESTORED".into(),
                    ok: v == "PASS",
                    detail: Some("same children".into()),
                }],
                unexpected: Vec::new(),
            }),
            ..Experiment::bare(id, state)
        }
    }

    fn spread(parts: Vec<(&str, Experiment)>) -> Spread {
        Spread {
            name: "x".into(),
            seed: 7,
            started_at: Utc::now(),
            parts: parts.into_iter().map(|(n, p)| (n.to_owned(), p)).collect(),
        }
    }

    #[test]
    fn the_parts_make_one_experiment_ended_only_when_every_part_has() {
        let one = spread(vec![
            ("a", part("1@a", ExperimentState::Passed, Some("PASS"))),
            ("b", part("2@b", ExperimentState::Active, None)),
        ]);
        let e = merged("s@a", &one);
        assert_eq!(e.state, ExperimentState::Active);
        assert!(e.report.is_none() && e.finished_at.is_none());

        let both = spread(vec![
            ("a", part("1@a", ExperimentState::Passed, Some("PASS"))),
            ("b", part("2@b", ExperimentState::Failed, Some("FAIL"))),
        ]);
        let e = merged("s@a", &both);
        assert_eq!(e.state, ExperimentState::Failed);
        let r = e.report.expect("report");
        assert_eq!((r.verdict.as_str(), r.injected, r.recovered), ("FAIL", 2, 1));
        assert_eq!(r.reason, "on a: PASS here; on b: FAIL here");
        assert_eq!(r.invariants.len(), 2);
        assert_eq!(r.invariants[1].detail.as_deref(), Some("on b: same children"));
    }

    fn fault(nodes: &[&str], action: FaultAction) -> FaultSpec {
        let mut target = crate::service::experiments::select::Selector::one(vec!["x".into()], None, None);
        target.nodes = nodes.iter().map(|n| n.to_string()).collect();
        FaultSpec {
            action,
            target,
            to: None,
            params: serde_json::Value::Null,
        }
    }

    #[test]
    fn faults_are_parted_by_the_node_whose_tree_they_select_in() {
        let mut input = ExperimentInput::one("x", fault(&["b"], FaultAction::Crash));
        assert!(parts("a", &input).unwrap().is_none(), "one tree: no parts");
        input.faults.push(fault(&[], FaultAction::Crash));
        input.faults.push(fault(&["b", "c"], FaultAction::DiskFull));
        let parted = parts("a", &input).unwrap().expect("two trees");
        assert_eq!(parted.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(parted["a"].faults.len(), 2, "the unnamed tree fault and the node fault");
        input.faults.push(fault(&["b", "c"], FaultAction::Crash));
        assert!(matches!(parts("a", &input), Err(ApiError::InvalidInput(_))));
    }
}

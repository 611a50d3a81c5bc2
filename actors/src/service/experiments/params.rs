//! What each action's `params` (and a PARTITION's `to`) arm: the node gates of a partition or
//! a store fault, node by node, and the link fault of a message fault. Checked before
//! anything is hit, so bad settings are INVALID_INPUT with the reason.

use std::time::Duration;

use troupe_runtime::store::NodeFault;

use super::select::Candidate;
use super::FaultAction;
use crate::messaging::faults::{LinkEffect, LinkFault};

/// The longest MESSAGE_DELAY.
const MAX_MESSAGE_DELAY: u64 = 60_000;

fn ms_param(p: &serde_json::Map<String, serde_json::Value>, name: &str, default: u64, max: u64) -> Result<u64, String> {
    match p.get(name) {
        None => Ok(default),
        Some(v) => v
            .as_u64()
            .filter(|ms| *ms <= max)
            .ok_or(format!("{name} is from 0 to {max}")),
    }
}

/// The link fault of a message action on its target agent: the messages to it, from
/// `params.from` (any sender when not given), hit with `params.probability`.
pub(crate) fn link_fault(fault: &super::FaultSpec, target: &Candidate, seed: u64) -> Result<Option<LinkFault>, String> {
    let (effect, p) = match fault.action {
        FaultAction::MessageDelay => {
            let p = settings(&fault.params, &["delayMs", "jitterMs", "probability", "from"])?;
            let delay = ms_param(&p, "delayMs", 500, MAX_MESSAGE_DELAY)?;
            let jitter = ms_param(&p, "jitterMs", 0, delay)?;
            let effect = LinkEffect::Delay {
                delay: Duration::from_millis(delay),
                jitter: Duration::from_millis(jitter),
            };
            (effect, p)
        }
        FaultAction::MessageDrop => (LinkEffect::Drop, settings(&fault.params, &["probability", "from"])?),
        _ => return Ok(None),
    };
    let probability = match p.get("probability") {
        None => 1.0,
        Some(v) => v
            .as_f64()
            .filter(|p| *p > 0.0 && *p <= 1.0)
            .ok_or("probability is above 0 and at most 1")?,
    };
    let from = match p.get("from") {
        None => Vec::new(),
        Some(v) => {
            serde_json::from_value::<Vec<String>>(v.clone()).map_err(|_| "from is a list of agent ids".to_owned())?
        }
    };
    Ok(Some(LinkFault {
        to: target.id.clone(),
        from,
        effect,
        probability,
        seed,
    }))
}

/// The slowest commit STORE_SLOW_COMMIT may ask for (the writer thread waits it out).
const MAX_COMMIT_DELAY: u64 = 10_000;

fn settings(params: &serde_json::Value, known: &[&str]) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let map = match params {
        serde_json::Value::Null => return Ok(Default::default()),
        serde_json::Value::Object(m) => m.clone(),
        other => return Err(format!("params must be an object, not {other}")),
    };
    if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(match known.is_empty() {
            true => format!("it takes no params (got {unknown})"),
            false => format!("unknown param {unknown}; known: {}", known.join(", ")),
        });
    }
    Ok(map)
}

/// What a node fault arms, node by node: a PARTITION's cut on each side, a store fault on
/// its node. Empty for faults of the tree.
pub(crate) fn node_gates(
    fault: &super::FaultSpec,
    target: &Candidate,
    members: &[String],
) -> Result<Vec<(String, NodeFault)>, String> {
    let node = target.id.clone();
    let gate = |f: NodeFault| Ok(vec![(node.clone(), f)]);
    match fault.action {
        FaultAction::Partition => {
            let p = settings(&fault.params, &["oneWay"])?;
            let one_way = match p.get("oneWay") {
                None => false,
                Some(v) => v.as_bool().ok_or("oneWay is true or false")?,
            };
            let others: Vec<String> = members.iter().filter(|m| **m != node).cloned().collect();
            let far: Vec<String> = match &fault.to {
                Some(to) => super::select::narrow_nodes(members, to, &others)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|c| c.id)
                    .filter(|n| *n != node)
                    .collect(),
                None => others,
            };
            if far.is_empty() {
                return Err(format!("nothing is left on the far side of {node}'s cut"));
            }
            let mut gates = vec![(node.clone(), NodeFault::Cut { peers: far.clone() })];
            if !one_way {
                gates.extend(far.into_iter().map(|f| {
                    (
                        f,
                        NodeFault::Cut {
                            peers: vec![node.clone()],
                        },
                    )
                }));
            }
            Ok(gates)
        }
        FaultAction::StoreReject => {
            let p = settings(&fault.params, &["tables"])?;
            let tables = match p.get("tables") {
                None => Vec::new(),
                Some(v) => serde_json::from_value::<Vec<String>>(v.clone())
                    .map_err(|_| "tables is a list of table names".to_owned())?,
            };
            gate(NodeFault::Reject { tables })
        }
        FaultAction::StoreSlowCommit => {
            let p = settings(&fault.params, &["delayMs"])?;
            let ms = match p.get("delayMs") {
                None => 500,
                Some(v) => v
                    .as_u64()
                    .filter(|ms| (1..=MAX_COMMIT_DELAY).contains(ms))
                    .ok_or(format!("delayMs is from 1 to {MAX_COMMIT_DELAY}"))?,
            };
            gate(NodeFault::SlowCommit {
                delay: Duration::from_millis(ms),
            })
        }
        FaultAction::DiskFull => {
            settings(&fault.params, &[])?;
            gate(NodeFault::DiskFull)
        }
        _ => Ok(Vec::new()),
    }
}

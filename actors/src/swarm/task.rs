//! What a client (or a sub-team's leader) submits to a swarm: the swarm task, its modes and
//! their validation, and a leader's `team_task` line taken as a mode.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::handout::Handout;
use super::rules::Aggregate;
use super::spec::Topology;
use crate::agent::protocol::{self, TeamMode};
use crate::error::ApiError;

/// One step of a plan: `key` names it within the plan, `depends_on` other keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub key: String,
    pub capabilities: Vec<String>,
    #[serde(with = "troupe_runtime::codec::json_text")]
    pub payload: Value,
    pub depends_on: Vec<String>,
}

/// A stage of a pipeline, or the map or reduce of a map-reduce: which members can do it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    #[serde(default)]
    pub capabilities: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SwarmTaskMode {
    /// One piece of work for one member (mesh: whichever takes it first).
    Single {
        capabilities: Vec<String>,
        #[serde(with = "troupe_runtime::codec::json_text")]
        payload: Value,
    },
    /// A plan of steps with dependencies; with no steps, a member with the capability `plan`
    /// is asked for them (its result: `{"steps": [...]}`).
    Plan {
        steps: Vec<Step>,
        #[serde(with = "troupe_runtime::codec::json_text")]
        input: Value,
    },
    /// The same payload to `k` distinct members, their answers aggregated.
    ScatterGather {
        k: u32,
        aggregate: Aggregate,
        capabilities: Vec<String>,
        #[serde(with = "troupe_runtime::codec::json_text")]
        payload: Value,
    },
    /// Stages in order, each stage's result the next one's payload.
    Pipeline {
        stages: Vec<Stage>,
        #[serde(with = "troupe_runtime::codec::json_text")]
        input: Value,
    },
    /// One map task per item, then one reduce task given `{"results": [...]}` in item order.
    MapReduce {
        #[serde(with = "troupe_runtime::codec::json_text")]
        items: Value,
        map: Stage,
        reduce: Stage,
    },
}

impl SwarmTaskMode {
    pub fn name(&self) -> &'static str {
        match self {
            SwarmTaskMode::Single { .. } => "SINGLE",
            SwarmTaskMode::Plan { .. } => "PLAN",
            SwarmTaskMode::ScatterGather { .. } => "SCATTER_GATHER",
            SwarmTaskMode::Pipeline { .. } => "PIPELINE",
            SwarmTaskMode::MapReduce { .. } => "MAP_REDUCE",
        }
    }

    pub fn validate(&self) -> Result<(), ApiError> {
        match self {
            SwarmTaskMode::Plan { steps, .. } => check_plan(steps),
            SwarmTaskMode::ScatterGather { k, .. } if *k == 0 || *k > 1000 => {
                Err(ApiError::invalid("scatter-gather needs k between 1 and 1000"))
            }
            SwarmTaskMode::Pipeline { stages, .. } if stages.is_empty() || stages.len() > 100 => {
                Err(ApiError::invalid("a pipeline needs 1 to 100 stages"))
            }
            SwarmTaskMode::MapReduce { items, .. } => match items.as_array() {
                Some(a) if !a.is_empty() && a.len() <= 10_000 => Ok(()),
                _ => Err(ApiError::invalid("map-reduce needs items: a list of 1 to 10,000")),
            },
            _ => Ok(()),
        }
    }
}

/// A leader's `team_task` line (its wire shape is the agent protocol's), checked.
impl TryFrom<TeamMode> for SwarmTaskMode {
    type Error = ApiError;

    fn try_from(line: TeamMode) -> Result<SwarmTaskMode, ApiError> {
        let mode = match line {
            TeamMode::Single { capabilities, payload } => SwarmTaskMode::Single { capabilities, payload },
            TeamMode::Plan { steps, input } => SwarmTaskMode::Plan {
                steps: steps
                    .into_iter()
                    .map(|s| Step {
                        key: s.key,
                        capabilities: s.capabilities,
                        payload: s.payload,
                        depends_on: s.depends_on,
                    })
                    .collect(),
                input,
            },
            TeamMode::ScatterGather {
                k,
                aggregate,
                capabilities,
                payload,
            } => SwarmTaskMode::ScatterGather {
                k,
                aggregate: match aggregate {
                    Some(protocol::Aggregate::First) => Aggregate::First,
                    Some(protocol::Aggregate::All) => Aggregate::All,
                    Some(protocol::Aggregate::Majority) | None => Aggregate::Majority,
                },
                capabilities,
                payload,
            },
            TeamMode::Pipeline { stages, input } => SwarmTaskMode::Pipeline {
                stages: stages.into_iter().map(Stage::from).collect(),
                input,
            },
            TeamMode::MapReduce { items, map, reduce } => SwarmTaskMode::MapReduce {
                items,
                map: map.into(),
                reduce: reduce.into(),
            },
        };
        mode.validate()?;
        Ok(mode)
    }
}

impl From<protocol::Stage> for Stage {
    fn from(s: protocol::Stage) -> Self {
        Stage {
            capabilities: s.capabilities,
        }
    }
}

/// Keys unique, dependencies known, no cycle.
pub(crate) fn check_plan(steps: &[Step]) -> Result<(), ApiError> {
    let mut keys = BTreeSet::new();
    for s in steps {
        if !keys.insert(s.key.as_str()) {
            return Err(ApiError::invalid(format!("plan step {:?} appears twice", s.key)));
        }
    }
    for s in steps {
        if let Some(d) = s.depends_on.iter().find(|d| !keys.contains(d.as_str())) {
            return Err(ApiError::invalid(format!(
                "plan step {:?} depends on unknown step {d:?}",
                s.key
            )));
        }
    }
    // Kahn: a step is ready once all it depends on are.
    let mut done = BTreeSet::new();
    while done.len() < steps.len() {
        let ready: Vec<&str> = steps
            .iter()
            .filter(|s| !done.contains(s.key.as_str()) && s.depends_on.iter().all(|d| done.contains(d.as_str())))
            .map(|s| s.key.as_str())
            .collect();
        if ready.is_empty() {
            return Err(ApiError::invalid("the plan's dependencies form a cycle"));
        }
        done.extend(ready);
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SwarmTaskState {
    Running,
    Succeeded,
    Failed,
}

/// A task given to a swarm. Durable: its coordinator takes it up again after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwarmTask {
    pub id: String,
    pub swarm: String,
    pub mode: SwarmTaskMode,
    pub state: SwarmTaskState,
    /// How its work was handed out (HIERARCHICAL or MESH).
    pub topology: Option<Topology>,
    /// The tasks it made, in the order it made them.
    pub subtasks: Vec<String>,
    #[serde(with = "troupe_runtime::codec::json_text_opt")]
    pub result: Option<Value>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Each step's work as it was handed out, by step: what a conductor taking the task up
    /// again replays. Last, and defaulted, so records kept before it read as none.
    #[serde(default)]
    pub handouts: BTreeMap<String, Handout>,
}

/// A step as a planner writes it (JSON).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PlannedStep {
    key: String,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    depends_on: Vec<String>,
}

impl From<PlannedStep> for Step {
    fn from(p: PlannedStep) -> Self {
        Step {
            key: p.key,
            capabilities: p.capabilities,
            payload: p.payload,
            depends_on: p.depends_on,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// What a leader's `team_task` line asks for, as the swarm takes it.
    fn from_line(line: &Value) -> Result<SwarmTaskMode, String> {
        let mode: TeamMode = serde_json::from_value(line.clone()).map_err(|e| format!("a team_task line: {e}"))?;
        SwarmTaskMode::try_from(mode).map_err(|e| e.to_string())
    }

    #[test]
    fn a_team_task_line_reads_as_the_mode_it_names() {
        let line = json!({ "type": "team_task", "id": "t1", "mode": "MAP_REDUCE", "items": [1, 2],
            "map": { "capabilities": ["exact"] } });
        let mode = from_line(&line).expect("a map-reduce");
        assert_eq!(
            mode,
            SwarmTaskMode::MapReduce {
                items: json!([1, 2]),
                map: Stage {
                    capabilities: vec!["exact".into()]
                },
                reduce: Stage::default(),
            }
        );
        let line = json!({ "mode": "PIPELINE", "stages": [{}, { "capabilities": ["upper"] }] });
        assert!(matches!(from_line(&line), Ok(SwarmTaskMode::Pipeline { stages, .. }) if stages.len() == 2));
        let line = json!({ "mode": "SCATTER_GATHER", "k": 3, "aggregate": "FIRST", "payload": "x" });
        assert!(matches!(
            from_line(&line),
            Ok(SwarmTaskMode::ScatterGather {
                k: 3,
                aggregate: Aggregate::First,
                ..
            })
        ));
        let line = json!({ "mode": "PLAN", "steps": [{ "key": "a", "dependsOn": ["b"] }] });
        let refused = from_line(&line).expect_err("an unknown dependency");
        assert!(refused.contains("unknown step"), "{refused}");
        assert!(from_line(&json!({ "mode": "DANCE" })).is_err());
        assert!(from_line(&json!({ "mode": "SCATTER_GATHER", "k": 0 })).is_err());
    }
}

//! The input objects of swarm mutations, checked and turned into the actors' requests.

use async_graphql::{InputObject, Json, ID};
use serde_json::Value;
use troupe_actors::swarm::{self as sw, CreateSwarmRequest, SwarmTaskMode as Mode};
use troupe_actors::ApiError;

use super::{AggregateMode, MemberStrategy, SwarmTaskMode, Topology};
use crate::schema::agents::SpawnAgentInput;
use crate::schema::Int64;

#[derive(InputObject)]
pub struct SwarmTemplateInput {
    /// The members' spec; each member is named `<name>-<suffix>`.
    pub agent: SpawnAgentInput,
    /// How many members to make of it at creation.
    #[graphql(default = 1)]
    pub count: i32,
}

#[derive(InputObject)]
pub struct AutoscaleInput {
    #[graphql(default = 2.0)]
    pub queue_per_agent: f64,
    #[graphql(default = 0.25)]
    pub idle_below: f64,
    #[graphql(default = 5000)]
    pub cooldown_ms: i32,
}

#[derive(InputObject)]
pub struct CreateSwarmInput {
    pub name: String,
    #[graphql(default_with = "Topology::Hierarchical")]
    pub topology: Topology,
    #[graphql(default)]
    pub templates: Vec<SwarmTemplateInput>,
    /// Agents of this node to adopt as members.
    #[graphql(default)]
    pub members: Vec<ID>,
    pub min_agents: Option<i32>,
    pub max_agents: Option<i32>,
    #[graphql(default_with = "MemberStrategy::OneForOne")]
    pub strategy: MemberStrategy,
    pub autoscale: Option<AutoscaleInput>,
    pub memory_limit_bytes: Option<Int64>,
    /// What its LLM members may spend together, over all their tasks: tokens (input and
    /// output) and US dollars at the node's price table; past either, a member's task fails
    /// with BUDGET_EXCEEDED [default: no limit].
    pub max_tokens: Option<Int64>,
    pub max_cost_usd: Option<f64>,
    /// Makes it a sub-team of this swarm (its subtree runs inside the parent's), led by
    /// `leader`; the two go together.
    pub parent: Option<ID>,
    /// The parent's member that leads the sub-team: its `team_task` lines give the team work.
    pub leader: Option<ID>,
    /// The node to run it on (default: the one asked; a sub-team runs on its parent's).
    pub node: Option<String>,
}

pub(super) fn count(v: i32, what: &str) -> Result<u32, ApiError> {
    u32::try_from(v).map_err(|_| ApiError::invalid(format!("{what} must not be negative")))
}

impl CreateSwarmInput {
    pub(super) fn into_request(self) -> Result<CreateSwarmRequest, ApiError> {
        let templates = self
            .templates
            .into_iter()
            .map(|t| {
                Ok(sw::Template {
                    count: count(t.count, "count")?,
                    agent: t.agent.into_request(true)?,
                })
            })
            .collect::<Result<_, ApiError>>()?;
        Ok(CreateSwarmRequest {
            name: self.name,
            topology: self.topology.into(),
            templates,
            members: self.members.into_iter().map(|m| m.0).collect(),
            min_agents: self.min_agents.map(|m| count(m, "minAgents")).transpose()?,
            max_agents: self.max_agents.map(|m| count(m, "maxAgents")).transpose()?,
            strategy: self.strategy.into(),
            autoscale: self.autoscale.map(|a| sw::Autoscale {
                queue_per_agent: a.queue_per_agent,
                idle_below: a.idle_below,
                cooldown_ms: a.cooldown_ms.max(0) as u64,
            }),
            memory_limit_bytes: self
                .memory_limit_bytes
                .map(|m| u64::try_from(m.0).map_err(|_| ApiError::invalid("memoryLimitBytes must not be negative")))
                .transpose()?,
            lead: match (self.parent, self.leader) {
                (Some(swarm), Some(agent)) => Some(sw::Lead {
                    swarm: swarm.0,
                    agent: agent.0,
                }),
                (None, None) => None,
                _ => return Err(ApiError::invalid("a sub-team needs both parent and leader")),
            },
            node: self.node,
            budget: match (self.max_tokens, self.max_cost_usd) {
                (None, None) => None,
                (tokens, cost) => Some(troupe_actors::task::Budget {
                    max_tokens: tokens
                        .map(|t| u64::try_from(t.0).map_err(|_| ApiError::invalid("maxTokens must be positive")))
                        .transpose()?,
                    max_cost_usd: cost,
                }),
            },
        })
    }
}

#[derive(InputObject)]
pub struct PlanStepInput {
    pub key: String,
    #[graphql(default)]
    pub capabilities: Vec<String>,
    pub payload: Option<Json<Value>>,
    #[graphql(default)]
    pub depends_on: Vec<String>,
}

#[derive(InputObject)]
pub struct StageInput {
    /// What the member doing it must be able to do (any member when empty).
    #[graphql(default)]
    pub capabilities: Vec<String>,
}

impl From<StageInput> for sw::Stage {
    fn from(s: StageInput) -> Self {
        sw::Stage {
            capabilities: s.capabilities,
        }
    }
}

/// A swarm task; which fields count depends on `mode`.
#[derive(InputObject)]
pub struct SubmitSwarmTaskInput {
    pub mode: SwarmTaskMode,
    /// SINGLE, SCATTER_GATHER: what each member is given.
    pub payload: Option<Json<Value>>,
    /// SINGLE, SCATTER_GATHER: what the member must be able to do.
    #[graphql(default)]
    pub capabilities: Vec<String>,
    /// SCATTER_GATHER: how many members.
    pub k: Option<i32>,
    /// SCATTER_GATHER (default MAJORITY).
    pub aggregate: Option<AggregateMode>,
    /// PLAN: the steps (none: ask a planner member).
    #[graphql(default)]
    pub steps: Vec<PlanStepInput>,
    /// PIPELINE: the stages, in order.
    #[graphql(default)]
    pub stages: Vec<StageInput>,
    /// PIPELINE: the first stage's payload; PLAN: what a planner is asked to plan.
    pub input: Option<Json<Value>>,
    /// MAP_REDUCE: a list, one map task per element.
    pub items: Option<Json<Value>>,
    pub map: Option<StageInput>,
    pub reduce: Option<StageInput>,
}

impl SubmitSwarmTaskInput {
    pub(super) fn into_mode(self) -> Result<Mode, ApiError> {
        let json = |v: Option<Json<Value>>| v.map_or(Value::Null, |j| j.0);
        Ok(match self.mode {
            SwarmTaskMode::Single => Mode::Single {
                capabilities: self.capabilities,
                payload: json(self.payload),
            },
            SwarmTaskMode::Plan => Mode::Plan {
                steps: self
                    .steps
                    .into_iter()
                    .map(|s| sw::Step {
                        key: s.key,
                        capabilities: s.capabilities,
                        payload: json(s.payload),
                        depends_on: s.depends_on,
                    })
                    .collect(),
                input: json(self.input),
            },
            SwarmTaskMode::ScatterGather => Mode::ScatterGather {
                k: count(self.k.ok_or_else(|| ApiError::invalid("SCATTER_GATHER needs k"))?, "k")?,
                aggregate: self.aggregate.unwrap_or(AggregateMode::Majority).into(),
                capabilities: self.capabilities,
                payload: json(self.payload),
            },
            SwarmTaskMode::Pipeline => Mode::Pipeline {
                stages: self.stages.into_iter().map(Into::into).collect(),
                input: json(self.input),
            },
            SwarmTaskMode::MapReduce => Mode::MapReduce {
                items: json(self.items),
                map: self.map.map(Into::into).unwrap_or(sw::Stage { capabilities: vec![] }),
                reduce: self
                    .reduce
                    .map(Into::into)
                    .unwrap_or(sw::Stage { capabilities: vec![] }),
            },
        })
    }
}

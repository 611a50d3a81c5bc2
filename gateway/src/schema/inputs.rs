//! GraphQL inputs and their translation into the actors' requests.

use async_graphql::{InputObject, Json, OneofObject, ID};
use troupe_actors::agent::{Backend, BuiltinKind, ExecBackend, SpawnAgentRequest};
use troupe_actors::task::SubmitTaskRequest;
use troupe_actors::ApiError;

use super::types::Priority;

#[derive(InputObject)]
pub struct EnvVarInput {
    pub name: String,
    pub value: String,
}

#[derive(InputObject)]
pub struct ExecBackendInput {
    pub command: Vec<String>,
    pub timeout_ms: Option<i64>,
    pub env: Option<Vec<EnvVarInput>>,
}

#[derive(InputObject)]
pub struct BuiltinBackendInput {
    /// echo | sleep | fail | panic
    pub kind: String,
}

#[derive(OneofObject)]
pub enum BackendInput {
    Exec(ExecBackendInput),
    Builtin(BuiltinBackendInput),
}

#[derive(InputObject)]
pub struct SpawnAgentInput {
    pub name: String,
    pub backend: BackendInput,
    pub capabilities: Option<Vec<String>>,
    pub max_concurrent_tasks: Option<i64>,
    /// The node to run on; this node when omitted.
    pub node: Option<String>,
}

impl TryFrom<SpawnAgentInput> for SpawnAgentRequest {
    type Error = ApiError;

    fn try_from(input: SpawnAgentInput) -> Result<Self, ApiError> {
        let backend = match input.backend {
            BackendInput::Builtin(b) => Backend::Builtin(BuiltinKind::parse(&b.kind)?),
            BackendInput::Exec(e) => {
                let timeout_ms = match e.timeout_ms {
                    Some(t) if t <= 0 => return Err(ApiError::invalid("timeoutMs must be positive")),
                    t => t.map(|t| t as u64),
                };
                Backend::Exec(ExecBackend {
                    command: e.command,
                    timeout_ms,
                    env: e
                        .env
                        .unwrap_or_default()
                        .into_iter()
                        .map(|v| (v.name, v.value))
                        .collect(),
                })
            }
        };
        Ok(SpawnAgentRequest {
            name: input.name,
            backend,
            capabilities: input.capabilities.unwrap_or_default(),
            max_concurrent_tasks: input.max_concurrent_tasks,
            node: input.node,
        })
    }
}

#[derive(InputObject)]
pub struct SubmitTaskInput {
    /// Run on this agent; give this or `capability`.
    pub agent_id: Option<ID>,
    /// Run on the least-loaded agent with this capability.
    pub capability: Option<String>,
    pub payload: Json<serde_json::Value>,
    pub priority: Option<Priority>,
    pub max_attempts: Option<i64>,
    pub timeout_ms: Option<i64>,
}

impl From<SubmitTaskInput> for SubmitTaskRequest {
    fn from(input: SubmitTaskInput) -> Self {
        SubmitTaskRequest {
            agent_id: input.agent_id.map(|id| id.0),
            capability: input.capability,
            payload: input.payload.0,
            priority: input.priority.map(Into::into),
            max_attempts: input.max_attempts,
            timeout_ms: input.timeout_ms,
        }
    }
}

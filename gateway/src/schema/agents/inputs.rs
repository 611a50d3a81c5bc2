//! The inputs agent mutations take, and how they become requests.

use async_graphql::{InputObject, OneofObject, ID};
use troupe_actors::agent::{
    AgentBudget, AgentUpdate, ApprovalPolicy, BackendSpec, BuiltinKind, Dialect, ExecBackend, HttpBackend, Limits,
    LlmBackend, McpBackend, ProcessBackend, RestartLimit, SecretRef, SpawnAgentRequest,
};
use troupe_actors::ApiError;

use crate::schema::shared::{pairs, LabelInput};
use crate::schema::Int64;

#[derive(InputObject)]
pub struct EnvVarInput {
    pub name: String,
    pub value: String,
}

#[derive(InputObject)]
pub struct HeaderInput {
    pub name: String,
    pub value: String,
}

#[derive(InputObject)]
pub struct ExecBackendInput {
    pub command: Vec<String>,
    pub timeout_ms: Option<Int64>,
    pub env: Option<Vec<EnvVarInput>>,
}

#[derive(InputObject)]
pub struct BuiltinBackendInput {
    /// echo | sleep | fail | panic | counter
    pub kind: String,
}

/// A long-lived process speaking JSON lines (docs/agent-protocol.md).
#[derive(InputObject)]
pub struct ProcessBackendInput {
    pub command: Vec<String>,
    pub env: Option<Vec<EnvVarInput>>,
    /// A task's default inactivity limit (each progress line resets it).
    pub timeout_ms: Option<Int64>,
    /// How often the process must show a sign of life [default: 5000].
    pub heartbeat_ms: Option<Int64>,
    /// Silent intervals after which the process is hung: killed and restarted [default: 3].
    pub missed_heartbeats: Option<i32>,
    /// How long the process has to say `ready` [default: 10000].
    pub ready_timeout_ms: Option<Int64>,
}

/// Each task POSTed as JSON to a URL; a 2xx JSON answer is the result.
#[derive(InputObject)]
pub struct HttpBackendInput {
    pub url: String,
    pub headers: Option<Vec<HeaderInput>>,
    pub timeout_ms: Option<Int64>,
}

/// A model endpoint: OpenAI-compatible chat completions, or Anthropic's Messages API
/// (`dialect`). The API key is read on the node from `apiKeyEnv` (a variable) or
/// `apiKeyFile` (a file); it is never part of the spec.
#[derive(InputObject)]
pub struct LlmBackendInput {
    /// Without `/v1`, e.g. `https://api.openai.com`.
    pub base_url: String,
    pub model: String,
    pub system_prompt: Option<String>,
    /// A variable of the node's environment holding the key; it must be one the node allows
    /// (`secret_env`), never a `TROUPE_*` one, else FORBIDDEN.
    pub api_key_env: Option<String>,
    /// A file on the node holding the key; it must be inside a directory the node allows
    /// (`secret_dirs`) and never under its data dir, else FORBIDDEN.
    pub api_key_file: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<i32>,
    #[graphql(default = false)]
    pub stream: bool,
    pub timeout_ms: Option<Int64>,
    /// Retries within one attempt of a 408, 409, 429, 529 or 5xx answer, a connection error
    /// or an Anthropic stream's `error` event (docs/llm-agents.md) [default: 3].
    pub max_retries: Option<i32>,
    /// The endpoint's wire dialect [default: OPENAI].
    pub dialect: Option<LlmDialect>,
    /// Model calls a task may take at most before it stops with MAX_STEPS [default: 10].
    pub max_steps: Option<i32>,
    /// The tools offered to the model: glob patterns over their names, e.g. `troupe_*`
    /// [default: none].
    pub tools: Option<Vec<String>>,
    /// The `anthropic-version` header, for the ANTHROPIC dialect [default: 2023-06-01].
    pub anthropic_version: Option<String>,
    /// What the agent may spend over all its tasks and per day (UTC); past any of them its
    /// task fails with BUDGET_EXCEEDED [default: no limit].
    pub budget: Option<LlmBudgetInput>,
    /// `mcp` agents whose tools the model is offered, as `<server name>__<tool>`, by id or
    /// by a name only one agent has (kept as its id); `tools` patterns apply to those names
    /// too [default: none].
    pub mcp_servers: Option<Vec<ID>>,
    /// Which tool calls wait for an operator's `approveCall` / `rejectCall` [default: none].
    pub approval: Option<ApprovalInput>,
    /// The tokens (estimated at four characters each) the conversation a `session` keeps
    /// may take; its oldest exchanges are dropped past it [default: 4000].
    pub session_window_tokens: Option<Int64>,
    /// Keys of the agent's swarm memory put into its system prompt, as they are when each
    /// task begins [default: none].
    pub memory_keys: Option<Vec<String>>,
}

/// Which of an LLM agent's tool calls wait for an operator before they run.
#[derive(InputObject, Default)]
pub struct ApprovalInput {
    /// Glob patterns over tool names, as the model is offered them.
    pub tools: Option<Vec<String>>,
    /// Every call of a reply whose model call cost more than this (US dollars).
    pub above_cost_usd: Option<f64>,
    /// Undecided this long after it is asked for, a call is rejected [default: it waits].
    pub timeout_ms: Option<Int64>,
}

/// An LLM agent's budget: tokens are input and output together; costs in US dollars at
/// the node's price table (`llm_prices`).
#[derive(InputObject, Default)]
pub struct LlmBudgetInput {
    pub max_tokens: Option<Int64>,
    pub max_cost_usd: Option<f64>,
    pub max_tokens_per_day: Option<Int64>,
    pub max_cost_usd_per_day: Option<f64>,
}

/// How a model endpoint is spoken to.
#[derive(async_graphql::Enum, Clone, Copy, PartialEq, Eq)]
pub enum LlmDialect {
    /// OpenAI-compatible chat completions (`/v1/chat/completions`).
    Openai,
    /// Anthropic's Messages API (`/v1/messages`).
    Anthropic,
}

/// An MCP server the agent is a client of: a `command` speaking MCP on stdin and stdout, or
/// a streamable-HTTP `url`. Each of its tools is a capability `mcp:<agent name>/<tool>`,
/// and a tool of the LLM agents that name it in `mcpServers`.
#[derive(InputObject)]
pub struct McpBackendInput {
    pub command: Option<Vec<String>>,
    pub env: Option<Vec<EnvVarInput>>,
    pub url: Option<String>,
    /// For `url`: a variable of the node's environment holding a bearer token (allowed by
    /// `secret_env`, as an llm agent's key).
    pub api_key_env: Option<String>,
    /// For `url`: a file holding a bearer token (inside `secret_dirs`).
    pub api_key_file: Option<String>,
    /// How often the server is pinged; two unanswered and the agent fails [default: 10000].
    pub ping_ms: Option<Int64>,
    /// A tool call's limit when its task sets none [default: 120000].
    pub timeout_ms: Option<Int64>,
}

// An llm input is the largest by far; one is read per spawn, so it is not boxed.
#[allow(clippy::large_enum_variant)]
#[derive(OneofObject)]
pub enum BackendInput {
    Exec(ExecBackendInput),
    Builtin(BuiltinBackendInput),
    Process(ProcessBackendInput),
    Http(HttpBackendInput),
    Llm(LlmBackendInput),
    Mcp(McpBackendInput),
}

/// rlimits of each process of an exec or process agent.
#[derive(InputObject)]
pub struct LimitsInput {
    /// Address space of each process (RLIMIT_AS) and memory of the agent's cgroup, MiB.
    #[graphql(name = "memoryMiB")]
    pub memory_mib: Option<Int64>,
    /// CPU time, seconds (RLIMIT_CPU).
    pub cpu_seconds: Option<Int64>,
    /// Open file descriptors (RLIMIT_NOFILE).
    pub open_files: Option<Int64>,
    /// CPU of the agent's cgroup v2, in cores (where the node can set cgroup limits).
    pub cpu_cores: Option<f64>,
}

/// Restarts allowed within a window before the agent's recovery ladder moves on (rollback to
/// its last checkpoint, then FAILED).
#[derive(InputObject)]
pub struct RestartLimitInput {
    pub max_restarts: i32,
    pub window_ms: Int64,
}

#[derive(InputObject)]
pub struct SpawnAgentInput {
    pub name: String,
    pub backend: BackendInput,
    pub capabilities: Option<Vec<String>>,
    pub max_concurrent_tasks: Option<i32>,
    /// The node to run on; this node when omitted.
    pub node: Option<String>,
    /// [default: "default"]
    pub project: Option<String>,
    pub labels: Option<Vec<LabelInput>>,
    pub limits: Option<LimitsInput>,
    pub restart_limit: Option<RestartLimitInput>,
    /// Never moved to another node when its node is lost: it waits for its node
    /// [default: false].
    pub pinned: Option<bool>,
    /// Moved, when its node is lost, only to a member whose node labels include all of
    /// these (`--node-label`); when none is UP it waits for its node.
    pub node_labels: Option<Vec<LabelInput>>,
    /// How good it is at some of its capabilities, 0 to 1 (the others count as 1).
    pub proficiency: Option<Vec<ProficiencyInput>>,
    /// Its share of tasks under the WEIGHTED strategy [default: 1].
    pub weight: Option<f64>,
    /// Topic patterns it receives published messages of: dot-separated segments, `*` one
    /// segment, `#` any number (`health.*`, `builds.#`).
    pub topics: Option<Vec<String>>,
}

#[derive(InputObject)]
pub struct ProficiencyInput {
    pub capability: String,
    pub proficiency: f64,
}

/// What `updateAgent` changes; fields left out stay. Applied at the agent's next start.
#[derive(InputObject)]
pub struct UpdateAgentInput {
    pub capabilities: Option<Vec<String>>,
    pub max_concurrent_tasks: Option<i32>,
    /// Replaces all labels.
    pub labels: Option<Vec<LabelInput>>,
    pub limits: Option<LimitsInput>,
    /// Replaces the env of an exec or process agent.
    pub env: Option<Vec<EnvVarInput>>,
    pub restart_limit: Option<RestartLimitInput>,
}

fn ms(v: Option<Int64>, field: &str) -> Result<Option<u64>, ApiError> {
    match v {
        Some(Int64(t)) if t <= 0 => Err(ApiError::invalid(format!("{field} must be positive"))),
        t => Ok(t.map(|t| t.0 as u64)),
    }
}

fn env(v: Option<Vec<EnvVarInput>>) -> Vec<(String, String)> {
    v.unwrap_or_default().into_iter().map(|v| (v.name, v.value)).collect()
}

fn count(v: Option<Int64>, field: &str) -> Result<Option<u64>, ApiError> {
    match v {
        Some(Int64(n)) if n <= 0 => Err(ApiError::invalid(format!("limits.{field} must be positive"))),
        n => Ok(n.map(|n| n.0 as u64)),
    }
}

impl TryFrom<LimitsInput> for Limits {
    type Error = ApiError;

    fn try_from(l: LimitsInput) -> Result<Self, ApiError> {
        Ok(Limits {
            memory_mib: count(l.memory_mib, "memoryMiB")?,
            cpu_seconds: count(l.cpu_seconds, "cpuSeconds")?,
            open_files: count(l.open_files, "openFiles")?,
            cpu_cores: l.cpu_cores,
        })
    }
}

impl TryFrom<RestartLimitInput> for RestartLimit {
    type Error = ApiError;

    fn try_from(r: RestartLimitInput) -> Result<Self, ApiError> {
        let max_restarts = u32::try_from(r.max_restarts)
            .map_err(|_| ApiError::invalid("restartLimit.maxRestarts must not be negative"))?;
        let window_ms = ms(Some(r.window_ms), "restartLimit.windowMs")?.unwrap_or(1);
        Ok(RestartLimit {
            max_restarts,
            window_ms,
        })
    }
}

impl TryFrom<BackendInput> for BackendSpec {
    type Error = ApiError;

    fn try_from(input: BackendInput) -> Result<Self, ApiError> {
        Ok(match input {
            BackendInput::Builtin(b) => BackendSpec::Builtin(BuiltinKind::parse(&b.kind)?),
            BackendInput::Exec(e) => BackendSpec::Exec(ExecBackend {
                command: e.command,
                timeout_ms: ms(e.timeout_ms, "timeoutMs")?,
                env: env(e.env),
            }),
            BackendInput::Mcp(m) => BackendSpec::Mcp(McpBackend {
                command: m.command.unwrap_or_default(),
                env: env(m.env),
                url: m.url,
                api_key: match (m.api_key_env, m.api_key_file) {
                    (Some(_), Some(_)) => return Err(ApiError::invalid("give apiKeyEnv or apiKeyFile, not both")),
                    (Some(var), None) => Some(SecretRef::Env(var)),
                    (None, Some(path)) => Some(SecretRef::File(path)),
                    (None, None) => None,
                },
                ping_ms: ms(m.ping_ms, "pingMs")?.unwrap_or(McpBackend::DEFAULT_PING_MS),
                timeout_ms: ms(m.timeout_ms, "timeoutMs")?,
            }),
            BackendInput::Process(p) => BackendSpec::Process(ProcessBackend {
                command: p.command,
                env: env(p.env),
                timeout_ms: ms(p.timeout_ms, "timeoutMs")?,
                heartbeat_ms: ms(p.heartbeat_ms, "heartbeatMs")?.unwrap_or(ProcessBackend::DEFAULT_HEARTBEAT_MS),
                missed_heartbeats: match p.missed_heartbeats {
                    None => ProcessBackend::DEFAULT_MISSED,
                    Some(n) => u32::try_from(n).map_err(|_| ApiError::invalid("missedHeartbeats must be positive"))?,
                },
                ready_timeout_ms: ms(p.ready_timeout_ms, "readyTimeoutMs")?
                    .unwrap_or(ProcessBackend::DEFAULT_READY_TIMEOUT_MS),
            }),
            BackendInput::Http(h) => BackendSpec::Http(HttpBackend {
                url: h.url,
                headers: h
                    .headers
                    .unwrap_or_default()
                    .into_iter()
                    .map(|h| (h.name, h.value))
                    .collect(),
                timeout_ms: ms(h.timeout_ms, "timeoutMs")?,
            }),
            BackendInput::Llm(l) => BackendSpec::Llm(LlmBackend {
                base_url: l.base_url,
                model: l.model,
                system_prompt: l.system_prompt,
                api_key: match (l.api_key_env, l.api_key_file) {
                    (Some(_), Some(_)) => return Err(ApiError::invalid("give apiKeyEnv or apiKeyFile, not both")),
                    (Some(var), None) => Some(SecretRef::Env(var)),
                    (None, Some(path)) => Some(SecretRef::File(path)),
                    (None, None) => None,
                },
                temperature: l.temperature,
                max_tokens: match l.max_tokens {
                    None => None,
                    Some(n) => Some(u32::try_from(n).map_err(|_| ApiError::invalid("maxTokens must be positive"))?),
                },
                stream: l.stream,
                timeout_ms: ms(l.timeout_ms, "timeoutMs")?,
                max_retries: match l.max_retries {
                    None => LlmBackend::DEFAULT_MAX_RETRIES,
                    Some(n) => u32::try_from(n).map_err(|_| ApiError::invalid("maxRetries must not be negative"))?,
                },
                dialect: match l.dialect {
                    None | Some(LlmDialect::Openai) => Dialect::OpenAi,
                    Some(LlmDialect::Anthropic) => Dialect::Anthropic,
                },
                max_steps: match l.max_steps {
                    None => LlmBackend::DEFAULT_MAX_STEPS,
                    Some(n) => u32::try_from(n).map_err(|_| ApiError::invalid("maxSteps must be positive"))?,
                },
                tools: l.tools.unwrap_or_default(),
                session_window_tokens: match l.session_window_tokens {
                    None => LlmBackend::DEFAULT_SESSION_WINDOW,
                    Some(n) if n.0 > 0 => n.0 as u64,
                    Some(_) => return Err(ApiError::invalid("sessionWindowTokens must be positive")),
                },
                memory_keys: l.memory_keys.unwrap_or_default(),
                anthropic_version: l.anthropic_version,
                mcp_servers: l.mcp_servers.unwrap_or_default().into_iter().map(|id| id.0).collect(),
                approval: {
                    let a = l.approval.unwrap_or_default();
                    ApprovalPolicy {
                        tools: a.tools.unwrap_or_default(),
                        above_cost_usd: a.above_cost_usd,
                        timeout_ms: ms(a.timeout_ms, "approval.timeoutMs")?,
                    }
                },
                budget: {
                    let b = l.budget.unwrap_or_default();
                    let tokens = |t: Option<Int64>, field: &str| match t {
                        None => Ok(None),
                        Some(t) => u64::try_from(t.0)
                            .map(Some)
                            .map_err(|_| ApiError::invalid(format!("{field} must be positive"))),
                    };
                    AgentBudget {
                        max_tokens: tokens(b.max_tokens, "budget.maxTokens")?,
                        max_cost_usd: b.max_cost_usd,
                        max_tokens_per_day: tokens(b.max_tokens_per_day, "budget.maxTokensPerDay")?,
                        max_cost_usd_per_day: b.max_cost_usd_per_day,
                    }
                },
            }),
        })
    }
}

impl SpawnAgentInput {
    /// The request this input asks for; `start` says whether the agent starts at once.
    pub fn into_request(self, start: bool) -> Result<SpawnAgentRequest, ApiError> {
        Ok(SpawnAgentRequest {
            name: self.name,
            backend: self.backend.try_into()?,
            capabilities: self.capabilities.unwrap_or_default(),
            max_concurrent_tasks: self.max_concurrent_tasks.map(i64::from),
            node: self.node,
            project: self.project,
            labels: pairs(self.labels),
            limits: self.limits.map(Limits::try_from).transpose()?.unwrap_or_default(),
            restart: self.restart_limit.map(RestartLimit::try_from).transpose()?,
            start,
            proficiency: self
                .proficiency
                .unwrap_or_default()
                .into_iter()
                .map(|p| (p.capability, p.proficiency))
                .collect(),
            weight: self.weight,
            topics: self.topics.unwrap_or_default(),
            placement: troupe_actors::agent::AgentPlacement {
                pinned: self.pinned.unwrap_or(false),
                node_labels: pairs(self.node_labels).into_iter().collect(),
            },
        })
    }
}

impl TryFrom<UpdateAgentInput> for AgentUpdate {
    type Error = ApiError;

    fn try_from(u: UpdateAgentInput) -> Result<Self, ApiError> {
        Ok(AgentUpdate {
            capabilities: u.capabilities,
            max_concurrent_tasks: u.max_concurrent_tasks.map(i64::from),
            labels: u.labels.map(|l| pairs(Some(l))),
            limits: u.limits.map(Limits::try_from).transpose()?,
            env: u.env.map(|e| env(Some(e))),
            restart: u.restart_limit.map(RestartLimit::try_from).transpose()?,
        })
    }
}

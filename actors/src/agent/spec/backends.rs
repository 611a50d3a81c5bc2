//! The backends an agent can be made of, as its spec names them.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuiltinKind {
    /// Result = payload.
    Echo,
    /// Sleeps `{"ms": N}`.
    Sleep,
    /// Fails with the payload's `message`.
    Fail,
    /// Panics inside the agent actor (fault tests).
    Panic,
    /// Keeps a count: `{"add": N}` adds to it, every task answers `{"count": C}`. Its count
    /// can be checkpointed and restored.
    Counter,
}

impl BuiltinKind {
    pub fn parse(kind: &str) -> Result<Self, ApiError> {
        match kind {
            "echo" => Ok(Self::Echo),
            "sleep" => Ok(Self::Sleep),
            "fail" => Ok(Self::Fail),
            "panic" => Ok(Self::Panic),
            "counter" => Ok(Self::Counter),
            other => Err(ApiError::invalid(format!(
                "unknown builtin kind {other:?}: expected echo, sleep, fail, panic or counter"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::Sleep => "sleep",
            Self::Fail => "fail",
            Self::Panic => "panic",
            Self::Counter => "counter",
        }
    }
}

/// A command started once per task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecBackend {
    pub command: Vec<String>,
    pub timeout_ms: Option<u64>,
    pub env: Vec<(String, String)>,
}

/// One long-lived process per agent speaking JSON lines (`docs/agent-protocol.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessBackend {
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    /// A task's default inactivity limit: reset by each `progress` line.
    pub timeout_ms: Option<u64>,
    /// How often the process must show a sign of life.
    pub heartbeat_ms: u64,
    /// Intervals without a sign of life after which the process is taken as hung.
    pub missed_heartbeats: u32,
    /// How long the process has to say `ready`.
    pub ready_timeout_ms: u64,
}

impl ProcessBackend {
    pub const DEFAULT_HEARTBEAT_MS: u64 = 5_000;
    pub const DEFAULT_MISSED: u32 = 3;
    pub const DEFAULT_READY_TIMEOUT_MS: u64 = 10_000;
}

/// Each task POSTed to a URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpBackend {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub timeout_ms: Option<u64>,
}

/// Where a secret comes from; the secret itself is never in a spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecretRef {
    /// An environment variable of the node.
    Env(String),
    /// A file on the node (its content, trimmed).
    File(String),
}

/// The wire dialect of a model endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dialect {
    /// OpenAI-compatible chat completions (`/v1/chat/completions`, `tools`/`tool_calls`).
    #[default]
    OpenAi,
    /// Anthropic's Messages API (`/v1/messages`, `tool_use`/`tool_result` blocks).
    Anthropic,
}

/// A model endpoint an agent runs each task against as a loop: model, tools, model, until
/// it answers (see `agent::backend::llm`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmBackend {
    /// Up to and without `/v1`, e.g. `https://api.openai.com` or `http://127.0.0.1:8080`.
    pub base_url: String,
    pub model: String,
    pub system_prompt: Option<String>,
    pub api_key: Option<SecretRef>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    pub stream: bool,
    pub timeout_ms: Option<u64>,
    /// Retries of a 429 or 5xx answer within one attempt, with backoff honouring `Retry-After`.
    pub max_retries: u32,
    #[serde(default)]
    pub dialect: Dialect,
    /// Model calls a task may take at most; the loop stops with MAX_STEPS past it.
    #[serde(default = "LlmBackend::default_max_steps")]
    pub max_steps: u32,
    /// The tools offered to the model: glob patterns (`*`, `?`) over their names, e.g.
    /// `troupe_*`. None by default.
    #[serde(default)]
    pub tools: Vec<String>,
    /// The `anthropic-version` header (Anthropic dialect) [default: 2023-06-01].
    #[serde(default)]
    pub anthropic_version: Option<String>,
    /// What the agent may spend over all its tasks, and per day (UTC).
    #[serde(default)]
    pub budget: AgentBudget,
    /// The `mcp` agents (by id) whose tools the model is offered (as `<server>__<tool>`,
    /// subject to `tools` like the rest).
    #[serde(default)]
    pub mcp_servers: Vec<String>,
    /// Which tool calls wait for an operator's approval.
    #[serde(default)]
    pub approval: ApprovalPolicy,
    /// The tokens (estimated at four characters each) a session's kept conversation may
    /// take; its oldest exchanges are dropped past it.
    #[serde(default = "LlmBackend::default_session_window")]
    pub session_window_tokens: u64,
    /// Keys of the agent's swarm memory put into its system prompt, as they are when each
    /// task begins.
    #[serde(default)]
    pub memory_keys: Vec<String>,
}

/// Which of an LLM agent's tool calls wait for an operator's decision before they run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApprovalPolicy {
    /// Glob patterns over tool names (as offered to the model).
    pub tools: Vec<String>,
    /// Every call of a reply whose model call cost more than this (US dollars).
    pub above_cost_usd: Option<f64>,
    /// Undecided for this long after it was asked for, a call is rejected; none: it waits.
    pub timeout_ms: Option<u64>,
}

/// What an LLM agent may spend; checked before each model call against the usage its
/// tasks committed. Past any of them, the task fails with BUDGET_EXCEEDED.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentBudget {
    pub max_tokens: Option<u64>,
    pub max_cost_usd: Option<f64>,
    pub max_tokens_per_day: Option<u64>,
    pub max_cost_usd_per_day: Option<f64>,
}

impl LlmBackend {
    pub const DEFAULT_MAX_RETRIES: u32 = 3;
    pub const DEFAULT_MAX_STEPS: u32 = 10;
    pub const DEFAULT_SESSION_WINDOW: u64 = 4000;
    pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

    /// An endpoint with every other setting at its default.
    pub fn to(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            system_prompt: None,
            api_key: None,
            temperature: None,
            max_tokens: None,
            stream: false,
            timeout_ms: None,
            max_retries: Self::DEFAULT_MAX_RETRIES,
            dialect: Dialect::OpenAi,
            max_steps: Self::DEFAULT_MAX_STEPS,
            tools: Vec::new(),
            anthropic_version: None,
            budget: AgentBudget::default(),
            mcp_servers: Vec::new(),
            approval: ApprovalPolicy::default(),
            session_window_tokens: Self::DEFAULT_SESSION_WINDOW,
            memory_keys: Vec::new(),
        }
    }

    fn default_session_window() -> u64 {
        Self::DEFAULT_SESSION_WINDOW
    }

    fn default_max_steps() -> u32 {
        Self::DEFAULT_MAX_STEPS
    }
}

/// An MCP server the agent is a client of: a command speaking MCP on its stdin and stdout,
/// or a streamable-HTTP endpoint. Its tools are tasks (`mcp:<agent name>/<tool>`) and the
/// tools of the LLM agents that name it (`mcpServers`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpBackend {
    /// The server's command (stdio); give this or `url`.
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The server's streamable-HTTP endpoint, e.g. `http://127.0.0.1:8000/mcp`.
    pub url: Option<String>,
    /// Sent as `Authorization: Bearer` to an HTTP server.
    pub api_key: Option<SecretRef>,
    /// How often the server is pinged; two pings unanswered and the agent fails (and is
    /// restarted by its supervisor).
    pub ping_ms: u64,
    /// A tool call's limit when its task sets none.
    pub timeout_ms: Option<u64>,
}

impl McpBackend {
    pub const DEFAULT_PING_MS: u64 = 10_000;
}

/// Which backend object the agent runs its tasks with. (An llm spec is the largest by far;
/// specs are read at spawn and start, never in a hot path, so it is not boxed.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BackendSpec {
    Exec(ExecBackend),
    Builtin(BuiltinKind),
    Process(ProcessBackend),
    Http(HttpBackend),
    Llm(LlmBackend),
    Mcp(McpBackend),
}

impl BackendSpec {
    pub fn describe(&self) -> String {
        let first = |c: &[String]| c.first().cloned().unwrap_or_default();
        match self {
            BackendSpec::Exec(e) => format!("exec:{}", first(&e.command)),
            BackendSpec::Builtin(k) => format!("builtin:{}", k.as_str()),
            BackendSpec::Process(p) => format!("process:{}", first(&p.command)),
            BackendSpec::Http(h) => format!("http:{}", h.url),
            BackendSpec::Llm(l) => format!("llm:{}", l.model),
            BackendSpec::Mcp(m) => match &m.url {
                Some(url) => format!("mcp:{url}"),
                None => format!("mcp:{}", first(&m.command)),
            },
        }
    }

    /// Whether the backend runs processes of its own (limits, pause and usage apply).
    pub fn runs_processes(&self) -> bool {
        matches!(self, BackendSpec::Exec(_) | BackendSpec::Process(_))
    }

    pub fn validate(&self) -> Result<(), ApiError> {
        match self {
            BackendSpec::Builtin(_) => Ok(()),
            BackendSpec::Exec(e) => {
                command(&e.command)?;
                env(&e.env)?;
                positive(e.timeout_ms, "timeoutMs")
            }
            BackendSpec::Process(p) => {
                command(&p.command)?;
                env(&p.env)?;
                positive(p.timeout_ms, "timeoutMs")?;
                if !(10..=3_600_000).contains(&p.heartbeat_ms) {
                    return Err(ApiError::invalid("heartbeatMs must be between 10 and 3600000"));
                }
                if !(1..=100).contains(&p.missed_heartbeats) {
                    return Err(ApiError::invalid("missedHeartbeats must be between 1 and 100"));
                }
                if !(1..=600_000).contains(&p.ready_timeout_ms) {
                    return Err(ApiError::invalid("readyTimeoutMs must be between 1 and 600000"));
                }
                Ok(())
            }
            BackendSpec::Http(h) => {
                url(&h.url, "url")?;
                headers(&h.headers)?;
                positive(h.timeout_ms, "timeoutMs")
            }
            BackendSpec::Mcp(m) => {
                match (&m.url, m.command.is_empty()) {
                    (Some(u), true) => url(u, "url")?,
                    (None, false) => command(&m.command)?,
                    _ => return Err(ApiError::invalid("an mcp agent needs a command or a url, not both")),
                }
                env(&m.env)?;
                if m.api_key.is_some() && m.url.is_none() {
                    return Err(ApiError::invalid(
                        "an mcp agent's key is for an HTTP server; a command takes its own from env",
                    ));
                }
                if !(100..=3_600_000).contains(&m.ping_ms) {
                    return Err(ApiError::invalid("pingMs must be between 100 and 3600000"));
                }
                match &m.api_key {
                    Some(SecretRef::Env(n) | SecretRef::File(n)) if n.trim().is_empty() => {
                        Err(ApiError::invalid("apiKeyEnv / apiKeyFile must not be empty"))
                    }
                    _ => positive(m.timeout_ms, "timeoutMs"),
                }
            }
            BackendSpec::Llm(l) => {
                url(&l.base_url, "baseUrl")?;
                if l.model.trim().is_empty() {
                    return Err(ApiError::invalid("model must not be empty"));
                }
                if l.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
                    return Err(ApiError::invalid("temperature must be between 0 and 2"));
                }
                if l.max_tokens == Some(0) {
                    return Err(ApiError::invalid("maxTokens must be positive"));
                }
                if l.max_retries > 20 {
                    return Err(ApiError::invalid("maxRetries must be at most 20"));
                }
                if !(1..=1000).contains(&l.max_steps) {
                    return Err(ApiError::invalid("maxSteps must be between 1 and 1000"));
                }
                if l.tools.iter().any(|t| t.trim().is_empty() || t.len() > 200) {
                    return Err(ApiError::invalid("each tool pattern must be 1 to 200 characters"));
                }
                if l.approval.tools.iter().any(|t| t.trim().is_empty() || t.len() > 200) {
                    return Err(ApiError::invalid(
                        "each approval tool pattern must be 1 to 200 characters",
                    ));
                }
                if l.approval.above_cost_usd.is_some_and(|c| !(c.is_finite() && c >= 0.0)) {
                    return Err(ApiError::invalid("approval.aboveCostUsd must be a number, 0 or more"));
                }
                if l.approval.timeout_ms == Some(0) {
                    return Err(ApiError::invalid("approval.timeoutMs must be positive"));
                }
                let b = l.budget;
                if b.max_tokens == Some(0) || b.max_tokens_per_day == Some(0) {
                    return Err(ApiError::invalid("budget token limits must be positive"));
                }
                if [b.max_cost_usd, b.max_cost_usd_per_day]
                    .into_iter()
                    .flatten()
                    .any(|c| !(c.is_finite() && c > 0.0))
                {
                    return Err(ApiError::invalid("budget cost limits must be positive numbers"));
                }
                if l.dialect == Dialect::Anthropic && l.max_tokens.is_none() {
                    return Err(ApiError::invalid(
                        "the Anthropic dialect needs maxTokens (its API requires max_tokens)",
                    ));
                }
                match &l.api_key {
                    Some(SecretRef::Env(n) | SecretRef::File(n)) if n.trim().is_empty() => {
                        Err(ApiError::invalid("apiKeyEnv / apiKeyFile must not be empty"))
                    }
                    _ => positive(l.timeout_ms, "timeoutMs"),
                }
            }
        }
    }
}

fn command(command: &[String]) -> Result<(), ApiError> {
    if command.is_empty() || command[0].trim().is_empty() {
        return Err(ApiError::invalid("command must not be empty"));
    }
    if command.iter().any(|a| a.contains('\0')) {
        return Err(ApiError::invalid("command must not contain NUL"));
    }
    Ok(())
}

pub(super) fn env(env: &[(String, String)]) -> Result<(), ApiError> {
    if env
        .iter()
        .any(|(k, v)| k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0'))
    {
        return Err(ApiError::invalid(
            "env var names must be non-empty and contain no '=' or NUL, values no NUL",
        ));
    }
    Ok(())
}

fn headers(headers: &[(String, String)]) -> Result<(), ApiError> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    for (name, value) in headers {
        if name.is_empty() || !name.chars().all(token) {
            return Err(ApiError::invalid(format!(
                "header name {name:?} is not a valid HTTP token"
            )));
        }
        if value.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
            return Err(ApiError::invalid(format!("header {name} has a line break or NUL")));
        }
    }
    Ok(())
}

fn url(url: &str, field: &str) -> Result<(), ApiError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| ApiError::invalid(format!("{field} must start with http:// or https://")))?;
    if rest.is_empty() || rest.starts_with('/') || url.chars().any(char::is_whitespace) {
        return Err(ApiError::invalid(format!("{field} {url:?} has no host")));
    }
    Ok(())
}

fn positive(ms: Option<u64>, field: &str) -> Result<(), ApiError> {
    if ms == Some(0) {
        return Err(ApiError::invalid(format!("{field} must be positive")));
    }
    Ok(())
}

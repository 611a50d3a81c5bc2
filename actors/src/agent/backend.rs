//! Backends: the object inside an agent actor that does the work. It lives as long as its
//! agent does: started once, asked to run each task (several may run at once), stopped
//! once. A long-lived process with its own reader fits the same shape as a command per task.

mod builtin;
mod cgroup;
mod exec;
mod http;
mod limits;
mod llm;
mod mcp;
mod process;

use std::sync::Arc;

use futures::future::BoxFuture;
use ractor::ActorRef;
use serde_json::Value;

use super::actor::AgentMsg;
use super::protocol;
use super::secrets::Secrets;
use super::spec::{AgentSpec, BackendSpec};
use crate::task::{Assignment, Outcome};

pub use cgroup::describe as describe_cgroup;
pub use limits::{own_usage, read_stat, sample, signal_group, Stat, Usage};
pub use llm::retention::prune as prune_llm_records;
pub use llm::{
    approvals, committed as llm_steps_committed, decide as decide_approval, get as approval,
    matching_nothing as tools_matching_nothing, spent_by, transcript, withdrawn_by_end as llm_approvals_withdrawn,
    Approval, Call as LlmCall, Decision, Delta as LlmDelta, Deltas as LlmDeltas, Record as LlmStep,
    Refused as ApprovalRefused, Usage as LlmUsage,
};

/// An HTTP client on the node's one TLS provider (see [`troupe_runtime::tls`]).
pub fn http_client() -> reqwest::Client {
    troupe_runtime::tls::install_provider();
    reqwest::Client::new()
}

/// What a backend tells its agent on its own, outside any task.
#[derive(Debug)]
pub enum Signal {
    /// No sign of life for a heartbeat interval (or more).
    Unhealthy(String),
    /// A sign of life after being unhealthy.
    Healthy,
    /// The backend cannot go on (its process exited or hung): the agent fails and its
    /// supervisor restarts it.
    Lost(String),
    /// The agent asks the node for something (a process agent's `send`, `publish`, `memory`
    /// or `team_task` line).
    Errand(Errand),
    /// The backend's capabilities changed (an MCP server's tools were listed again).
    CapabilitiesChanged,
    /// How far a running attempt got (a process agent's `progress` line), and whether it
    /// now waits for an operator's decision on a tool call (an LLM agent's approval gate).
    Progress {
        task_id: String,
        attempt: u32,
        fraction: Option<f64>,
        note: Option<String>,
        held: bool,
    },
}

/// What an agent asks the node to do for it, and where the answer goes.
#[derive(Debug)]
pub struct Errand {
    pub what: ErrandKind,
    /// The reply (send), how many agents it was queued for (publish), the memory's answer,
    /// the team's result, or why not.
    pub answer: tokio::sync::oneshot::Sender<Result<Value, String>>,
}

/// The errands of the agent protocol, in its own wire shapes.
#[derive(Debug, Clone)]
pub enum ErrandKind {
    Send(protocol::Send),
    Publish(protocol::Publish),
    Memory(protocol::MemoryOp),
    TeamTask(protocol::TeamTask),
    /// An LLM agent's `troupe_submit_task` call: a task to a capability, submitted with
    /// `key` as its idempotency key (so a resumed loop's second call runs nothing), and
    /// waited on for at most `timeout_ms`; the answer is the task's result.
    Submit {
        capability: String,
        payload: Value,
        key: String,
        timeout_ms: u64,
    },
}

/// Where an agent's errands go: called with the agent's id and the errand, it answers the
/// errand (at once, when it cannot be carried).
pub type Outbox = Arc<dyn Fn(String, Errand) + Send + Sync>;

/// How a backend reaches its agent actor.
#[derive(Clone)]
pub struct Link(pub(crate) Option<ActorRef<AgentMsg>>);

impl Link {
    pub fn signal(&self, signal: Signal) {
        if let Some(agent) = &self.0 {
            let _ = agent.cast(AgentMsg::Signal(signal));
        }
    }

    /// A link to nowhere, for backends under test.
    pub fn detached() -> Self {
        Self(None)
    }
}

pub trait Backend: Send + 'static {
    /// Gets ready to run tasks; an error fails the agent's start.
    fn start(&mut self, _link: Link) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    /// Runs one attempt. The future is independent of `self`, so attempts run concurrently;
    /// dropping it stops the attempt.
    fn run(&mut self, assignment: Assignment) -> BoxFuture<'static, Outcome>;
    /// Capabilities the backend serves beyond the spec's, known once it started (an MCP
    /// server's tools).
    fn capabilities(&self) -> Vec<String> {
        Vec::new()
    }
    /// The time an attempt may take when its task sets none.
    fn default_timeout_ms(&self) -> Option<u64> {
        None
    }
    /// Whether the backend enforces the attempt's timeout itself (then the agent does not).
    fn own_timeouts(&self) -> bool {
        false
    }
    /// Answers a message sent to the agent (`sendMessage`) within `timeout` (what is left of
    /// the message's own); the future is independent of `self`, so the agent goes on while it
    /// waits.
    fn message(
        &mut self,
        _from: Option<String>,
        _payload: Value,
        _timeout: std::time::Duration,
    ) -> BoxFuture<'static, Result<Value, String>> {
        Box::pin(async { Err("this agent's backend takes no messages (builtin and process agents do)".to_string()) })
    }
    /// The backend's state, for a checkpoint.
    fn checkpoint(&mut self) -> BoxFuture<'_, Result<Value, String>> {
        Box::pin(async { Err("this backend keeps no state to checkpoint".to_string()) })
    }
    /// Puts back a state an earlier checkpoint took.
    fn restore(&mut self, _state: Value) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Err("this backend keeps no state to restore".to_string()) })
    }
    /// Notes that the agent's processes were suspended (SIGSTOP) or resumed, so silence
    /// while paused is not taken for a hang.
    fn pause(&mut self, _paused: bool) {}
    /// How long ago the backend last showed a sign of life, when it watches for one.
    fn silent_for(&self) -> Option<std::time::Duration> {
        None
    }
    /// The process groups running for this agent now (paused, sampled, killed together).
    fn process_groups(&self) -> Vec<u32> {
        Vec::new()
    }
    /// Releases what `start` acquired; `grace` is how long a process may take to finish.
    fn stop(&mut self, _grace: std::time::Duration) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Whether the backend can start on this node at all: the program of a process agent, of
/// an exec agent (each task runs it) and of a stdio MCP server must be there and
/// executable. Its error is the caller's to fix; checked before a start is asked for, so a
/// wrong spec is refused instead of failing over and over (or each of its tasks failing).
pub async fn preflight(spec: &BackendSpec) -> Result<(), String> {
    let (command, env) = match spec {
        BackendSpec::Process(p) => (&p.command, &p.env),
        BackendSpec::Exec(e) => (&e.command, &e.env),
        BackendSpec::Mcp(m) if m.url.is_none() => (&m.command, &m.env),
        _ => return Ok(()),
    };
    let (Some(program), env) = (command.first().cloned(), env.clone()) else {
        return Err("command must not be empty".into());
    };
    tokio::task::spawn_blocking(move || limits::find_program(&program, &env).map(drop))
        .await
        .map_err(|e| format!("the check of the program did not finish: {e}"))?
}

/// What the node lends its agents' backends.
#[derive(Clone, Default)]
pub struct Lent {
    /// What a backend may use as its API key.
    pub secrets: Arc<Secrets>,
    /// Where an LLM agent commits its tasks' steps (kept in memory only without one, for
    /// tests).
    pub store: Option<troupe_runtime::store::Store>,
    /// What a model's tokens cost, by model.
    pub prices: Arc<Prices>,
    /// Where an exec or process agent's lines are kept.
    pub logs: crate::agent::LogBook,
    /// Where an LLM agent's replies stream, piece by piece, while they come.
    pub deltas: llm::Deltas,
    /// The node's HTTP client: its agents share its connection pool (a thousand agents of
    /// one endpoint keep a pool of connections to it, not one each); a backend's own without
    /// one.
    pub http: Option<reqwest::Client>,
}

/// US dollars per million input and output tokens, by model (`llm_prices`).
pub type Prices = std::collections::BTreeMap<String, troupe_runtime::config::Price>;

/// The backend object an agent spec asks for.
pub fn build(spec: &AgentSpec, lent: &Lent) -> Box<dyn Backend> {
    match &spec.backend {
        BackendSpec::Builtin(kind) => Box::new(builtin::Builtin::new(*kind, spec.id.clone())),
        BackendSpec::Exec(e) => {
            Box::new(exec::Exec::new(e.clone(), spec.id.clone(), spec.limits).logging(lent.logs.clone()))
        }
        BackendSpec::Process(p) => {
            Box::new(process::Process::new(p.clone(), spec.id.clone(), spec.limits).logging(lent.logs.clone()))
        }
        BackendSpec::Http(h) => Box::new(http::Http::new(h.clone(), spec.id.clone())),
        BackendSpec::Llm(l) => {
            let swarm = match &spec.owner {
                crate::agent::Owner::Swarm(swarm) => Some(swarm.as_str()),
                crate::agent::Owner::Node => None,
            };
            let llm = llm::Llm::new(l.clone(), lent.secrets.clone()).for_agent(&spec.id, lent);
            Box::new(llm.grouped(swarm, &spec.project))
        }
        BackendSpec::Mcp(m) => Box::new(
            mcp::Mcp::new(m.clone(), &spec.name, lent.secrets.clone(), lent.store.clone())
                .logging(&spec.id, lent.logs.clone()),
        ),
    }
}

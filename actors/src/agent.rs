//! Agents: a spec (what the user asked for), a status (what was observed), a supervised actor
//! that runs attempts, and the backend object inside it that does the work.
//!
//! ```text
//! agents supervisor (one_for_one; each agent has its own restart intensity)
//!   ├── agent a1 ── backend (builtin | exec | process | http | llm) ── attempt tasks
//!   └── agent a2
//! ```
//!
//! The room holds the agents' registry (`registry`: spawn, find, list), what can be done to
//! one (`lifecycle`, `checkpoints`), the recovery ladder's decisions (`ladder`), the process
//! agents' JSON-lines protocol (`protocol`), and the handle each agent has on its node
//! (`child`). It reports to the scheduler through [`crate::scheduler::report`] and hands its errands to
//! the node through an [`Outbox`].

mod actor;
mod backend;
pub mod checkpoints;
mod child;
mod gauge;
mod ladder;
mod lifecycle;
pub mod logs;
mod names;
mod observed;
mod outbox;
pub(crate) mod owners;
mod per_agent;
pub mod protocol;
mod registry;
mod secrets;
mod slots;
mod spec;
mod status;
pub(crate) mod watchdog;

pub use actor::{AgentActor, AgentMsg, Probe, Reporter};
pub use backend::{
    approval as llm_approval, approvals as llm_approvals, build as build_backend, decide_approval, describe_cgroup,
    http_client, llm_approvals_withdrawn, llm_steps_committed, own_usage, preflight, prune_llm_records, read_stat,
    signal_group, spent_by as llm_spent_by, tools_matching_nothing, transcript as llm_transcript, Approval,
    ApprovalRefused, Backend, Decision, Errand, ErrandKind, Lent, Link, LlmCall, LlmDelta, LlmDeltas, LlmStep,
    LlmUsage, Outbox, Prices, Signal, Stat, Usage,
};
pub use checkpoints::Checkpoint;
pub use child::{AgentChild, AgentPolicy, AgentsChild, Handles, Restore};
pub(crate) use gauge::AgentGauge;
pub use lifecycle::Action;
pub use logs::{LogBook, LogLine};
pub use names::AgentNames;
pub use observed::{AgentLive, Observed, Report as ObservedAgents, Sampler};
/// The courier's terms for an agent's errands (kept under this name for its callers).
pub use outbox::{carrier, Outgoing, OutgoingKind};
pub use per_agent::PerAgent;
pub use registry::{matching, Adopter, Registry};
pub use secrets::{SecretRefused, Secrets};
pub use slots::Slots;
pub use spec::{
    AgentBudget, AgentFilter, AgentPlacement, AgentSpec, AgentUpdate, ApprovalPolicy, BackendSpec, BuiltinKind,
    Desired, Dialect, ExecBackend, HttpBackend, Limits, LlmBackend, McpBackend, Owner, ProcessBackend, RestartLimit,
    SecretRef, Skills, SpawnAgentRequest,
};
pub use status::{AgentState, AgentStats, AgentStatus, AgentView, BreakerState, BreakerView, Recent};

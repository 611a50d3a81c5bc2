//! Agents: a spec (what the user asked for), a status (what was observed), a supervised actor
//! that runs attempts, and the backend object inside it that does the work.
//!
//! ```text
//! agents supervisor (one_for_one; each agent has its own restart intensity)
//!   ├── agent a1 ── backend (builtin | exec | process | http | llm) ── attempt tasks
//!   └── agent a2
//! ```

mod actor;
mod backend;
pub mod checkpoints;
mod child;
mod secrets;
mod spec;
mod status;

pub use actor::{AgentActor, AgentMsg, Probe, Reporter};
pub use backend::{
    build as build_backend, describe_cgroup, preflight, read_stat, Backend, Link, Outgoing, OutgoingKind, Signal, Stat,
    Usage,
};
pub use checkpoints::Checkpoint;
pub use child::{AgentChild, AgentPolicy, AgentsChild, Handles, Restore};
pub use secrets::{SecretRefused, Secrets};
pub use spec::{
    AgentFilter, AgentSpec, AgentUpdate, BackendSpec, BuiltinKind, Desired, ExecBackend, HttpBackend, Limits,
    LlmBackend, Owner, ProcessBackend, RestartLimit, SecretRef, Skills, SpawnAgentRequest,
};
pub(crate) use status::gauge_moved;
pub use status::{AgentState, AgentStats, AgentStatus, AgentView, BreakerState, BreakerView, Recent};

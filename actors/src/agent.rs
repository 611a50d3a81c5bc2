//! Agents: a spec (what the user asked for), a status (what was observed), a supervised actor
//! that runs attempts, and the backend object inside it that does the work.
//!
//! ```text
//! agents supervisor (one_for_one; each agent has its own restart intensity)
//!   ├── agent a1 ── backend (builtin | exec) ── attempt tasks
//!   └── agent a2
//! ```

mod actor;
mod backend;
mod child;
mod spec;
mod status;

pub use actor::{AgentActor, AgentMsg};
pub use backend::{build as build_backend, Backend};
pub use child::{AgentChild, AgentPolicy, AgentsChild};
pub use spec::{AgentSpec, BackendSpec, BuiltinKind, Desired, ExecBackend, Owner, SpawnAgentRequest};
pub(crate) use status::gauge_moved;
pub use status::{AgentState, AgentStats, AgentStatus, AgentView};

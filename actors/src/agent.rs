//! Agents: a spec, a supervised actor that runs attempts, and backends that do the work.
//!
//! ```text
//! agents supervisor (one_for_one)
//!   ├── agent a1 ── attempt tasks (builtin | exec process group)
//!   └── agent a2
//! ```

mod actor;
mod builtin;
mod child;
mod exec;
mod spec;

pub use actor::{AgentActor, AgentMsg};
pub use child::{AgentChild, AgentsChild};
pub use spec::{AgentRecord, AgentSpec, AgentState, AgentView, Backend, BuiltinKind, ExecBackend, SpawnAgentRequest};

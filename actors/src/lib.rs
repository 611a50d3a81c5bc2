//! troupe-actors: Troupe's domain actors — agents and their backends, the scheduler, the
//! cluster router — and [`Api`], the typed handle the gateway uses to reach them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use troupe_actors::{agent::{Backend, BuiltinKind, SpawnAgentRequest}, node::Node};
//! use troupe_runtime::config::Config;
//!
//! let node = Node::start(&Config::embedded(std::path::Path::new("/tmp/troupe")), Box::new(|_| vec![])).await?;
//! let agent = node.api().spawn_agent(SpawnAgentRequest {
//!     name: "echo".into(),
//!     backend: Backend::Builtin(BuiltinKind::Echo),
//!     capabilities: vec!["echo".into()],
//!     max_concurrent_tasks: Some(4),
//!     node: None,
//! }).await?;
//! println!("agent {} is {:?}", agent.record.spec.id, agent.record.state);
//! # Ok(()) }
//! ```

pub mod agent;
pub mod api;
pub mod cluster;
pub mod error;
pub mod node;
pub mod scheduler;
pub mod services;
pub mod task;

pub use api::Api;
pub use error::ApiError;

//! troupe-actors: Troupe's domain actors — agents and their backends, the scheduler, the
//! cluster services — and [`Api`], the facade the gateway uses to reach them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use troupe_actors::{agent::{BackendSpec, BuiltinKind, SpawnAgentRequest}, node::Node};
//! use troupe_runtime::config::Config;
//!
//! let node = Node::start(&Config::embedded(std::path::Path::new("/tmp/troupe")), Box::new(|_| vec![])).await?;
//! let agent = node.api().agents().spawn(SpawnAgentRequest {
//!     capabilities: vec!["echo".into()],
//!     max_concurrent_tasks: Some(4),
//!     ..SpawnAgentRequest::new("echo", BackendSpec::Builtin(BuiltinKind::Echo))
//! }, None).await?;
//! println!("agent {} is {:?}", agent.spec.id, agent.status.state);
//! # Ok(()) }
//! ```

pub mod agent;
pub mod alerts;
pub(crate) mod call;
pub mod cluster;
pub mod error;
pub mod failover;
pub mod host;
pub mod ids;
pub mod inflight;
pub(crate) mod liveness;
pub mod messaging;
pub mod names;
pub mod node;
pub mod placement;
pub mod scheduler;
pub mod service;
pub mod serving;
pub mod slots;
pub mod swarm;
pub mod tables;
pub mod task;
pub mod vm;

pub use error::ApiError;
pub use service::Api;

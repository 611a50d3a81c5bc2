//! Cluster membership and remote calls over ractor_cluster.
//!
//! ```text
//! cluster (local actor) ── NodeServer (ractor_cluster: listener, sessions, cookie auth)
//!                       ├─ node service   (pg "troupe.node.<name>": hello, heartbeat)
//!                       ├─ agents service (pg "troupe.agents.<name>")
//!                       └─ tasks service  (pg "troupe.tasks.<name>")
//! ```
//!
//! Only these per-domain services are remotable: a peer addresses "the tasks service on
//! node b" directly, with that domain's own message types. Nodes are known by their stable
//! names, not by ractor's node ids (those change on every reconnect).

mod actor;
mod directory;
mod membership;
pub mod remote;

pub use actor::ClusterChild;
pub use membership::{Cluster, Gathered, Member, MemberStatus, PeerInfo};

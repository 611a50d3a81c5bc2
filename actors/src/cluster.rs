//! Cluster membership over ractor_cluster.
//!
//! ```text
//! cluster (local actor) ── NodeServer (ractor_cluster: listener, sessions, cookie auth)
//!                       └─ Router (remotable; pg groups "troupe.routers" and "troupe.router.<name>")
//! ```
//!
//! Only the router is remotable: peers reach a node's agents and tasks by asking its router,
//! with Troupe's own payloads as rmp-serde bytes decoded in the handler. Nodes are known by
//! their stable names, not by ractor's node ids (those change on every reconnect).

mod actor;
mod peers;
mod router;

pub use actor::ClusterChild;
pub use peers::{Cluster, Member, MemberStatus, PeerInfo};
pub use router::{PeerRequest, PeerResponse, Router, RouterMsg};

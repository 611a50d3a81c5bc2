//! Cluster membership, where entities live, and remote calls over ractor_cluster.
//!
//! ```text
//! cluster (local actor) ── NodeServer (ractor_cluster: listener, sessions, cookie auth)
//!                       ├─ node service     (pg "troupe.node.<name>": hello, heartbeat)
//!                       ├─ agents service   (pg "troupe.agents.<name>")
//!                       ├─ tasks service    (pg "troupe.tasks.<name>")
//!                       ├─ messages service (pg "troupe.messages.<name>")
//!                       ├─ hosts service    (pg "troupe.hosts.<name>")
//!                       ├─ vms service      (pg "troupe.vms.<name>")
//!                       └─ swarms service   (pg "troupe.swarms.<name>")
//!
//! actor.rs       the link: the NodeServer, the joins, and what the node serves its peers
//!                beside it, handed over by the node's wiring (`Served`: the node and Raft
//!                services, the heartbeat); it knows no service
//! name_check.rs  a joining node's first question, before it dials under its name: is the
//!                name a live member's? (answered on the cluster port)
//! membership.rs  who is there: who answered the heartbeats (sent by `crate::failover`),
//!                UP/DOWN, peers dropped after a long silence, asking every reachable peer
//!                at once (gather)
//! directory.rs   which node holds an id: Cluster::holder, the one place that answers it
//!                (the replicated directory of moved entities, else the id's own node)
//! lease.rs       this node's lease (granted by the leader with each beat's answer) and the
//!                members' committed states (UP, SUSPECT, DOWN, LEFT) and fencing epochs;
//!                what the leader decides from them, and the moves, are `crate::failover`'s
//! replicated.rs  the cluster as the replicated log sees it: leader, term, members' roles,
//!                lag and incarnations; LEADER_CHANGED
//! remote.rs      service!: each domain's requests declared once; At (this node or the
//!                holder), Peer, Everywhere; the service actor that answers peers
//! ```
//!
//! Only these per-domain services are remotable: a peer addresses "the tasks service on
//! node b" directly, with that domain's own message types. Nodes are known by their stable
//! names, not by ractor's node ids (those change on every reconnect).

mod actor;
pub mod directory;
mod endpoints;
pub mod lease;
mod membership;
pub mod name_check;
pub mod remote;
pub mod replicated;

pub(crate) use actor::{child_lost, handle as serve_ping_and_hold};
pub use actor::{ClusterChild, ClusterMsg, Link, Served};
pub use endpoints::Endpoints;
pub(crate) use membership::{Answer, Progress};
pub use membership::{Cluster, Gathered, Member, MemberStatus, PeerInfo};

/// The cluster's listening address with its port chosen: port 0 asks the system for a free
/// one, and the node advertises the port it got (not `:0`, which nobody can dial). An
/// address that cannot be bound is left for the link to refuse, with its reason.
pub fn chosen_port(listen: std::net::SocketAddr) -> std::net::SocketAddr {
    if listen.port() != 0 {
        return listen;
    }
    std::net::TcpListener::bind(listen)
        .and_then(|l| l.local_addr())
        .unwrap_or(listen)
}

/// `host:port`, with an IPv6 address in brackets.
pub fn host_port(host: &str, port: u16) -> String {
    match host.parse::<std::net::Ipv6Addr>() {
        Ok(_) => format!("[{host}]:{port}"),
        Err(_) => format!("{host}:{port}"),
    }
}

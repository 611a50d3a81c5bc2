//! The heartbeat: every [`BEAT`] this node asks each connected peer's node service who it
//! is. Each answer renews what membership knows of the peer (its address, its agents'
//! room), the lease the leader grants with it, and what the peer observed of its own work
//! (its hosts, its agents' samples), which goes to the [`BeatSink`]. A peer silent past the
//! cluster's drop time is dropped from cluster-wide lists (`MEMBER_DROPPED`).

use std::sync::Arc;

use tokio::time::Instant;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{Batch, Store};

use super::BeatAck;
use crate::cluster::lease::BEAT;
use crate::cluster::remote;
use crate::cluster::{Answer, Cluster, Progress};
use crate::service::node::{NodeRequest, NodeResponse, NodeService};

/// Whoever keeps what a beat's answer observed beyond membership (the hosts a peer's
/// drivers see, its agents' samples): told each answer, with the peer's name, as it comes.
pub type BeatSink = Arc<dyn Fn(&str, &BeatAck) + Send + Sync>;

/// Beats every connected peer once per [`BEAT`], for as long as it runs.
pub(crate) async fn heartbeat(cluster: Cluster, store: Store, sink: BeatSink) {
    let mut tick = tokio::time::interval(BEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let peers = cluster.peers();
        let beat = remote::Call {
            key: None,
            request: NodeRequest::Beat { from: cluster.name() },
        };
        let sent = Instant::now();
        // What this node had applied when it asked: a peer's answer says how far behind it.
        let applied = store.status().commit_index;
        // A beat is answered within one period or not at all: a late lease is no lease.
        let calls = peers
            .iter()
            .map(|p| remote::call_as::<NodeService>(p, &beat, store.raft_id(), BEAT));
        let answers = futures::future::join_all(calls).await;
        let now = Instant::now();
        let mut heard = Vec::with_capacity(answers.len());
        for (peer, answer) in peers.iter().zip(answers) {
            let ack = match answer {
                // A member of a cluster this one was recovered from answered: it is no member
                // of this one, and is not shown as one (it is told so by its own beats).
                Ok(NodeResponse::Beat(ack)) if ack.raft_id != 0 && store.recovered_without(ack.raft_id) => continue,
                Ok(NodeResponse::Beat(ack)) => ack,
                Err(crate::error::ApiError::Conflict(why)) if why.starts_with(crate::cluster::lease::LEFT_BEAT) => {
                    // A member that left while it ran applies the entry that says so a moment
                    // after the leader: it knows, and runs on until it is stopped (its gateway
                    // refusing every request). One forgotten while it was stopped never will.
                    let me = cluster.name();
                    let knows = store.view_now(|v| crate::cluster::lease::member_in(v, &me));
                    let knows = knows
                        .ok()
                        .flatten()
                        .is_some_and(|r| r.state == crate::cluster::lease::MemberState::Left);
                    if !knows {
                        tracing::warn!(%peer, %why, "a member says this node left the cluster");
                        cluster.told_left(sent, why);
                    }
                    continue;
                }
                Err(crate::error::ApiError::Conflict(why))
                    if why.starts_with(crate::cluster::lease::FORGOTTEN_BEAT) =>
                {
                    tracing::warn!(%peer, %why, "this node's cluster was recovered without it");
                    cluster.told_left(sent, why);
                    continue;
                }
                _ => continue,
            };
            cluster.leases.answered(peer, sent, ack.lease, ack.applied);
            sink(&ack.info.name, &ack);
            heard.push(Answer {
                name: ack.info.name,
                address: ack.info.cluster_address,
                rooms: ack.rooms,
                progress: Progress {
                    applied_behind: applied.saturating_sub(ack.applied),
                    running: ack.running,
                },
                boot: ack.boot,
            });
        }
        for (name, silent) in cluster.heard(heard, now) {
            tracing::warn!(peer = %name, silent_ms = silent.as_millis() as u64, "dropping a silent peer from cluster-wide lists");
            let event = NewEvent::new(
                "MEMBER_DROPPED",
                Some(name.clone()),
                // Each member keeps its own lists, so each writes one: named by who dropped it.
                serde_json::json!({ "node": name, "silentMs": silent.as_millis() as u64, "by": cluster.name() }),
            );
            if let Err(e) = store.write(Batch::new().event(event)).await {
                tracing::error!(peer = %name, error = %e, "could not record a dropped peer");
            }
        }
    }
}

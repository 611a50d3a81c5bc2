//! Failover, the room above the domains: who is UP, SUSPECT, DOWN or LEFT (decided by the
//! leader and committed, so every member agrees), running this node's work only while it
//! holds its lease (the lease itself is `cluster::lease`'s), and moving a lost node's
//! agents and open tasks to the survivors. The judgement (`tick`) and the plan of the moves
//! (`plan`) are pure code; `judge`, `moves` and the lease keeper here act on them.
//!
//! Leases. Every node beats every peer each [`BEAT`]. The leader answers with a lease only
//! while a quorum confirmed its leadership within the last [`CONFIRMED_WITHIN`] (a deposed
//! leader on a minority side grants none), and records the grant. A node holds its lease
//! for [`LEASE`] from the moment it *sent* the beat a lease answered, and stops its work
//! (the `core` and `hosts` subtrees: scheduler, agents and their processes, swarms, host
//! drivers) [`STOP_MARGIN`] before the lease lapses. The leader declares a member SUSPECT
//! after [`SUSPECT_AFTER`] without granting it a lease, and DOWN only after [`DOWN_AFTER`]
//! (the lease and the margin: the member has surely stopped by then). A new leader counts
//! every member as granted at the moment it took over. A node on a minority side cannot
//! renew: it stops its work and takes no writes (UNAVAILABLE) until it is back.
//!
//! Fencing. A member's writes carry the condition `fence@<node>` = the epoch it was given
//! (see [`troupe_runtime::store::Store::fence`]). Declaring a member DOWN bumps its epoch in
//! the same entry that moves its entities: whatever it still sends (it was frozen, a late
//! message) is refused by the state machine. It runs again only once the leader has seen it
//! back (MEMBER_UP), it has applied everything the leader had then, and it has taken its new
//! epoch; it then starts what the directory says it holds now (`NODE_FENCED` records the
//! interval).
//!
//! Moves. The DOWN entry also moves every agent the lost node ran for itself (not a swarm's
//! members) to the UP survivor that holds the fewest, one `AGENT_MOVED` each, and its open
//! tasks to the node their agent went to (else to the survivor that took the most agents),
//! one `TASKS_MOVED` per receiving node. Each node follows those moves as its directory
//! applies them (from the log or a snapshot, see `moves::follow_moves`): it starts the
//! agents moved to it from their specs and last checkpoints, and its scheduler takes the
//! tasks, queuing again without charging an attempt the ones that were running.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{Batch, Store, StoreError, View, META};
use troupe_runtime::supervision::{ChildSpec, SupervisorMsg};

use crate::agent::{AgentSpec, AgentStatus, Owner};
use crate::cluster::directory::{held_in, placement_in};
use crate::cluster::lease::*;
use crate::cluster::Cluster;
use crate::host::HostSpec;
use crate::swarm::SwarmSpec;
use crate::tables::{AGENTS, AGENT_STATUS, DIRECTORY, HOSTS, OPEN_TASKS, SWARMS, TASKS, TASK_STATUS, VM_STATUS};
use crate::task::{TaskSpec, TaskStatus};
use crate::vm::VmStatus;

/// What a peer answers a beat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BeatAck {
    pub info: crate::cluster::PeerInfo,
    /// A lease was granted: the peer leads, confirmed by a quorum just now.
    pub lease: bool,
    /// The last log entry the peer has applied.
    pub applied: u64,
    /// What room the peer's agents have for each capability they serve (see
    /// `scheduler::Rooms`); empty from a build that did not send it.
    #[serde(default)]
    pub rooms: std::collections::BTreeMap<String, crate::task::Room>,
    /// The hosts the peer drives, as its drivers see them now (empty from a build that did
    /// not send them).
    #[serde(default)]
    pub hosts: Vec<crate::host::HostView>,
    /// The agents the peer runs, as it last sampled them (empty from a build that did not
    /// send them).
    #[serde(default)]
    pub agents: crate::agent::ObservedAgents,
    /// The last usage sample of each VM on the peer's hosts (empty from a build that did
    /// not send them).
    #[serde(default)]
    pub vms: std::collections::BTreeMap<String, crate::vm::VmStats>,
    /// The peer's work runs: it holds a lease and has started it (true from a build that
    /// did not say).
    #[serde(default = "said_nothing_of_its_work")]
    pub running: bool,
    /// The peer's process among its starts (0 from a build that did not say): another
    /// than before says it restarted.
    #[serde(default)]
    pub boot: u64,
    /// The peer's Raft id (0 from a build that did not say).
    #[serde(default)]
    pub raft_id: u64,
}

/// A beat's answer from a build that did not say whether its work runs: judged as before,
/// as if it did.
fn said_nothing_of_its_work() -> bool {
    true
}

/// What re-homing takes of each domain: the room's own narrow handle, never the services'
/// facade. The node's wiring makes it.
#[derive(Clone)]
pub struct Rehome {
    /// Starts here the agents moved to this node.
    pub agents: crate::agent::Adopter,
    /// Takes over the swarms moved here.
    pub swarms: crate::swarm::Port,
    /// Drives the hosts moved here, each driver with this restart intensity.
    pub fleet: Arc<crate::host::Fleet>,
    pub host_intensity: troupe_runtime::supervision::Intensity,
    /// Takes the open tasks moved here (read from the tables when it starts, when it is not
    /// running).
    pub scheduler: crate::slots::Slot<crate::scheduler::SchedulerMsg>,
    /// Delivers what was left in the mailboxes each time the work starts, and what waited
    /// for an agent moved here.
    pub mailboxes: crate::messaging::Mailboxes,
}

/// The work a node runs only while it holds its lease: the `core` and `hosts` subtrees of
/// its root supervisor.
#[derive(Clone)]
pub struct Work {
    pub root: ActorRef<SupervisorMsg>,
    pub children: Vec<Arc<dyn ChildSpec>>,
}

/// Whether a log of these members has anyone to fence for: a cluster of one (or a node not
/// admitted yet) runs its work always.
fn alone(store: &Store) -> bool {
    store.status().members.len() <= 1
}

/// Whether the node's work runs at start: in a cluster of one it does; a member of a
/// larger cluster waits for its lease (it may have been declared down meanwhile).
pub fn runs_at_start(store: &Store) -> bool {
    alone(store)
}

/// Holds this node's lease: stops its work before the lease lapses, starts it again once
/// the node holds a lease, is UP, and has applied what its grantor had. Runs for the node's
/// lifetime. `running` says whether the work runs at start.
pub(crate) async fn keep_lease(
    store: Store,
    cluster: Cluster,
    work: Work,
    mailboxes: crate::messaging::Mailboxes,
    mut running: bool,
) {
    let me = cluster.name();
    let mut tick = tokio::time::interval(BEAT / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_alone = alone(&store);
    let mut fenced_at: Option<chrono::DateTime<chrono::Utc>> = None;
    // A member of a larger cluster starts unfenced and takes its epoch with its lease: its
    // replica may be behind an epoch the cluster gave it while it was away (declared DOWN),
    // and what it writes before its work starts (its services' starts) decides nothing
    // about work that may have moved. Fenced with the epoch its stale replica held, those
    // records were refused once it caught up.
    if running {
        if let Err(e) = fence_writes(&store, &me).await {
            tracing::error!(error = %e, "could not read this node's fencing epoch");
        }
    }
    loop {
        cluster.leases.set_running(running);
        tick.tick().await;
        if store.failure().is_some() {
            return;
        }
        if has_left(&store, &me).await {
            // Its writes would wait for a leader that never takes them: refused at once.
            store.left_the_cluster();
        }
        if cluster.leases.released() {
            if running {
                tracing::info!(node = %me, "leaving the cluster: stopping this node's agents, swarms and host drivers");
                stop_work(&work).await;
                // The records of those stops land before the leave is let go on: the entry
                // that marks this node LEFT comes after them, and would refuse them as stale.
                if let Err(e) = store.flush().await {
                    tracing::warn!(node = %me, error = %e, "the records of this node's stopped work were not taken");
                }
                running = false;
            }
            continue;
        }
        if troupe_runtime::store::gate_is_set("hold-work") {
            // A test's gate (a build with the `fault-injection` feature): the work stops,
            // and starts again only once the gate is cleared, while the node goes on beating.
            if running {
                stop_work(&work).await;
                running = false;
            }
            continue;
        }
        let now_alone = alone(&store);
        if now_alone {
            was_alone = true;
            if !running {
                running = start_work(&work, &mailboxes).await;
            }
            continue;
        }
        if was_alone {
            // Just admitted to (or grown into) a cluster of several: the first beats go out.
            cluster.leases.grace();
            was_alone = false;
        }
        if running && !runs_here(&store, &me).await {
            tracing::warn!(node = %me, "the cluster has declared this node down or gone: stopping its work");
            fenced_at = Some(troupe_runtime::clock::now());
            stop_work(&work).await;
            running = false;
            continue;
        }
        if running && !cluster.leases.held() {
            tracing::warn!(node = %me, "this node cannot renew its lease: stopping its agents, swarms and host drivers");
            fenced_at = Some(troupe_runtime::clock::now());
            stop_work(&work).await;
            running = false;
            continue;
        }
        if !running && cluster.leases.held() && ready(&store, &me, cluster.leases.grantor_applied()).await {
            // The work starts from the tables as they are now: a snapshot installed before
            // this is in them. (One installed while the work runs changes nothing it holds
            // but what moved here, which the moves follower starts.)
            if let Err(e) = take_up(&store, &me).await {
                tracing::error!(error = %e, "could not read this node's fencing epoch or the directory");
                continue;
            }
            tracing::info!(node = %me, "this node holds its lease: starting its work");
            running = start_work(&work, &mailboxes).await;
            if let Some(at) = fenced_at.take() {
                let ms = (troupe_runtime::clock::now() - at).num_milliseconds().max(0);
                let event = NewEvent::new(
                    "NODE_FENCED",
                    Some(me.clone()),
                    json!({ "node": me, "fencedAt": at, "forMs": ms }),
                );
                if let Err(e) = store.write(Batch::new().event(event)).await {
                    tracing::warn!(error = %e, "could not record this node's fencing");
                }
            }
        }
    }
}

/// Whether this node may start its work: the leader has it UP (or SUSPECT) and this node
/// has applied what the leader had when it granted the lease (the moves that concern it).
async fn ready(store: &Store, me: &str, grantor_applied: u64) -> bool {
    store.status().commit_index >= grantor_applied && runs_here(store, me).await
}

/// Whether this node's committed state lets it run its work (UP or SUSPECT).
async fn runs_here(store: &Store, me: &str) -> bool {
    let me = me.to_owned();
    match store.view(move |v| member_in(v, &me)).await {
        Ok(record) => record.is_none_or(|r| matches!(r.state, MemberState::Up | MemberState::Suspect)),
        Err(_) => false,
    }
}

/// Whether this node's replica says it left the cluster (or was forgotten).
async fn has_left(store: &Store, me: &str) -> bool {
    let me = me.to_owned();
    matches!(
        store.view(move |v| member_in(v, &me)).await,
        Ok(Some(record)) if record.state == MemberState::Left
    )
}

/// Readies a node that is about to run its work again: its later writes carry its current
/// fencing epoch. (It routes by the directory it has applied: the directory in memory
/// follows each write as it is applied, see [`super::directory`].)
async fn take_up(store: &Store, me: &str) -> Result<(), StoreError> {
    fence_writes(store, me).await
}

/// Makes every later write of this node carry its current fencing epoch.
async fn fence_writes(store: &Store, me: &str) -> Result<(), StoreError> {
    let key = fence_key(me);
    let held = store.get(META, &key).await?;
    store.fence(Some((META, key, held)));
    Ok(())
}

async fn start_work(work: &Work, mailboxes: &crate::messaging::Mailboxes) -> bool {
    for child in &work.children {
        let started = crate::call::ask_within(
            &work.root,
            |r| SupervisorMsg::StartChild(child.clone(), r),
            "the node supervisor",
            child.start_timeout() + crate::call::CALL_TIMEOUT,
        )
        .await;
        let failed = match started {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(e) => e.to_string(),
        };
        tracing::error!(child = child.id(), error = %failed, "could not start the node's work");
        stop_work(work).await;
        return false;
    }
    match mailboxes.restore().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(messages = n, "delivering the messages left in mailboxes"),
        Err(e) => tracing::error!(error = %e, "could not read the mailboxes left on disk"),
    }
    true
}

async fn stop_work(work: &Work) {
    // Hosts first (their VMs), then the agents, in the reverse of their start.
    for child in work.children.iter().rev() {
        let id = child.id().to_owned();
        let stop = crate::call::ask_within(
            &work.root,
            |r| SupervisorMsg::TerminateChild(id.clone(), r),
            "the node supervisor",
            Duration::from_secs(60),
        )
        .await;
        if let Err(e) = stop {
            tracing::error!(child = %id, error = %e, "could not stop the node's work");
        }
    }
}

mod beat;
mod judge;
mod moves;
mod plan;
mod tick;

pub(crate) use beat::heartbeat;
pub use beat::BeatSink;
pub(crate) use judge::{forget, leave, watch_members};
pub(crate) use moves::follow_moves;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_beat_answered_by_a_build_that_did_not_say_whether_its_work_runs_reads_as_running() {
        // A build before `running`: judged as then, its work taken to run.
        #[derive(Serialize)]
        struct Before {
            info: crate::cluster::PeerInfo,
            lease: bool,
            applied: u64,
            rooms: std::collections::BTreeMap<String, crate::task::Room>,
            hosts: Vec<crate::host::HostView>,
            agents: crate::agent::ObservedAgents,
            vms: std::collections::BTreeMap<String, crate::vm::VmStats>,
        }
        let before = Before {
            info: crate::cluster::PeerInfo {
                name: "b".into(),
                cluster_address: "127.0.0.1:1".into(),
                gateway_address: None,
            },
            lease: true,
            applied: 7,
            rooms: Default::default(),
            hosts: Vec::new(),
            agents: Default::default(),
            vms: Default::default(),
        };
        let bytes = troupe_runtime::codec::encode(&before).unwrap();
        let ack: BeatAck = troupe_runtime::codec::decode(&bytes).unwrap();
        assert!(ack.running && ack.lease && ack.applied == 7 && ack.boot == 0);
    }
}

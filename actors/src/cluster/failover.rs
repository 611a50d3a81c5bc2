//! Failover: who is UP, SUSPECT, DOWN or LEFT (decided by the leader and committed, so every
//! member agrees), this node's lease (it runs its agents only while it holds one), and
//! moving a lost node's agents and open tasks to the survivors.
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
//! one `TASKS_MOVED` per receiving node. Each node follows those events: it starts the
//! agents moved to it from their specs and last checkpoints, and its scheduler takes the
//! tasks, queuing again without charging an attempt the ones that were running.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::ActorRef;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{Batch, Store, StoreError, View, META};
use troupe_runtime::supervision::{ChildSpec, SupervisorMsg};

use super::directory::{held_in, placement_in};
use super::Cluster;
use crate::agent::{AgentSpec, AgentStatus, Owner};
use crate::host::HostSpec;
use crate::swarm::SwarmSpec;
use crate::tables::{AGENTS, AGENT_STATUS, DIRECTORY, HOSTS, OPEN_TASKS, SWARMS, TASKS, TASK_STATUS, VM_STATUS};
use crate::task::{TaskSpec, TaskStatus};
use crate::vm::VmStatus;

/// How often a node beats each peer.
pub const BEAT: Duration = Duration::from_millis(250);
/// How long a granted lease lasts, from the moment its beat was sent. Longer than a leader
/// election (1.7–2 s after the old leader's last heartbeat), so losing the leader does not
/// make the survivors stop their work.
pub const LEASE: Duration = Duration::from_millis(3500);
/// How long before its lease lapses a node stops its work.
pub const STOP_MARGIN: Duration = Duration::from_millis(500);
/// Silence (no lease granted) after which the leader declares a member SUSPECT.
pub const SUSPECT_AFTER: Duration = Duration::from_millis(1500);
/// Silence after which the leader declares a member DOWN: its lease has lapsed and it has
/// stopped its work.
pub const DOWN_AFTER: Duration = Duration::from_millis(4000);
/// How fresh the leader's quorum confirmation must be for it to grant a lease.
const CONFIRMED_WITHIN: Duration = Duration::from_millis(500);

/// A member's state, as the leader decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    Up,
    Suspect,
    Down,
    Left,
}

impl MemberState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Up => "UP",
            Self::Suspect => "SUSPECT",
            Self::Down => "DOWN",
            Self::Left => "LEFT",
        }
    }
}

/// A member's committed state and since when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub state: MemberState,
    pub since: chrono::DateTime<chrono::Utc>,
}

fn member_key(node: &str) -> String {
    format!("member@{node}")
}

fn fence_key(node: &str) -> String {
    format!("fence@{node}")
}

/// A member's committed state (UP when never decided).
pub fn member_in(v: &View<'_>, node: &str) -> Result<Option<MemberRecord>, StoreError> {
    v.get(META, &member_key(node))?
        .map(|b| troupe_runtime::codec::decode(&b))
        .transpose()
}

/// A member's fencing epoch (0 when never fenced).
pub fn epoch_in(v: &View<'_>, node: &str) -> Result<u64, StoreError> {
    Ok(match v.get(META, &fence_key(node))? {
        Some(b) => troupe_runtime::codec::decode(&b)?,
        None => 0,
    })
}

/// What a peer answers a beat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BeatAck {
    pub info: super::PeerInfo,
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
}

/// This node's lease, and as a leader the leases it granted.
#[derive(Clone, Default)]
pub struct Leases(Arc<Mutex<Book>>);

#[derive(Default)]
struct Book {
    /// Until when this node holds its lease.
    until: Option<Instant>,
    /// What the grantor of the last lease had applied when it granted it.
    applied: u64,
    /// As the leader: when a quorum last confirmed this node's leadership (the check's start).
    confirmed: Option<Instant>,
    /// As the leader: when it last granted each member a lease.
    granted: HashMap<String, Instant>,
    /// When this node last heard from each peer at all.
    heard: HashMap<String, Instant>,
    /// This node is leaving the cluster: it stops its work for good.
    released: bool,
    /// Whether this node's work runs now.
    running: bool,
}

impl Leases {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers a beat from `from`: a lease if this node leads with a fresh confirmation.
    pub(crate) fn grant(&self, from: &str, leads: bool) -> bool {
        let now = Instant::now();
        let mut book = self.book();
        let fresh = book
            .confirmed
            .is_some_and(|c| now.saturating_duration_since(c) <= CONFIRMED_WITHIN);
        if leads && fresh {
            book.granted.insert(from.to_owned(), now);
        }
        leads && fresh
    }

    /// A beat sent at `sent` was answered.
    pub(crate) fn answered(&self, peer: &str, sent: Instant, ack: &BeatAck) {
        let mut book = self.book();
        book.heard.insert(peer.to_owned(), Instant::now());
        if ack.lease {
            book.until = Some(book.until.map_or(sent + LEASE, |u| u.max(sent + LEASE)));
            book.applied = ack.applied;
        }
    }

    /// A quorum confirmed this node's leadership with a check started at `at`: it holds its
    /// own lease from then.
    fn confirmed(&self, at: Instant, applied: u64) {
        let mut book = self.book();
        book.confirmed = Some(at);
        book.until = Some(book.until.map_or(at + LEASE, |u| u.max(at + LEASE)));
        book.applied = applied;
    }

    fn deposed(&self) {
        let mut book = self.book();
        book.confirmed = None;
        book.granted.clear();
    }

    /// Whether this node may run its work now: its lease has more than the stop margin left.
    pub fn held(&self) -> bool {
        self.book().until.is_some_and(|u| Instant::now() + STOP_MARGIN < u)
    }

    /// Gives this node a lease of [`LEASE`] from now (a node that was running before it was
    /// part of a cluster of several keeps running while its first beats go out).
    fn grace(&self) {
        let mut book = self.book();
        let until = Instant::now() + LEASE;
        book.until = Some(book.until.map_or(until, |u| u.max(until)));
    }

    /// How long the leader has not granted `member` a lease, counting from `since` (when it
    /// began to lead) for one it has not granted yet.
    fn silence(&self, member: &str, since: Instant, now: Instant) -> Duration {
        let book = self.book();
        let last = book.granted.get(member).copied().map_or(since, |g| g.max(since));
        now.saturating_duration_since(last)
    }

    /// When this node last heard from `peer` (a beat answered either way).
    pub fn heard(&self, peer: &str) -> Option<Instant> {
        self.book().heard.get(peer).copied()
    }

    fn grantor_applied(&self) -> u64 {
        self.book().applied
    }

    /// Stops this node's work for good (it leaves the cluster); answers once it has stopped,
    /// or `false` if it still runs after `within`.
    pub(crate) async fn release(&self, within: Duration) -> bool {
        self.book().released = true;
        let deadline = Instant::now() + within;
        while self.book().running {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Says whether the node's work runs now (the lease keeper keeps it true).
    pub(crate) fn set_running(&self, running: bool) {
        self.book().running = running;
    }

    /// Whether the node's work runs now, as the lease keeper last said.
    pub(crate) fn running(&self) -> bool {
        self.book().running
    }

    fn released(&self) -> bool {
        self.book().released
    }
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
    api: crate::service::Api,
    mut running: bool,
) {
    let me = cluster.name();
    let mut tick = tokio::time::interval(BEAT / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_alone = alone(&store);
    let mut fenced_at: Option<chrono::DateTime<chrono::Utc>> = None;
    let mut replacements = store.replacements();
    replacements.borrow_and_update();
    if let Err(e) = fence_writes(&store, &me).await {
        tracing::error!(error = %e, "could not read this node's fencing epoch");
    }
    loop {
        cluster.leases.set_running(running);
        tick.tick().await;
        if store.failure().is_some() {
            return;
        }
        if cluster.leases.released() {
            if running {
                tracing::info!(node = %me, "leaving the cluster: stopping this node's agents, swarms and host drivers");
                stop_work(&work).await;
                running = false;
            }
            continue;
        }
        let now_alone = alone(&store);
        if now_alone {
            was_alone = true;
            if !running {
                replacements.borrow_and_update();
                running = start_work(&work, &api).await;
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
        if running && replacements.has_changed().unwrap_or(false) {
            // A snapshot replaced the tables: what the work keeps in memory (the scheduler's
            // queue, the agents and hosts it runs, the mailboxes) may be stale, and the moves
            // it brought came without events. The work starts again from the tables, as
            // after a fencing, once the node is ready.
            replacements.borrow_and_update();
            tracing::warn!(node = %me, "a snapshot was installed while this node ran its work: starting it again from the tables");
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
            // this is in them.
            replacements.borrow_and_update();
            if let Err(e) = take_up(&store, &me).await {
                tracing::error!(error = %e, "could not read this node's fencing epoch or the directory");
                continue;
            }
            tracing::info!(node = %me, "this node holds its lease: starting its work");
            running = start_work(&work, &api).await;
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

async fn start_work(work: &Work, api: &crate::service::Api) -> bool {
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
    match api.messages().restore().await {
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

mod judge;
mod moves;
mod plan;
mod tick;

pub(crate) use judge::{forget, leave, watch_members};
pub(crate) use moves::follow_moves;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lease_runs_from_the_beat_that_won_it_and_is_given_up_before_it_lapses() {
        let leases = Leases::default();
        assert!(!leases.held(), "no lease before any grant");
        let sent = Instant::now();
        let info = super::super::PeerInfo {
            name: "a".into(),
            cluster_address: String::new(),
            gateway_address: None,
        };
        tokio::time::advance(Duration::from_millis(200)).await;
        let ack = BeatAck {
            info: info.clone(),
            lease: true,
            applied: 7,
            rooms: Default::default(),
            hosts: Vec::new(),
            agents: Default::default(),
        };
        leases.answered("a", sent, &ack);
        assert!(leases.held());
        assert_eq!(leases.grantor_applied(), 7);
        // Held until the stop margin before LEASE after the beat was *sent*.
        tokio::time::advance(LEASE - STOP_MARGIN - Duration::from_millis(201)).await;
        assert!(leases.held());
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(!leases.held(), "given up STOP_MARGIN before the lease lapses");
        // An answer without a lease renews nothing.
        let refused = BeatAck { lease: false, ..ack };
        leases.answered("a", Instant::now(), &refused);
        assert!(!leases.held());
        assert!(leases.heard("a").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_grants_only_while_its_leadership_is_freshly_confirmed() {
        let leases = Leases::default();
        assert!(!leases.grant("b", true), "never confirmed");
        leases.confirmed(Instant::now(), 3);
        assert!(!leases.grant("b", false), "not the leader");
        assert!(leases.grant("b", true));
        let since = Instant::now();
        tokio::time::advance(CONFIRMED_WITHIN + Duration::from_millis(1)).await;
        assert!(!leases.grant("c", true), "a stale confirmation grants nothing");
        // Silence counts from the last grant, or from the start of the leadership.
        let now = Instant::now();
        assert_eq!(
            leases.silence("b", since, now),
            CONFIRMED_WITHIN + Duration::from_millis(1)
        );
        assert_eq!(leases.silence("c", since, now), now - since);
        // The declared-down bound leaves the member's lease and its stop margin behind.
        assert!(DOWN_AFTER >= LEASE + STOP_MARGIN && SUSPECT_AFTER < DOWN_AFTER);
    }
}

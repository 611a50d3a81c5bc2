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

use super::directory::{held_in, placement_in, Placement};
use super::Cluster;
use crate::agent::{AgentSpec, Owner};
use crate::host::HostSpec;
use crate::swarm::SwarmSpec;
use crate::tables::{AGENTS, DIRECTORY, HOSTS, OPEN_TASKS, SWARMS, TASKS, TASK_STATUS, VM_STATUS};
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

    fn set_running(&self, running: bool) {
        self.book().running = running;
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
        if running && !cluster.leases.held() {
            tracing::warn!(node = %me, "this node cannot renew its lease: stopping its agents, swarms and host drivers");
            fenced_at = Some(troupe_runtime::clock::now());
            stop_work(&work).await;
            running = false;
            continue;
        }
        if !running && cluster.leases.held() && ready(&store, &me, cluster.leases.grantor_applied()).await {
            if let Err(e) = fence_writes(&store, &me).await {
                tracing::error!(error = %e, "could not read this node's fencing epoch");
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

/// As the leader: confirms its leadership with a quorum each [`BEAT`] (so it may grant
/// leases) and judges the members by the leases it granted them. Runs for the node's
/// lifetime.
pub(crate) async fn watch_members(store: Store, cluster: Cluster) {
    let me = cluster.name();
    let mut tick = tokio::time::interval(BEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading: Option<(u64, Instant)> = None;
    loop {
        tick.tick().await;
        if store.failure().is_some() {
            return;
        }
        let status = store.status();
        if status.leader.as_deref() != Some(me.as_str()) {
            if leading.take().is_some() {
                cluster.leases.deposed();
            }
            continue;
        }
        let since = match leading {
            Some((term, since)) if term == status.term => since,
            _ => {
                cluster.leases.deposed();
                let since = Instant::now();
                leading = Some((status.term, since));
                since
            }
        };
        let check = Instant::now();
        match tokio::time::timeout(CONFIRMED_WITHIN, store.raft().ensure_linearizable()).await {
            Ok(Ok(_)) => cluster.leases.confirmed(check, store.status().commit_index),
            _ => continue,
        }
        if status.members.len() <= 1 {
            continue;
        }
        if let Err(e) = judge(&store, &cluster, &status, since).await {
            tracing::warn!(error = %e, "could not record a member's state");
        }
    }
}

/// How long a leaving member has to stop its work.
const RELEASE_WITHIN: Duration = Duration::from_secs(90);

/// On the leader: the member `node` leaves the cluster. Its work stops first (it must be
/// reachable; a member that will not return is forgotten instead), then one entry marks it
/// LEFT, bumps its fencing epoch and moves what it ran to the UP members, and then it is
/// removed from the log's membership (a learner taking a voter's place when one can).
pub(crate) async fn leave(
    service: &crate::service::node::NodeService,
    node: &str,
) -> Result<(), crate::error::ApiError> {
    use crate::error::ApiError;
    let (store, cluster, voters) = (&service.store, &service.cluster, service.voters);
    let (record, survivors) = standing(store, node).await?;
    match record.as_ref().map(|r| r.state) {
        Some(MemberState::Left) => return Err(ApiError::Conflict(format!("{node} has left the cluster already"))),
        Some(MemberState::Down) => {
            return Err(ApiError::Conflict(format!(
                "{node} is down: forget it (forgetMember) rather than drain it"
            )))
        }
        _ => {}
    }
    if survivors.is_empty() {
        return Err(ApiError::Conflict(format!(
            "no other member is UP to take {node}'s work"
        )));
    }
    let released = if node == cluster.name() {
        cluster.leases.release(RELEASE_WITHIN).await
    } else {
        crate::cluster::remote::Peer(service, node.to_owned()).release().await?
    };
    if !released {
        return Err(ApiError::Unavailable(format!(
            "{node} did not stop its work within {} s",
            RELEASE_WITHIN.as_secs()
        )));
    }
    depart(store, cluster, node, record, survivors, voters).await
}

/// On the leader: forgets the member `node`, which is DOWN and will not return: it is
/// marked LEFT (anything still placed on it moves) and removed from the log's membership.
pub(crate) async fn forget(
    service: &crate::service::node::NodeService,
    node: &str,
) -> Result<(), crate::error::ApiError> {
    let (store, cluster, voters) = (&service.store, &service.cluster, service.voters);
    let (record, survivors) = standing(store, node).await?;
    match record.as_ref().map(|r| r.state) {
        Some(MemberState::Down) => depart(store, cluster, node, record, survivors, voters).await,
        Some(MemberState::Left) => Err(crate::error::ApiError::Conflict(format!(
            "{node} has left the cluster already"
        ))),
        _ => Err(crate::error::ApiError::Conflict(format!(
            "{node} is not down: a member that is there leaves (leaveCluster)"
        ))),
    }
}

/// The member's committed record, and the other members that are UP.
async fn standing(store: &Store, node: &str) -> Result<(Option<MemberRecord>, Vec<String>), crate::error::ApiError> {
    let names: Vec<String> = store.status().members.into_iter().map(|m| m.name).collect();
    if !names.iter().any(|n| n == node) {
        return Err(crate::error::ApiError::NotFound(format!(
            "{node} is not a member of the cluster"
        )));
    }
    let node = node.to_owned();
    Ok(store
        .view(move |v| {
            let mut survivors = Vec::new();
            for name in names.iter().filter(|n| **n != node) {
                if member_in(v, name)?.is_none_or(|r| r.state == MemberState::Up) {
                    survivors.push(name.clone());
                }
            }
            Ok((member_in(v, &node)?, survivors))
        })
        .await?)
}

/// Marks `node` LEFT with its moves, then removes it from the membership.
async fn depart(
    store: &Store,
    cluster: &Cluster,
    node: &str,
    record: Option<MemberRecord>,
    survivors: Vec<String>,
    voters: usize,
) -> Result<(), crate::error::ApiError> {
    let current = record.map(|r| troupe_runtime::codec::encode(&r)).transpose()?;
    let batch = transition(store, node, MemberState::Left, current, Duration::ZERO, survivors).await?;
    store.write(batch).await?;
    cluster.directory().reload(store).await?;
    store.remove_member(node, voters).await?;
    tracing::info!(node, "a member left the cluster");
    Ok(())
}

/// Decides each member's state from the leases granted, and commits what changed.
async fn judge(
    store: &Store,
    cluster: &Cluster,
    status: &troupe_runtime::store::raft::Status,
    since: Instant,
) -> Result<(), StoreError> {
    let me = cluster.name();
    let names: Vec<String> = status.members.iter().map(|m| m.name.clone()).collect();
    let records = {
        let names = names.clone();
        store
            .view(move |v| {
                names
                    .iter()
                    .map(|n| Ok((n.clone(), member_in(v, n)?)))
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .await?
    };
    let now = Instant::now();
    let states: BTreeMap<String, MemberState> = records
        .iter()
        .map(|(n, r)| (n.clone(), r.as_ref().map_or(MemberState::Up, |r| r.state)))
        .collect();
    for (name, record) in records {
        if name == me {
            continue;
        }
        let state = record.as_ref().map_or(MemberState::Up, |r| r.state);
        let silent = cluster.leases.silence(&name, since, now);
        let next = match state {
            MemberState::Left => continue,
            _ if silent >= DOWN_AFTER => MemberState::Down,
            MemberState::Up if silent >= SUSPECT_AFTER => MemberState::Suspect,
            MemberState::Suspect | MemberState::Down if silent < SUSPECT_AFTER => MemberState::Up,
            other => other,
        };
        if next == state {
            continue;
        }
        let current = record.map(|r| troupe_runtime::codec::encode(&r)).transpose()?;
        let survivors: Vec<String> = states
            .iter()
            .filter(|(n, s)| **n != name && **s == MemberState::Up)
            .map(|(n, _)| n.clone())
            .collect();
        let batch = transition(store, &name, next, current, silent, survivors).await?;
        match store.write(batch).await {
            Ok(_) => {
                tracing::warn!(node = %name, state = next.name(), silent_ms = silent.as_millis() as u64, "a member's state changed")
            }
            // Another leader decided first.
            Err(StoreError::Stale(_)) => {}
            Err(e) => return Err(e),
        }
        if next == MemberState::Down {
            // The moves are applied: route by them here at once.
            cluster.directory().reload(store).await?;
        }
    }
    Ok(())
}

/// The entry that moves `node` to `next`, on the condition that its record is still
/// `current`; a DOWN also bumps its fencing epoch and moves what it ran to `survivors`.
async fn transition(
    store: &Store,
    node: &str,
    next: MemberState,
    current: Option<Vec<u8>>,
    silent: Duration,
    survivors: Vec<String>,
) -> Result<Batch, StoreError> {
    let record = MemberRecord {
        state: next,
        since: troupe_runtime::clock::now(),
    };
    let kind = match next {
        MemberState::Up => "MEMBER_UP",
        MemberState::Suspect => "MEMBER_SUSPECT",
        MemberState::Down => "MEMBER_DOWN",
        MemberState::Left => "MEMBER_LEFT",
    };
    let mut batch = Batch::new().require(META, member_key(node), current).put(
        META,
        member_key(node),
        troupe_runtime::codec::encode(&record)?,
    );
    let silent_ms = silent.as_millis() as u64;
    if !matches!(next, MemberState::Down | MemberState::Left) {
        return Ok(batch.event(NewEvent::new(
            kind,
            Some(node.to_owned()),
            json!({ "node": node, "silentMs": silent_ms }),
        )));
    }
    let reason = match next {
        MemberState::Left => format!("node {node} left the cluster"),
        _ => format!("node {node} is down"),
    };
    let node = node.to_owned();
    let plan = {
        let node = node.clone();
        store.view(move |v| plan_moves(v, &node, &survivors)).await?
    };
    let epoch = plan.epoch + 1;
    batch = batch.put(META, fence_key(&node), troupe_runtime::codec::encode(&epoch)?);
    batch = batch.event(NewEvent::new(
        kind,
        Some(node.clone()),
        json!({ "node": node, "silentMs": silent_ms, "epoch": epoch, "agentsMoved": plan.agents.len(),
                "agentsNotMoved": plan.stranded.len(), "swarmsMoved": plan.swarms.len(), "hostsMoved": plan.hosts.len(), "tasksMoved": plan.tasks.len() }),
    ));
    for (mut spec, placement) in plan.agents {
        let to = placement.node.clone();
        spec.node = to.clone();
        batch = batch
            .put(AGENTS, spec.id.clone(), troupe_runtime::codec::encode(&spec)?)
            .put(DIRECTORY, spec.id.clone(), troupe_runtime::codec::encode(&placement)?)
            .event(NewEvent::new(
                "AGENT_MOVED",
                Some(spec.id.clone()),
                json!({ "from": node, "to": to, "reason": reason, "epoch": placement.epoch }),
            ));
    }
    for (id, why) in &plan.stranded {
        batch = batch.event(NewEvent::new(
            "AGENT_NOT_MOVED",
            Some(id.clone()),
            json!({ "from": node, "reason": reason, "why": why }),
        ));
    }
    for moving in plan.swarms {
        let (teams, members) = (moving.swarms.len() - 1, moving.members.len());
        for (mut spec, placement) in moving.swarms {
            spec.node = placement.node.clone();
            batch = batch
                .put(SWARMS, spec.id.clone(), troupe_runtime::codec::encode(&spec)?)
                .put(DIRECTORY, spec.id.clone(), troupe_runtime::codec::encode(&placement)?);
        }
        for (mut spec, placement) in moving.members {
            spec.node = placement.node.clone();
            batch = batch
                .put(AGENTS, spec.id.clone(), troupe_runtime::codec::encode(&spec)?)
                .put(DIRECTORY, spec.id.clone(), troupe_runtime::codec::encode(&placement)?);
        }
        batch = batch.event(NewEvent::new(
            "SWARM_MOVED",
            Some(moving.top.clone()),
            json!({ "from": node, "to": moving.to, "reason": reason, "teams": teams, "members": members }),
        ));
    }
    for (mut spec, placement, vms) in plan.hosts {
        let to = placement.node.clone();
        spec.node = to.clone();
        batch = batch
            .put(HOSTS, spec.id.clone(), troupe_runtime::codec::encode(&spec)?)
            .put(DIRECTORY, spec.id.clone(), troupe_runtime::codec::encode(&placement)?);
        for vm in &vms {
            batch = batch.put(DIRECTORY, vm.clone(), troupe_runtime::codec::encode(&placement)?);
        }
        batch = batch.event(NewEvent::new(
            "HOST_MOVED",
            Some(spec.id.clone()),
            json!({ "from": node, "to": to, "reason": reason, "name": spec.name, "vms": vms.len() }),
        ));
    }
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for (id, placement) in plan.tasks {
        *per_node.entry(placement.node.clone()).or_default() += 1;
        batch = batch.put(DIRECTORY, id, troupe_runtime::codec::encode(&placement)?);
    }
    for (to, count) in per_node {
        batch = batch.event(NewEvent::new(
            "TASKS_MOVED",
            Some(to.clone()),
            json!({ "from": node, "to": to, "count": count, "reason": reason }),
        ));
    }
    Ok(batch)
}

/// Where a lost node's entities go.
struct Plan {
    /// The lost node's fencing epoch now.
    epoch: u64,
    agents: Vec<(AgentSpec, Placement)>,
    /// Each top-level swarm with where it goes, and what goes with it: its teams (nested
    /// swarms) and the members of all of them.
    swarms: Vec<SwarmMove>,
    /// The agents that stay with the lost node, and why (pinned, or no member fits).
    stranded: Vec<(String, String)>,
    /// Each host with where it goes, and the VMs on it.
    hosts: Vec<(HostSpec, Placement, Vec<String>)>,
    tasks: Vec<(String, Placement)>,
}

/// A swarm subtree moving to one node.
struct SwarmMove {
    top: String,
    to: String,
    swarms: Vec<(SwarmSpec, Placement)>,
    members: Vec<(AgentSpec, Placement)>,
}

/// Places every agent the lost node `lost` ran for itself on the survivor that holds the
/// fewest agents then, each of its top-level swarms (with its teams and all their members)
/// likewise, weighed by its members, and each of its open tasks on the node its agent went
/// to (else on the survivor that took the most); each host (with its VMs) to the survivor
/// driving the fewest. With no survivor nothing moves: the
/// entities wait for their node (or for one that joins).
fn plan_moves(v: &View<'_>, lost: &str, survivors: &[String]) -> Result<Plan, StoreError> {
    let epoch = epoch_in(v, lost)?;
    let mut plan = Plan {
        epoch,
        agents: Vec::new(),
        swarms: Vec::new(),
        stranded: Vec::new(),
        hosts: Vec::new(),
        tasks: Vec::new(),
    };
    if survivors.is_empty() {
        return Ok(plan);
    }
    let mut load: BTreeMap<&str, usize> = survivors.iter().map(|s| (s.as_str(), 0)).collect();
    let mut lost_agents = Vec::new();
    // A swarm's members, by swarm.
    let mut members: HashMap<String, Vec<(AgentSpec, u64)>> = HashMap::new();
    v.scan(AGENTS, None, |id, bytes| {
        let Some(placement) = placement_in(v, id)? else {
            return Ok(true);
        };
        if placement.node == lost {
            let spec: AgentSpec = troupe_runtime::codec::decode(bytes)?;
            match &spec.owner {
                Owner::Node => lost_agents.push((spec, placement.epoch)),
                Owner::Swarm(swarm) => members.entry(swarm.clone()).or_default().push((spec, placement.epoch)),
            }
        } else if let Some(n) = load.get_mut(placement.node.as_str()) {
            *n += 1;
        }
        Ok(true)
    })?;
    let mut lost_swarms: Vec<(SwarmSpec, u64)> = Vec::new();
    v.scan(SWARMS, None, |id, bytes| {
        if let Some(placement) = placement_in(v, id)?.filter(|p| p.node == lost) {
            lost_swarms.push((troupe_runtime::codec::decode(bytes)?, placement.epoch));
        }
        Ok(true)
    })?;
    let mut moved_to: HashMap<String, String> = HashMap::new();
    let mut taken: BTreeMap<String, usize> = BTreeMap::new();
    // Each survivor's labels, for agents that ask for some.
    let labels: HashMap<&str, BTreeMap<String, String>> = survivors
        .iter()
        .map(|s| Ok((s.as_str(), super::replicated::labels_in(v, s)?)))
        .collect::<Result<_, StoreError>>()?;
    // The least loaded of the survivors `fits` allows, counted with `weight` more.
    let mut least_loaded = |load: &mut BTreeMap<&str, usize>, weight: usize, fits: &dyn Fn(&str) -> bool| {
        let to = load
            .iter()
            .filter(|(name, _)| fits(name))
            .min_by_key(|(name, n)| (**n, **name))
            .map(|(name, _)| (*name).to_owned())?;
        if let Some(n) = load.get_mut(to.as_str()) {
            *n += weight;
        }
        *taken.entry(to.clone()).or_default() += weight;
        Some(to)
    };
    for (spec, epoch) in lost_agents {
        let wanted = &spec.placement.node_labels;
        let fits = |name: &str| {
            labels
                .get(name)
                .is_some_and(|l| wanted.iter().all(|(k, v)| l.get(k) == Some(v)))
        };
        let to = match spec.placement.pinned {
            true => None,
            false => least_loaded(&mut load, 1, &fits),
        };
        let Some(to) = to else {
            let why = match spec.placement.pinned {
                true => "it is pinned to its node".to_owned(),
                false => format!(
                    "no member that is UP has the node labels {}",
                    wanted
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            };
            plan.stranded.push((spec.id.clone(), why));
            continue;
        };
        moved_to.insert(spec.id.clone(), to.clone());
        let placement = Placement {
            node: to,
            epoch: epoch + 1,
        };
        plan.agents.push((spec, placement));
    }
    // A swarm moves whole: the top-level swarm with its teams, and every member of them.
    let mut teams: HashMap<String, Vec<String>> = HashMap::new();
    for (spec, _) in &lost_swarms {
        if let Some(lead) = &spec.lead {
            teams.entry(lead.swarm.clone()).or_default().push(spec.id.clone());
        }
    }
    let mut by_id: HashMap<String, (SwarmSpec, u64)> =
        lost_swarms.into_iter().map(|(s, e)| (s.id.clone(), (s, e))).collect();
    let mut tops: Vec<String> = by_id
        .values()
        .filter(|(s, _)| s.lead.as_ref().is_none_or(|l| !by_id.contains_key(&l.swarm)))
        .map(|(s, _)| s.id.clone())
        .collect();
    tops.sort();
    for top in tops {
        let mut subtree = vec![top.clone()];
        let mut i = 0;
        while i < subtree.len() {
            subtree.extend(teams.get(&subtree[i]).cloned().unwrap_or_default());
            i += 1;
        }
        let weight: usize = subtree.iter().map(|s| members.get(s).map_or(0, Vec::len)).sum();
        let Some(to) = least_loaded(&mut load, weight.max(1), &|_| true) else {
            continue;
        };
        let mut moving = SwarmMove {
            top: top.clone(),
            to: to.clone(),
            swarms: Vec::new(),
            members: Vec::new(),
        };
        for id in subtree {
            if let Some((spec, epoch)) = by_id.remove(&id) {
                let placement = Placement {
                    node: to.clone(),
                    epoch: epoch + 1,
                };
                moving.swarms.push((spec, placement));
            }
            for (spec, epoch) in members.remove(&id).unwrap_or_default() {
                moved_to.insert(spec.id.clone(), to.clone());
                let placement = Placement {
                    node: to.clone(),
                    epoch: epoch + 1,
                };
                moving.members.push((spec, placement));
            }
        }
        plan.swarms.push(moving);
    }
    // Each host to the survivor driving the fewest, with the VMs on it.
    let mut drives: BTreeMap<&str, usize> = survivors.iter().map(|s| (s.as_str(), 0)).collect();
    let mut lost_hosts = Vec::new();
    v.scan(HOSTS, None, |_, bytes| {
        let spec: HostSpec = troupe_runtime::codec::decode(bytes)?;
        match drives.get_mut(spec.node.as_str()) {
            Some(n) => *n += 1,
            None if spec.node == lost => lost_hosts.push(spec),
            None => {}
        }
        Ok(true)
    })?;
    let mut on_host: HashMap<String, Vec<String>> = HashMap::new();
    if !lost_hosts.is_empty() {
        v.scan(VM_STATUS, None, |id, bytes| {
            if let Some(host) = troupe_runtime::codec::decode::<VmStatus>(bytes)?.host {
                on_host.entry(host).or_default().push(id.to_owned());
            }
            Ok(true)
        })?;
    }
    for spec in lost_hosts {
        let to = drives
            .iter()
            .min_by_key(|(name, n)| (**n, **name))
            .map(|(name, _)| (*name).to_owned())
            .unwrap_or_else(|| survivors[0].clone());
        if let Some(n) = drives.get_mut(to.as_str()) {
            *n += 1;
        }
        let epoch = placement_in(v, &spec.id)?.map_or(0, |p| p.epoch) + 1;
        let vms = on_host.remove(&spec.id).unwrap_or_default();
        plan.hosts.push((spec, Placement { node: to, epoch }, vms));
    }
    let heir = taken
        .iter()
        .max_by_key(|(name, n)| (**n, std::cmp::Reverse((*name).clone())))
        .map(|(name, _)| name.clone())
        .unwrap_or_else(|| survivors[0].clone());
    let mut open = Vec::new();
    v.scan(OPEN_TASKS, None, |id, _| {
        if held_in(v, id, lost)? {
            open.push(id.to_owned());
        }
        Ok(true)
    })?;
    for id in open {
        let (Some(spec), Some(status)) = (v.get(TASKS, &id)?, v.get(TASK_STATUS, &id)?) else {
            continue;
        };
        let spec: TaskSpec = troupe_runtime::codec::decode(&spec)?;
        let status: TaskStatus = troupe_runtime::codec::decode(&status)?;
        // A task aimed at an agent that stays stays with it.
        if spec
            .target_agent
            .as_ref()
            .is_some_and(|a| plan.stranded.iter().any(|(id, _)| id == a))
        {
            continue;
        }
        let agent = spec.target_agent.as_ref().or(status.agent_id.as_ref());
        let to = agent
            .and_then(|a| moved_to.get(a))
            .cloned()
            .unwrap_or_else(|| heir.clone());
        let epoch = placement_in(v, &id)?.map_or(0, |p| p.epoch) + 1;
        plan.tasks.push((id, Placement { node: to, epoch }));
    }
    Ok(plan)
}

/// Follows the moves the cluster commits: routes by them, starts the agents moved to this
/// node and hands its scheduler the tasks moved here. Runs for the node's lifetime.
pub(crate) async fn follow_moves(store: Store, cluster: Cluster, api: crate::service::Api) {
    let me = cluster.name();
    let mut live = store.live();
    loop {
        let event = match live.recv().await {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "fell behind the event log: reading the directory again");
                if let Err(e) = cluster.directory().reload(&store).await {
                    tracing::error!(error = %e, "could not read the directory");
                }
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        match event.kind.as_str() {
            "MEMBER_DOWN" | "MEMBER_LEFT" => {
                if let Err(e) = cluster.directory().reload(&store).await {
                    tracing::error!(error = %e, "could not read the directory");
                }
            }
            "AGENT_MOVED" if event.data["to"] == me.as_str() => {
                let Some(id) = event.subject.clone() else { continue };
                let api = api.clone();
                // Each start may take the agent's own start timeout: none waits for another.
                tokio::spawn(async move {
                    match api.agents().adopt(&id).await {
                        Ok(true) => tracing::info!(agent = %id, "started an agent moved to this node"),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(agent = %id, error = %e, "could not start an agent moved to this node")
                        }
                    }
                });
            }
            "SWARM_MOVED" if event.data["to"] == me.as_str() => {
                let Some(id) = event.subject.clone() else { continue };
                let port = api.swarms().port();
                tokio::spawn(async move {
                    match port.take_over(&id).await {
                        Ok(()) => tracing::info!(swarm = %id, "started a swarm moved to this node"),
                        Err(e) => tracing::warn!(swarm = %id, error = %e, "could not start a swarm moved to this node"),
                    }
                });
            }
            "HOST_MOVED" if event.data["to"] == me.as_str() => {
                let Some(id) = event.subject.clone() else { continue };
                let hosts = api.hosts().clone();
                tokio::spawn(async move {
                    match crate::host::take_over(&hosts.fleet, &id, hosts.intensity).await {
                        Ok(()) => tracing::info!(host = %id, "driving a host moved to this node"),
                        Err(e) => tracing::warn!(host = %id, error = %e, "could not drive a host moved to this node"),
                    }
                });
            }
            "TASKS_MOVED" if event.data["to"] == me.as_str() => {
                let Some(from) = event.data["from"].as_str() else {
                    continue;
                };
                // A scheduler not running reads what it holds when it starts.
                if let Some(scheduler) = api.slots.scheduler.get() {
                    let _ = scheduler.cast(crate::scheduler::SchedulerMsg::Adopt(from.to_owned()));
                }
            }
            _ => {}
        }
    }
}

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

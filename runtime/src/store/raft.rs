//! The replicated log under the store (openraft 0.9, storage-v2, on the node's own redb).
//!
//! ```text
//!  writer thread ── group of batches ──▶ client_write(Proposal) ──▶ leader appends
//!                                                                    │  replicates to voters
//!                                        (each member's log writer fsyncs meanwhile: log::writer)
//!                       every node: committed entry ──▶ Machine::apply ──▶ tables + events
//!
//!  the only member, leading: writer thread ── group ──▶ tables + events (one fsync, no entry)
//! ```
//!
//! A [`Proposal`] is one log entry: every batch the writer drained since its last commit
//! (group commit, so one fsync covers many writes). The state machine is the store's own
//! tables: applying an entry writes its batches, in order, and numbers their events, so the
//! event sequence is the log's order and the same on every node. Log, vote and applied
//! state live in tables of the same database (`raft_log`, `raft_state`, `raft_applied`).
//!
//! The Raft core runs on a small runtime of its own, owned by the writer thread: its
//! heartbeats and elections never wait behind the node's actors, and tests that pause the
//! node's clock do not pause the log.

pub(crate) mod elect;
pub(crate) mod forwarded;
pub(super) mod log;
mod machine;
pub(super) mod network;
pub(crate) mod prevote;
mod proposal;
mod read;
mod recover;
pub(super) mod session;
mod snapshots;
pub(super) mod status;
mod timing;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, ServerState};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

pub use network::{serve, RpcKind, SendError, Transport, TransportSlot};
pub use prevote::PreVotes;
pub use proposal::Proposal;
pub(crate) use recover::ForgottenIds;
pub use recover::{forget_membership, Forgotten, FORGOTTEN_IDS};
pub use session::{Origin, Session};
pub use status::{MemberStatus, Status};
#[cfg(test)]
use timing::KEEP_BEHIND_SNAPSHOT;
use timing::{config, keep_behind_snapshot, CAUGHT_UP_WITHIN_ENTRIES, MAX_PAYLOAD_ENTRIES};
pub use timing::{Timing, SNAPSHOT_EVERY_BYTES};
pub(crate) use timing::{SNAPSHOT_INSTALL_AT_MOST, SNAPSHOT_TIMEOUT};

use super::apply::Tables;
use super::{Batch, StoreError};

openraft::declare_raft_types!(
    /// Troupe's Raft types: entries carry a group of store batches; applying one answers
    /// the sequence numbers each batch's events got.
    pub Troupe:
        D = Proposal,
        R = Applied,
        SnapshotData = tokio::fs::File,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<Troupe>;

/// What applying a [`Proposal`] gave: per batch, the sequence numbers of its events.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    pub seqs: Vec<Vec<u64>>,
    /// The batches (by position) that were not applied: a condition of theirs did not hold.
    #[serde(default)]
    pub stale: Vec<u32>,
    /// Set when none of it was applied because the group before it from the same writer was
    /// not (the session the state machine holds for that writer).
    #[serde(default)]
    pub out_of_order: Option<Session>,
}

/// Where the Raft log of the store at `path` is kept: a directory of its own beside the
/// tables (see `log::files`).
pub fn log_path(path: &std::path::Path) -> std::path::PathBuf {
    log::files::dir(path)
}

/// The directory of the snapshots of the tables' file at `path` (`troupe.snapshots` beside
/// `troupe.redb`).
pub fn snapshot_dir(path: &std::path::Path) -> std::path::PathBuf {
    path.with_extension("snapshots")
}

/// Log entries, one per index, where earlier builds kept them (in redb).
pub(super) const RAFT_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// The log's own state where earlier builds kept it: vote, committed and last purged log
/// ids, this node's Raft id.
pub(super) const RAFT_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_state");
/// The state machine's applied log id and membership, written with the data they describe.
pub(super) const RAFT_APPLIED: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_applied");

/// Whether a table belongs to the log rather than to the replicated state.
pub(super) fn is_raft_table(name: &str) -> bool {
    name.starts_with("raft_")
}

/// How long a one-voter node waits to lead after it starts.
const LEAD_WITHIN: Duration = Duration::from_secs(30);

/// How a store that has no Raft state yet begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// As a one-node cluster of its own, leading at once.
    #[default]
    Alone,
    /// Waiting to be admitted by a cluster's leader ([`crate::store::Store::admit`]); it
    /// takes no writes of its own until then.
    Join,
}

/// Who this node is in the Raft group.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The node's name, as the cluster addresses it.
    pub name: String,
    pub timing: Timing,
    pub start: Start,
}

impl Default for Identity {
    fn default() -> Self {
        Self {
            name: "local".into(),
            timing: Timing::default(),
            start: Start::Alone,
        }
    }
}

/// What a member became when it was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// It votes and counts towards the majority that commits.
    Voter,
    /// It receives the log and applies it, but neither votes nor counts.
    Learner,
}

/// How long the leader waits for a new member to catch up before it counts it.
const ADMIT_WITHIN: Duration = Duration::from_secs(60);
/// How long [`crate::store::Store::compact`] waits for its snapshot and purge.
const COMPACT_WITHIN: Duration = Duration::from_secs(30);
/// How long a write waits for a leader to be known (a new one is elected within about 2 s).
pub(super) const LEADER_WITHIN: Duration = Duration::from_secs(5);
/// How long a write may wait for a majority to confirm it.
pub(super) const COMMIT_WITHIN: Duration = Duration::from_secs(10);
/// How long a forwarded write may wait with nothing moving: the leader's answer, then its
/// application on this node. While this node applies entries (a member that restarted far
/// behind applies its backlog first) the wait goes on: the write committed, and is answered
/// once applied here.
pub(super) const FORWARD_WITHIN: Duration = Duration::from_secs(10);

impl super::Store {
    /// Whether this node belongs to a Raft group yet (a joining node does once admitted).
    pub async fn joined(&self) -> Result<bool, StoreError> {
        self.raft()
            .is_initialized()
            .await
            .map_err(|e| StoreError::Failed(format!("raft: {e}")))
    }

    /// Snapshots the state now and purges the log it covers, so a member that joins later
    /// receives the whole state as a snapshot rather than a log that does not hold all of it
    /// (after a recovery, the state predates the log).
    pub async fn compact(&self) -> Result<(), StoreError> {
        let raft = self.raft();
        let fatal = |e: openraft::error::Fatal<NodeId>| StoreError::Failed(format!("raft: {e}"));
        // What the tables applied, not what the metrics say yet: openraft publishes them
        // after it answered the write that applied last. Read from the metrics, a snapshot
        // held from before that write seemed to cover the state, and a member admitted at
        // once received it without what was written meanwhile without the log (1 join in
        // 25 after a recovery, under load, never got the recovered node's later writes).
        let db = self.inner.db.clone();
        let (tables, _) = blocking(move || machine::applied(&db)).await?;
        let applied = raft.metrics().borrow().last_applied.max(tables);
        let Some(applied) = applied else { return Ok(()) };
        raft.trigger().snapshot().await.map_err(fatal)?;
        let waited = |e: openraft::metrics::WaitError| StoreError::Unavailable(format!("compacting the log: {e}"));
        raft.wait(Some(COMPACT_WITHIN))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= applied.index),
                "a snapshot covers the state",
            )
            .await
            .map_err(waited)?;
        raft.trigger().purge_log(applied.index).await.map_err(fatal)?;
        raft.wait(Some(COMPACT_WITHIN))
            .metrics(
                |m| m.purged.is_some_and(|p| p.index >= applied.index),
                "the log is purged",
            )
            .await
            .map_err(waited)?;
        Ok(())
    }

    /// Before a cluster of this node alone admits a second member: from now on every write
    /// goes through the log, and what the writer wrote without it (see `Writer::alone`) is
    /// put in a snapshot, past an entry of the log, so that every member that joins (even
    /// one whose log ends where this one's does) receives the whole state.
    async fn hand_over(&self) -> Result<(), StoreError> {
        let shared = &self.inner.shared;
        let mut done = shared.handed_over.lock().await;
        if *done {
            return Ok(());
        }
        shared.logged.store(true, std::sync::atomic::Ordering::SeqCst);
        // The writer answers in order: once this flush is answered, no group it wrote
        // without the log is still being written.
        self.write(Batch::new()).await?;
        tokio::time::timeout(COMMIT_WITHIN, self.raft().client_write(Proposal::default()))
            .await
            .map_err(|_| StoreError::Unavailable(format!("the log took no entry within {COMMIT_WITHIN:?}")))?
            .map_err(refused)?;
        self.compact().await?;
        *done = true;
        Ok(())
    }

    /// On the leader: admits the member `id` named `name`. It first receives the log as a
    /// learner (bounded: it must catch up within a minute), then becomes a voter while the
    /// cluster has fewer than `voters` of them. Admitting a member again answers its role.
    /// The wait for it to catch up holds back no other change of the membership: a member
    /// that died while it was being admitted (a learner that never catches up) can be
    /// removed meanwhile ([`Self::remove_member`], `forgetMember`), which ends the wait.
    pub async fn admit(&self, id: NodeId, name: &str, voters: usize) -> Result<Role, StoreError> {
        let raft = self.raft();
        let added = {
            // Two members joining at once are added one after the other.
            let _changing = self.inner.changing.lock().await;
            let known = known_members(raft).await?;
            if let Some((other, _)) = known.iter().find(|(other, n)| n == name && *other != id) {
                return Err(StoreError::Rejected(format!(
                    "a member named {name} is in the cluster already (raft id {other}); a node that \
                     lost its data dir joins under a new name, or the old member is removed first"
                )));
            }
            if voting(raft).await?.contains(&id) {
                return Ok(Role::Voter);
            }
            if known.len() == 1 {
                self.hand_over().await?;
            }
            raft.add_learner(id, BasicNode::new(name), false)
                .await
                .map_err(refused)?
                .log_id
        };
        let caught_up = raft
            .wait(Some(ADMIT_WITHIN))
            .metrics(|m| learner_settled(m, id, Some(added)), "a new member to catch up")
            .await;
        if caught_up.is_err() {
            return Err(StoreError::Unavailable(format!(
                "{name} did not catch up with the log within {ADMIT_WITHIN:?}"
            )));
        }
        let _changing = self.inner.changing.lock().await;
        if !known_members(raft).await?.iter().any(|(other, _)| *other == id) {
            return Err(StoreError::Rejected(format!(
                "{name} was removed from the cluster while it was being admitted"
            )));
        }
        let current = voting(raft).await?;
        if current.contains(&id) {
            return Ok(Role::Voter);
        }
        if current.len() >= voters {
            return Ok(Role::Learner);
        }
        raft.change_membership(openraft::ChangeMembers::AddVoterIds([id].into()), false)
            .await
            .map_err(refused)?;
        Ok(Role::Voter)
    }
}

/// Whether the wait for the learner `id`, added by the membership entry `added`, is over:
/// it took an append and holds the log to within [`CAUGHT_UP_WITHIN_ENTRIES`] of the
/// leader's last entry, or it is no longer a member, or this node no longer leads (what
/// `add_learner` itself waits for when asked to block).
fn learner_settled(
    m: &openraft::RaftMetrics<NodeId, BasicNode>,
    id: NodeId,
    added: Option<openraft::LogId<NodeId>>,
) -> bool {
    if m.membership_config.log_id() < &added {
        return false;
    }
    if m.membership_config.membership().get_node(&id).is_none() {
        return true;
    }
    let Some(replication) = &m.replication else { return true };
    // One that never took an append holds nothing, however short the log: counted caught up
    // while the log had fewer entries than the margin, a joiner that died at once became a
    // voter that never came up.
    replication.get(&id).is_some_and(|matched| {
        matched
            .as_ref()
            .is_some_and(|l| m.last_log_index.unwrap_or(0).saturating_sub(l.index) <= CAUGHT_UP_WITHIN_ENTRIES)
    })
}

impl super::Store {
    /// The Raft id of the member named `name`, as this member's membership holds it.
    async fn member_id(&self, name: &str) -> Result<NodeId, StoreError> {
        known_members(self.raft())
            .await?
            .into_iter()
            .find(|(_, n)| n == name)
            .map(|(id, _)| id)
            .ok_or_else(|| StoreError::Rejected(format!("{name} is not a member of the cluster")))
    }

    /// On the leader: removes the member named `name` from the log's membership. When it
    /// voted and learners remain, the learner that has applied the most becomes a voter in
    /// its place, so the cluster keeps `voters` of them while it can: its name is answered.
    pub async fn remove_member(&self, name: &str, voters: usize) -> Result<Option<String>, StoreError> {
        let _changing = self.inner.changing.lock().await;
        let id = self.member_id(name).await?;
        let raft = self.raft();
        let voting_now = voting(raft).await?;
        if voting_now == [id] {
            return Err(StoreError::Rejected(format!(
                "{name} is the cluster's only voter: it cannot leave"
            )));
        }
        // A voter is removed as a voter (not kept as a learner), a learner as a node.
        let change = match voting_now.contains(&id) {
            true => openraft::ChangeMembers::RemoveVoters([id].into()),
            false => openraft::ChangeMembers::RemoveNodes([id].into()),
        };
        raft.change_membership(change, false).await.map_err(refused)?;
        let learners: Vec<NodeId> = raft
            .with_raft_state(|state| state.membership_state.effective().membership().learner_ids().collect())
            .await
            .map_err(|e| StoreError::Failed(format!("raft: {e}")))?;
        let voting_now = voting(raft).await?;
        if voting_now.len() < voters {
            // Of the learners that hold about all the log: one still catching up (being
            // admitted) is made a voter by its admission once it has.
            let status = self.status();
            let last = raft.metrics().borrow().last_log_index.unwrap_or(0);
            let best = status
                .members
                .iter()
                .filter(|m| m.id != id && learners.contains(&m.id))
                .filter(|m| last.saturating_sub(m.matched.unwrap_or(0)) <= CAUGHT_UP_WITHIN_ENTRIES)
                .max_by_key(|m| m.matched.unwrap_or(0));
            if let Some(learner) = best {
                raft.change_membership(openraft::ChangeMembers::AddVoterIds([learner.id].into()), false)
                    .await
                    .map_err(refused)?;
                return Ok(Some(learner.name.clone()));
            }
        }
        Ok(None)
    }

    /// On the leader: makes the member named `name` a voter or a learner.
    pub async fn set_role(&self, name: &str, role: Role) -> Result<(), StoreError> {
        let _changing = self.inner.changing.lock().await;
        let id = self.member_id(name).await?;
        let raft = self.raft();
        let voting_now = voting(raft).await?;
        let change = match role {
            Role::Voter if voting_now.contains(&id) => return Ok(()),
            Role::Voter => openraft::ChangeMembers::AddVoterIds([id].into()),
            Role::Learner if !voting_now.contains(&id) => return Ok(()),
            Role::Learner if voting_now.len() == 1 => {
                return Err(StoreError::Rejected(format!(
                    "{name} is the cluster's only voter: it cannot become a learner"
                )))
            }
            // Kept as a learner (retain): it still receives the log.
            Role::Learner => openraft::ChangeMembers::RemoveVoters([id].into()),
        };
        raft.change_membership(change, true).await.map_err(refused)?;
        Ok(())
    }
}

/// Every member (id and name), as this member's Raft core sees its membership now.
async fn known_members(raft: &Raft) -> Result<Vec<(NodeId, String)>, StoreError> {
    raft.with_raft_state(|state| {
        state
            .membership_state
            .effective()
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect()
    })
    .await
    .map_err(|e| StoreError::Failed(format!("raft: {e}")))
}

/// The members that vote now, as this member's Raft core sees its membership.
async fn voting(raft: &Raft) -> Result<Vec<NodeId>, StoreError> {
    raft.with_raft_state(|state| state.membership_state.effective().voter_ids().collect())
        .await
        .map_err(|e| StoreError::Failed(format!("raft: {e}")))
}

/// A write the log refused, as the store says it.
pub(super) fn refused(
    e: openraft::error::RaftError<NodeId, openraft::error::ClientWriteError<NodeId, BasicNode>>,
) -> StoreError {
    use openraft::error::{ClientWriteError, RaftError};
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(to)) => StoreError::NotLeader {
            leader: to.leader_node.map(|n| n.addr),
        },
        RaftError::APIError(other) => StoreError::Rejected(other.to_string()),
        RaftError::Fatal(fatal) => StoreError::Failed(format!("the replicated log stopped: {fatal}")),
    }
}

/// A member's files: the Raft log's, the tables' file, and the directory of its snapshots.
pub(super) struct Files {
    pub log: log::Wal,
    pub tables: std::path::PathBuf,
    pub snapshots: std::path::PathBuf,
}

/// Starts this node's Raft member on the current runtime: a fresh store becomes a one-node
/// cluster of its own; a store that was one already leads again at once.
pub(super) async fn start(
    tables: Arc<Tables>,
    files: Files,
    identity: &Identity,
    transport: TransportSlot,
) -> Result<(Raft, log::Durable), StoreError> {
    let wal = files.log;
    let (id, held, bytes) = {
        let mut log = wal.lock().unwrap_or_else(|p| p.into_inner());
        (log.node_id()?, log.held(), log.bytes())
    };
    tables.forwarded.belongs_to(id);
    let seen = Arc::new(snapshots::Seen::default());
    if let Some((first, last)) = held {
        seen.held_at_start(first, last, bytes);
    }
    let logs = log::LogStore::new(wal, tables.clone(), seen.clone());
    let durable = logs.durable();
    let machine = machine::Machine::new(tables, files.snapshots)?.gated_by(durable.clone());
    let raft = Raft::new(
        id,
        Arc::new(config(&identity.timing)?),
        network::Network::new(transport, durable.clone(), seen.clone(), identity.timing.commit_hold),
        logs,
        machine,
    )
    .await
    .map_err(|e| StoreError::Database(format!("raft: {e}")))?;
    let timing = &identity.timing;
    let rule = snapshots::Rule {
        every: timing::every(timing),
        keep: keep_behind_snapshot(timing),
        keep_bytes: timing::keep_bytes_behind_snapshot(timing),
        tables: files.tables,
    };
    tokio::spawn(snapshots::keep(raft.clone(), rule, seen));
    let fatal = |e: openraft::error::Fatal<NodeId>| StoreError::Database(format!("raft: {e}"));
    if identity.start == Start::Alone && !raft.is_initialized().await.map_err(fatal)? {
        let members = BTreeMap::from([(id, BasicNode::new(&identity.name))]);
        raft.initialize(members)
            .await
            .map_err(|e| StoreError::Database(format!("raft initialize: {e}")))?;
    }
    let alone = voting(&raft).await? == [id];
    if alone {
        // The only voter need not wait out an election timeout to lead again.
        raft.trigger().elect().await.map_err(fatal)?;
        raft.wait(Some(LEAD_WITHIN))
            .state(ServerState::Leader, "a one-node store leads")
            .await
            .map_err(|e| StoreError::Database(format!("raft did not elect this node: {e}")))?;
    }
    Ok((raft, durable))
}

/// Reads one value of a Raft table, `None` when absent.
fn read_state<T: serde::de::DeserializeOwned>(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
) -> Result<Option<T>, StoreError> {
    let txn = db.begin_read().map_err(StoreError::db)?;
    let t = match txn.open_table(table) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(StoreError::db(e)),
    };
    match t.get(key).map_err(StoreError::db)? {
        Some(v) => crate::codec::decode(v.value()).map(Some),
        None => Ok(None),
    }
}

/// Runs blocking database work off the async workers (the Raft runtime's, the node's).
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Database(format!("store task failed: {e}")))?
}

/// A failed read as openraft wants it: any storage error stops this node's Raft core.
fn read_error(e: impl std::fmt::Display) -> openraft::StorageError<NodeId> {
    openraft::StorageIOError::read(openraft::AnyError::error(e.to_string())).into()
}

/// A failed write as openraft wants it.
fn write_error(e: impl std::fmt::Display) -> openraft::StorageError<NodeId> {
    openraft::StorageIOError::write(openraft::AnyError::error(e.to_string())).into()
}

#[cfg(test)]
mod tests;

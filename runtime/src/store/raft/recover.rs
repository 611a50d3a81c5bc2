//! Recovering a cluster that lost its majority, from one survivor's store, offline.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use openraft::Entry;
use redb::Database;

use super::{log, machine, NodeId, Troupe, RAFT_APPLIED};
use crate::codec;
use crate::store::apply::Tables;
use crate::store::{Change, Projection, StoreError, Table, View, META};

/// What [`forget_membership`] found before it forgot it.
#[derive(Debug, Clone)]
pub struct Forgotten {
    /// This node's name in the membership it forgot.
    pub name: String,
    /// Every member of that membership, this node included.
    pub members: Vec<String>,
    /// The Raft ids of the other members of that membership: what the recovered cluster
    /// refuses to hear from ([`FORGOTTEN_IDS`]).
    pub ids: Vec<NodeId>,
}

/// The key (in the `meta` table) of the Raft ids of the members of the clusters this one
/// was recovered from. A member of a lost cluster that comes back with its old data dir
/// still holds the lost cluster's log and membership, whose entries share their indexes and
/// term with the recovered log's: a vote the recovered members gave it would let it lead
/// them and overwrite their log with the lost one, and so would its appends once it led the
/// old members that came back with it. The recovered cluster hears none of them.
pub const FORGOTTEN_IDS: &str = "raft@forgotten";

/// The Raft ids under [`FORGOTTEN_IDS`], kept in memory by the state machine (a projection:
/// a member that joined the recovered cluster holds them from the snapshot it received).
#[derive(Default)]
pub(crate) struct ForgottenIds(RwLock<HashSet<NodeId>>);

impl ForgottenIds {
    /// Whether `id` is a member of a cluster this one was recovered from.
    pub fn holds(&self, id: NodeId) -> bool {
        self.0.read().unwrap_or_else(|p| p.into_inner()).contains(&id)
    }
}

impl Projection for ForgottenIds {
    fn name(&self) -> &'static str {
        "forgotten raft ids"
    }

    fn tables(&self) -> &'static [Table] {
        &[META]
    }

    fn rebuild(&self, view: &View<'_>) -> Result<(), StoreError> {
        let ids: Vec<NodeId> = match view.get(META, FORGOTTEN_IDS)? {
            Some(bytes) => codec::decode(&bytes)?,
            None => Vec::new(),
        };
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = ids.into_iter().collect();
        Ok(())
    }

    fn apply(&self, change: &Change<'_>) -> Result<(), StoreError> {
        if change.keys_of(META).any(|k| k == FORGOTTEN_IDS) {
            self.rebuild(&change.view()?)?;
        }
        Ok(())
    }
}

/// Recovers a cluster that lost its majority from one survivor, offline (its node stopped):
/// forgets the log, the vote and the membership in the database at `path`, keeping the
/// replicated state as this node applied it (see [`apply_committed`]), so the next open of
/// this store starts a cluster of this node alone, from that state. The other members must not come back with their old data dirs:
/// they join the recovered node afresh.
pub fn forget_membership(path: &std::path::Path) -> Result<Forgotten, StoreError> {
    let db = match Database::open(path) {
        Ok(db) => Arc::new(db),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::Locked),
        Err(e) => return Err(StoreError::db(e)),
    };
    // An earlier build's log is moved into the log's files first.
    let logs = log::files::open(path, &db)?;
    let (id, (_, membership)) = {
        let logs = logs.lock().unwrap_or_else(|p| p.into_inner());
        let id: NodeId = logs
            .id()
            .ok_or_else(|| StoreError::Rejected(format!("{} holds no replicated log", path.display())))?;
        (id, apply_committed(&db, &logs)?)
    };
    drop(logs);
    let nodes: Vec<(NodeId, String)> = membership
        .membership()
        .nodes()
        .map(|(id, n)| (*id, n.addr.clone()))
        .collect();
    let name = nodes
        .iter()
        .find(|(member, _)| *member == id)
        .map(|(_, name)| name.clone())
        .ok_or_else(|| StoreError::Rejected("this node is not a member of the log it holds".into()))?;
    // The log first (replaced by one that holds only this node's id), then what the tables
    // applied: a crash between the two leaves the membership readable, and this runs again
    // alike.
    log::files::replace(path, |logs| logs.belongs_to(id))?;
    let txn = db.begin_write().map_err(StoreError::db)?;
    txn.delete_table(RAFT_APPLIED).map_err(StoreError::db)?;
    txn.commit().map_err(StoreError::db)?;
    Ok(Forgotten {
        name,
        ids: nodes
            .iter()
            .map(|(member, _)| *member)
            .filter(|member| *member != id)
            .collect(),
        members: nodes.into_iter().map(|(_, n)| n).collect(),
    })
}

/// Applies, durably, the entries this node's log holds as committed past what its tables
/// hold durably: applies are made durable only now and then (see `machine`), and a node
/// that stopped without closing its tables lost the latest ones, which the log has. Entries
/// past the committed id the log recorded may never have been committed: they go with the
/// log. Returns what the tables have applied then.
fn apply_committed(db: &Arc<Database>, logs: &log::files::Log) -> Result<machine::AppliedState, StoreError> {
    let (applied, membership) = machine::applied(db)?;
    let from = applied.map_or(0, |id| id.index + 1);
    let Some(to) = logs.committed().map(|id| id.index).filter(|to| *to >= from) else {
        return Ok((applied, membership));
    };
    let entries: Vec<Entry<Troupe>> = logs.read(from, to + 1)?;
    if entries.first().map(|e| e.log_id.index) != Some(from) || entries.len() as u64 != to - from + 1 {
        return Err(StoreError::Rejected(format!(
            "the log holds {} of the committed entries {from}..={to} this node has not applied durably",
            entries.len()
        )));
    }
    // Its own handle on the tables: nothing subscribes, and the next open trims the events.
    let (live, _) = tokio::sync::broadcast::channel(1);
    let tables = Tables::open(db.clone(), live, 0)?;
    machine::apply_entries(&tables, &entries, redb::Durability::Immediate)?;
    tracing::info!(
        from,
        to,
        "applied the committed entries the tables had not made durable"
    );
    machine::applied(db)
}

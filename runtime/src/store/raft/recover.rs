//! Recovering a cluster that lost its majority, from one survivor's store, offline.

use openraft::BasicNode;
use redb::Database;

use super::{log, machine, read_state, NodeId, RAFT_APPLIED, RAFT_LOG, RAFT_STATE};
use crate::store::StoreError;

/// What [`forget_membership`] found before it forgot it.
#[derive(Debug, Clone)]
pub struct Forgotten {
    /// This node's name in the membership it forgot.
    pub name: String,
    /// Every member of that membership, this node included.
    pub members: Vec<String>,
}

/// Recovers a cluster that lost its majority from one survivor, offline (its node stopped):
/// forgets the log, the vote and the membership in the database at `path`, keeping the
/// replicated state as it is, so the next open of this store starts a cluster of this node
/// alone, from that state. The other members must not come back with their old data dirs:
/// they join the recovered node afresh.
pub fn forget_membership(path: &std::path::Path) -> Result<Forgotten, StoreError> {
    let open = |path: &std::path::Path| match Database::open(path) {
        Ok(db) => Ok(db),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(StoreError::Locked),
        Err(e) => Err(StoreError::db(e)),
    };
    let db = open(path)?;
    let log_path = super::log_path(path);
    let logs = match log_path.exists() {
        true => open(&log_path)?,
        // Kept in the tables' file by an earlier build: moved to a file of its own first.
        false => Database::create(&log_path).map_err(StoreError::db)?,
    };
    log::adopt(&db, &logs)?;
    let id: NodeId = read_state(&logs, RAFT_STATE, log::ID)?
        .ok_or_else(|| StoreError::Rejected(format!("{} holds no replicated log", path.display())))?;
    let membership: Option<openraft::StoredMembership<NodeId, BasicNode>> =
        read_state(&db, RAFT_APPLIED, machine::MEMBERSHIP)?;
    let nodes: Vec<(NodeId, String)> = membership
        .map(|m| m.membership().nodes().map(|(id, n)| (*id, n.addr.clone())).collect())
        .unwrap_or_default();
    let name = nodes
        .iter()
        .find(|(member, _)| *member == id)
        .map(|(_, name)| name.clone())
        .ok_or_else(|| StoreError::Rejected("this node is not a member of the log it holds".into()))?;
    // The log first, then what the tables applied: a crash between the two leaves the
    // membership readable, and this runs again alike.
    let txn = logs.begin_write().map_err(StoreError::db)?;
    {
        txn.delete_table(RAFT_LOG).map_err(StoreError::db)?;
        let mut state = txn.open_table(RAFT_STATE).map_err(StoreError::db)?;
        for key in [log::VOTE, log::COMMITTED, log::PURGED] {
            state.remove(key).map_err(StoreError::db)?;
        }
    }
    txn.commit().map_err(StoreError::db)?;
    let txn = db.begin_write().map_err(StoreError::db)?;
    txn.delete_table(RAFT_APPLIED).map_err(StoreError::db)?;
    txn.commit().map_err(StoreError::db)?;
    Ok(Forgotten {
        name,
        members: nodes.into_iter().map(|(_, n)| n).collect(),
    })
}

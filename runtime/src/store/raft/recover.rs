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
    let db = match Database::open(path) {
        Ok(db) => db,
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::Locked),
        Err(e) => return Err(StoreError::db(e)),
    };
    let id: NodeId = read_state(&db, RAFT_STATE, log::ID)?
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
    let txn = db.begin_write().map_err(StoreError::db)?;
    {
        txn.delete_table(RAFT_LOG).map_err(StoreError::db)?;
        let mut state = txn.open_table(RAFT_STATE).map_err(StoreError::db)?;
        for key in [log::VOTE, log::COMMITTED, log::PURGED] {
            state.remove(key).map_err(StoreError::db)?;
        }
        txn.delete_table(RAFT_APPLIED).map_err(StoreError::db)?;
    }
    txn.commit().map_err(StoreError::db)?;
    Ok(Forgotten {
        name,
        members: nodes.into_iter().map(|(_, n)| n).collect(),
    })
}

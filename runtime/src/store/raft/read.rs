//! Linearizable reads: before a read that drives a decision, this member learns the
//! leader's commit index as of now (the leader confirms with a quorum that it still leads)
//! and waits until it has applied that far. A read after it sees every write acknowledged
//! anywhere in the cluster before it began.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::network::{RpcKind, SendError, TransportSlot};
use super::{NodeId, Raft};
use crate::codec;
use crate::store::{Store, StoreError};

/// How long a linearizable read may wait for the leader and for this member to catch up.
const READ_WITHIN: Duration = Duration::from_secs(5);

/// How the leader answered a read-index request.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum ReadIndex {
    /// Everything committed up to this index is what a read must see.
    At(Option<u64>),
    /// The member asked does not lead (or no longer: a quorum did not confirm it).
    NotLeader,
}

/// On the leader: the index a linearizable read must wait for.
async fn read_index(raft: &Raft) -> Result<Option<u64>, StoreError> {
    use openraft::error::{CheckIsLeaderError, RaftError};
    match raft.ensure_linearizable().await {
        Ok(read) => Ok(read.map(|id| id.index)),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => Err(StoreError::NotLeader { leader: None }),
        Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
            // Said with the members' names and counts, not openraft's text of raw ids.
            let metrics = raft.metrics().borrow().clone();
            let membership = metrics.membership_config.membership();
            let voters = membership.voter_ids().count();
            let mut answered: Vec<_> = (e.got.iter())
                .filter_map(|id| membership.get_node(id).map(|n| n.addr.clone()))
                .collect();
            answered.sort();
            Err(StoreError::Unavailable(format!(
                "no majority confirmed this node still leads: {} of its {voters} voters answered ({})",
                e.got.len(),
                answered.join(", ")
            )))
        }
        Err(RaftError::Fatal(fatal)) => Err(StoreError::Failed(format!("the replicated log stopped: {fatal}"))),
    }
}

/// Answers a follower's read-index request (`RpcKind::ReadIndex`).
pub(super) async fn serve_read_index(raft: &Raft) -> Result<Vec<u8>, StoreError> {
    match read_index(raft).await {
        Ok(at) => codec::encode(&ReadIndex::At(at)),
        Err(StoreError::NotLeader { .. }) => codec::encode(&ReadIndex::NotLeader),
        Err(e) => Err(e),
    }
}

async fn ask_leader(raft: &Raft, slot: &TransportSlot, leader: NodeId) -> Result<Option<u64>, StoreError> {
    let name = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .get_node(&leader)
        .map(|n| n.addr.clone())
        .ok_or(StoreError::NotLeader { leader: None })?;
    let transport = slot
        .get()
        .ok_or_else(|| StoreError::Unavailable("the cluster link is not up yet".into()))?;
    let answer = transport
        .send(&name, RpcKind::ReadIndex, Vec::new(), READ_WITHIN)
        .await
        .map_err(|e| match e {
            SendError::NotSent(why) | SendError::Lost(why) => {
                StoreError::Unavailable(format!("the leader {name} did not confirm a read: {why}"))
            }
        })?;
    match codec::decode(&answer)? {
        ReadIndex::At(at) => Ok(at),
        ReadIndex::NotLeader => Err(StoreError::NotLeader { leader: Some(name) }),
    }
}

impl Store {
    /// Waits until this member has applied everything the cluster committed before the
    /// call: a read after it is linearizable. On a one-member cluster it returns at once.
    /// UNAVAILABLE when no leader confirms within a few seconds (a member cut off from the
    /// majority cannot promise what it has not seen).
    pub async fn linearize(&self) -> Result<(), StoreError> {
        let raft = self.raft();
        let deadline = tokio::time::Instant::now() + READ_WITHIN;
        let index = loop {
            let (me, leader, alone) = {
                let metrics = raft.metrics();
                let m = metrics.borrow();
                let voters = m.membership_config.membership().voter_ids().count();
                (m.id, m.current_leader, voters == 1 && m.current_leader == Some(m.id))
            };
            if alone {
                return Ok(());
            }
            let asked = match leader {
                Some(leader) if leader == me => read_index(raft).await,
                Some(leader) => ask_leader(raft, self.transport(), leader).await,
                None => Err(StoreError::NotLeader { leader: None }),
            };
            match asked {
                Ok(index) => break index,
                Err(e @ StoreError::NotLeader { .. }) | Err(e @ StoreError::Unavailable(_)) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(StoreError::Unavailable(format!(
                            "no leader confirmed a read within {READ_WITHIN:?}: {e}"
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        raft.wait(Some(left))
            .applied_index_at_least(index, "a linearizable read")
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Unavailable(format!("this node did not catch up with the leader: {e}")))
    }
}

//! What the store answers when it cannot do what was asked.

/// Why the store could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The disk or the database is broken: the node cannot go on.
    #[error("database error: {0}")]
    Database(String),
    #[error("encoding error: {0}")]
    Encoding(String),
    /// The database refused this batch (a value too large); other writes are unaffected.
    #[error("the write was refused: {0}")]
    Rejected(String),
    /// The store stopped after a fatal error; nothing more is written.
    #[error("the store has failed: {0}")]
    Failed(String),
    #[error("the store writer has stopped")]
    Closed,
    #[error("the database is open in another process")]
    Locked,
    #[error(
        "events after {after} are no longer kept (the oldest kept is {oldest}): read the current state, then resume from node.lastSeq"
    )]
    Compacted { after: u64, oldest: u64 },
    #[error(
        "cursor {after} is ahead of this node's log (its last event is {last}): a cursor from a replaced data dir or another cluster, or this node lags behind the cluster's log"
    )]
    FutureCursor { after: u64, last: u64 },
    /// The cluster could not confirm the write in time (no leader, no majority, a leader
    /// that did not answer). It may still be applied later: read before writing again.
    #[error("the cluster is unavailable: {0}")]
    Unavailable(String),
    /// A condition of the batch ([`super::Op::Require`]) did not hold when it was applied: none
    /// of it was. The writer is out of date (a node declared down, a lost race).
    #[error("the write was refused as stale, and nothing of it was written: {0}")]
    Stale(String),
    /// This node is no member of the cluster's log any more (it left, or was forgotten): it
    /// writes nothing, and waiting would not change that.
    #[error("this node is no member of the cluster (it left, or was forgotten): it writes nothing")]
    Left,
    /// This node is stopping and no majority of the cluster is up to take its writes (the
    /// other members stopped, or cannot be reached): none is confirmed (one already sent
    /// may still be applied, should a majority come back before the node is gone).
    #[error("this node is stopping and no majority of the cluster is up to take its writes: they are not confirmed")]
    Alone,
    /// This node does not lead the replicated log; the write was not made.
    #[error("{}", not_leader(leader.as_deref()))]
    NotLeader { leader: Option<String> },
}

impl StoreError {
    pub(crate) fn db(e: impl std::fmt::Display) -> Self {
        Self::Database(e.to_string())
    }

    /// Whether the caller's request (its cursor) is at fault rather than the node.
    pub fn is_bad_cursor(&self) -> bool {
        matches!(self, Self::Compacted { .. } | Self::FutureCursor { .. })
    }
}

/// What a write that found no leader says: with none known, how the cluster gets one, and
/// the way out when it cannot (a majority of its voters gone for good).
fn not_leader(leader: Option<&str>) -> String {
    match leader {
        Some(leader) => format!("this node does not lead the cluster's log (the leader is {leader})"),
        None => "no leader of the cluster's log is known to this node, and the write was not made: one is \
                 elected once a majority of its voters is up and reachable; if most of them are gone for \
                 good, make a cluster again from one survivor with `troupe recover` (docs/cluster.md); if \
                 this node was removed (forgetMember) while it was down, the others no longer answer it: \
                 start it with a fresh data dir and --join instead"
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::StoreError;

    #[test]
    fn a_write_that_found_no_leader_names_the_way_out() {
        let none = StoreError::NotLeader { leader: None }.to_string();
        assert!(
            none.contains("the write was not made")
                && none.contains("majority of its voters")
                && none.contains("troupe recover")
                && none.contains("removed (forgetMember) while it was down"),
            "{none}"
        );
        let known = StoreError::NotLeader {
            leader: Some("b".into()),
        }
        .to_string();
        assert_eq!(known, "this node does not lead the cluster's log (the leader is b)");
    }
}

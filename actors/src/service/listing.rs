//! Cluster-wide lists and counts, read from this node's replica: every member holds every
//! member's records, so a list asks no peer and misses no node's part (`missing` stays
//! empty; the GraphQL field `missingNodes` is kept for clients that read it).

use serde::{Deserialize, Serialize};

/// One page of a cluster-wide list, in id order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listing<T> {
    pub items: Vec<T>,
    /// Whether more items follow anywhere.
    pub more: bool,
    /// Peers whose items could not be included (down, gone, or too slow).
    pub missing: Vec<String>,
}

/// A cluster-wide count, and the peers it could not include.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counted {
    pub total: u64,
    pub missing: Vec<String>,
}

impl<T> Listing<T> {
    /// A page read from this node's replica, which holds the whole cluster's records.
    pub(crate) fn local(items: Vec<T>, more: bool) -> Self {
        Self {
            items,
            more,
            missing: Vec::new(),
        }
    }
}

impl Counted {
    /// A count read from this node's replica.
    pub(crate) fn local(total: u64) -> Self {
        Self {
            total,
            missing: Vec::new(),
        }
    }
}

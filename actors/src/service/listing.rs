//! Cluster-wide lists and counts: this node's part and every reachable peer's, and which
//! peers' parts are missing.

use crate::cluster::Gathered;
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
    /// The cluster's page from every member's page after the same cursor (see [`merge_pages`]).
    pub(crate) fn merge(pages: Gathered<(Vec<T>, bool)>, first: usize, id: impl Fn(&T) -> &str) -> Self {
        let (items, more) = merge_pages(pages.answers, first, id);
        Self {
            items,
            more,
            missing: pages.missing,
        }
    }
}

impl Counted {
    /// The cluster's count from every member's.
    pub(crate) fn sum(counts: Gathered<u64>) -> Self {
        Self {
            total: counts.answers.iter().sum(),
            missing: counts.missing,
        }
    }
}

/// Merges pages that each hold one node's items after the same cursor, sorted by id, into
/// the cluster's page: the first `first` of them, and whether more follow anywhere.
pub(crate) fn merge_pages<T>(pages: Vec<(Vec<T>, bool)>, first: usize, id: impl Fn(&T) -> &str) -> (Vec<T>, bool) {
    let mut more = false;
    let mut all = Vec::new();
    for (items, page_more) in pages {
        more |= page_more;
        all.extend(items);
    }
    all.sort_by(|a, b| id(a).cmp(id(b)));
    more |= all.len() > first;
    all.truncate(first);
    (all, more)
}

#[cfg(test)]
mod tests {
    use super::merge_pages;

    #[test]
    fn merged_pages_keep_id_order_and_know_when_more_follow() {
        let a = (vec!["01", "04", "05"], true);
        let b = (vec!["02", "03"], false);
        let (page, more) = merge_pages(vec![a.clone(), b.clone()], 3, |s| s);
        assert_eq!((page, more), (vec!["01", "02", "03"], true));
        let (page, more) = merge_pages(vec![(vec!["01"], false), b], 3, |s| s);
        assert_eq!((page, more), (vec!["01", "02", "03"], false));
    }
}

//! A leader that lost its majority says so in its members' names.

use std::sync::Arc;

use super::{member, Router, THINGS};
use crate::store::{Batch, StoreError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_no_majority_confirms_names_who_answered_not_raw_ids() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let a = member(&router, &dir, "a", super::super::Start::Alone);
    let b = member(&router, &dir, "b", super::super::Start::Join);
    assert_eq!(a.admit(b.raft_id(), "b", 3).await.unwrap(), super::super::Role::Voter);
    a.write(Batch::new().put(THINGS, "k", vec![1])).await.unwrap();
    // Both links cut: the leader hears nobody, and nobody's vote reaches it.
    let (leader, name) = match a.leader().as_deref() {
        Some("a") => (&a, "a"),
        _ => (&b, "b"),
    };
    router.cut.lock().unwrap().extend(["a".to_owned(), "b".to_owned()]);
    let refused = leader.linearize().await.unwrap_err();
    let StoreError::Unavailable(said) = refused else {
        panic!("{refused:?}")
    };
    let want = format!("no majority confirmed this node still leads: 1 of its 2 voters answered ({name})");
    assert!(said.ends_with(&want), "{said}");
}

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

/// A leader that no majority answered for a while takes no more writes into its log: they
/// wait for a leader that can commit, and are answered that nothing was written when none
/// comes in their time (they were proposed, waited 10 s or more, and were answered that they
/// might still be applied).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_leader_no_majority_answers_is_not_proposed_and_is_answered_not_written() {
    let (_dir, router, leader) = three_with_a_write().await;
    let last = super::last_log(&leader);
    cut_every_link(&router);
    no_majority_answers(&leader).await;
    let refused = leader.write(Batch::new().put(THINGS, "k", vec![2])).await.unwrap_err();
    assert!(matches!(refused, StoreError::NotLeader { leader: None }), "{refused:?}");
    assert_eq!(super::last_log(&leader), last, "the write went into the leader's log");
}

/// A write a leader took just before it lost its majority is answered once no majority has
/// answered that leader for a while, that it may still be applied: it waited out the
/// commit's 10 s, and every write queued behind it waited as long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_a_leader_took_as_it_lost_its_majority_is_answered_once_the_loss_shows() {
    let (_dir, router, leader) = three_with_a_write().await;
    cut_every_link(&router);
    let refused = leader.write(Batch::new().put(THINGS, "k", vec![2])).await.unwrap_err();
    let StoreError::Unavailable(said) = &refused else {
        panic!("{refused:?}")
    };
    assert!(
        said.contains("no majority of the cluster has answered this leader") && said.contains("may still be applied"),
        "{said}"
    );
}

/// A write handed over while an earlier one is being settled (a leader that lost its
/// majority) waits for a leader 5 s from when it was handed over, not from when the writer
/// takes it up: it waited for the earlier one to be settled, then 5 s of its own (7-10 s in
/// a new-user trial, 5 s expected). Bounded in time because that is the promise: a write
/// that finds no leader is answered within 5 s (the margin is for a busy machine; without
/// the change it took 8.2 s here, with it 5.1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_queued_behind_one_being_settled_waits_for_a_leader_from_when_it_was_asked() {
    let (_dir, router, leader) = three_with_a_write().await;
    cut_every_link(&router);
    // Taken at once, and settled once no majority has answered for 2 s (up to 5 s).
    let first = tokio::spawn({
        let leader = leader.clone();
        async move { leader.write(Batch::new().put(THINGS, "k", vec![2])).await }
    });
    no_majority_answers(&leader).await;
    let asked = tokio::time::Instant::now();
    let second = leader.write(Batch::new().put(THINGS, "k", vec![3])).await;
    let waited = asked.elapsed();
    assert!(
        matches!(second, Err(StoreError::NotLeader { leader: None })),
        "{second:?}"
    );
    assert!(
        waited < std::time::Duration::from_secs(7),
        "the write waited {waited:?} for a leader"
    );
    assert!(first.await.unwrap().is_err());
}

/// Three voters that took a write; the one that leads.
async fn three_with_a_write() -> (tempfile::TempDir, Arc<Router>, crate::store::Store) {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let [a, b, c] = super::three_voters(&router, &dir).await;
    a.write(Batch::new().put(THINGS, "k", vec![1])).await.unwrap();
    let leader = [a, b, c]
        .into_iter()
        .find(|s| s.leader().as_deref() == Some(s.node()))
        .expect("a leader");
    (dir, router, leader)
}

/// Every link cut: the leader hears nobody, and nobody can elect another.
fn cut_every_link(router: &Router) {
    router.cut.lock().unwrap().extend(["a", "b", "c"].map(str::to_owned));
}

/// Waits (at most 10 s) until `leader` has had no answer from a majority for a while.
async fn no_majority_answers(leader: &crate::store::Store) {
    let mut metrics = leader.raft().metrics();
    let silent = metrics.wait_for(crate::store::raft::status::lead_unconfirmed);
    tokio::time::timeout(std::time::Duration::from_secs(10), silent)
        .await
        .expect("the leader to notice that no majority answers it")
        .unwrap();
}

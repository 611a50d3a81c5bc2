//! Pre-vote: a member back from a cut does not depose a leader that never went away.

use std::sync::Arc;
use std::time::Duration;

use super::{caught_up, last_log, three_voters, Router, THINGS};
use crate::store::Batch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_past_its_election_timeout_comes_back_without_an_election() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let [a, b, c] = three_voters(&router, &dir).await;
    a.write(Batch::new().put(THINGS, "before", vec![1])).await.unwrap();
    let term = a.raft().metrics().borrow().current_term;
    // c cut off both ways: nobody reaches it and it reaches nobody.
    router.cut.lock().unwrap().insert("c".into());
    c.transport().set(Arc::new(Router::default()));
    // It heard no leader past the lease and an election timeout, twice: each time it asked
    // the others and nobody answered, so it did not stand.
    let mut pre_votes = c.pre_votes();
    tokio::time::timeout(Duration::from_secs(20), pre_votes.wait_for(|p| p.lost >= 3))
        .await
        .expect("c heard no leader, and asked")
        .unwrap();
    assert_eq!(c.raft().metrics().borrow().current_term, term, "c stood while cut off");
    // Nor does it name the leader it lost: it says it cannot commit.
    assert_eq!(c.status().leader, None);
    assert!(c.commit_problem().is_some_and(|p| p.contains("cut off")));
    // Back, it follows the leader it had, in the same term: no election.
    router.cut.lock().unwrap().remove("c");
    c.transport().set(router.clone());
    a.write(Batch::new().put(THINGS, "after", vec![2])).await.unwrap();
    caught_up(&c, last_log(&a)).await;
    let mut silent = c.leader_silent();
    tokio::time::timeout(Duration::from_secs(5), silent.wait_for(|s| !s))
        .await
        .expect("c hears its leader again")
        .unwrap();
    assert_eq!(c.status().leader.as_deref(), Some("a"));
    for store in [&a, &b, &c] {
        let m = store.raft().metrics().borrow().clone();
        assert_eq!((m.current_leader, m.current_term), (Some(a.raft_id()), term));
    }
    assert_eq!(a.pre_votes().borrow().won + b.pre_votes().borrow().won, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_a_member_whose_leader_went_silent_is_answered_that_nothing_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let [a, _b, c] = three_voters(&router, &dir).await;
    a.write(Batch::new().put(THINGS, "before", vec![1])).await.unwrap();
    // Nothing reaches c (as from a frozen leader): it hears no leader, and says so.
    router.cut.lock().unwrap().insert("c".into());
    let mut silent = c.leader_silent();
    tokio::time::timeout(Duration::from_secs(20), silent.wait_for(|s| *s))
        .await
        .expect("c found its leader silent")
        .unwrap();
    // A group forwarded to the leader it lost would get no answer (the router holds it).
    router.hold();
    let written = c.write(Batch::new().put(THINGS, "cut", vec![2])).await;
    assert!(
        matches!(written, Err(crate::store::StoreError::NotLeader { leader: None })),
        "{written:?}"
    );
    assert!(router.release().is_empty(), "the write was sent to the silent leader");
}

/// A member back from a pause (its timer did not run for over a lease) grants no pre-vote
/// before it heard what its leader sent meanwhile: answered from before its pause, the third
/// voter of a cluster whose leader froze with it stood on its grant, and deposed the leader
/// thawed with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_back_from_a_pause_grants_no_pre_vote_before_it_heard_its_leader() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let [a, b, c] = three_voters(&router, &dir).await;
    a.write(Batch::new().put(THINGS, "before", vec![1])).await.unwrap();
    caught_up(&c, last_log(&a)).await;
    // Nobody hears anybody: b's leader goes silent, and nobody can stand.
    for name in ["a", "b", "c"] {
        router.cut.lock().unwrap().insert(name.into());
    }
    let mut silent = b.leader_silent();
    tokio::time::timeout(Duration::from_secs(20), silent.wait_for(|s| *s))
        .await
        .expect("b found its leader silent")
        .unwrap();
    let ask = crate::store::raft::prevote::Ask {
        candidate: c.raft_id(),
        last_log_id: c.last_log_id().await.unwrap(),
    };
    assert!(b.would_vote(&ask).await.unwrap(), "b heard no leader past the lease");
    // Its timer just woke, long after its time: it was stopped, and what its leader sent
    // waits unread.
    b.inner.presence.came_back();
    assert!(
        !b.would_vote(&ask).await.unwrap(),
        "b granted a pre-vote right after its pause"
    );
}

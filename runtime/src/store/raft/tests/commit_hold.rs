//! A follower that waits for none of an entry is not sent the commit index alone after each
//! write: the next append carries it, or the leader sends it once the hold is over
//! (`network::hold`).

use std::sync::Arc;
use std::time::Duration;

use super::{caught_up, fast, last_log, member_with, Router, THINGS};
use crate::store::raft::{Start, Timing};
use crate::store::{Batch, Store};

/// a, alone at first, then b and c admitted as voters, all with `timing`.
async fn voters(router: &Arc<Router>, dir: &tempfile::TempDir, timing: Timing) -> [Store; 3] {
    let a = member_with(router, dir, "a", Start::Alone, timing.clone(), None);
    let b = member_with(router, dir, "b", Start::Join, timing.clone(), None);
    let c = member_with(router, dir, "c", Start::Join, timing, None);
    a.admit(b.raft_id(), "b", 3).await.unwrap();
    a.admit(c.raft_id(), "c", 3).await.unwrap();
    [a, b, c]
}

/// How many appends of no entries moved `member`'s commit index.
fn alone(router: &Router, member: &str) -> usize {
    router.commits.lock().unwrap().get(member).map_or(0, |c| c.1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_proposed_nothing_learns_the_commit_index_from_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    // Held for as long as the test takes: what reaches c is then certain, not a race
    // between the hold and a busy machine. Heartbeats carry the commit index too, so they
    // are held as well: no election within the test either, which a member that heard
    // nothing for 300 ms on a busy machine would start.
    let timing = Timing {
        commit_hold: Duration::from_secs(3600),
        election_min: Duration::from_secs(120),
        election_max: Duration::from_secs(180),
        ..fast()
    };
    let [a, b, c] = voters(&router, &dir, timing).await;
    let term = |s: &Store| s.raft().metrics().borrow().current_term;
    let (leader, first) = (a.raft_id(), term(&a));
    let before = alone(&router, "c");
    let mut written = Vec::new();
    for i in 0..10u8 {
        // Answered once applied on b, which is sent the commit of its own writes at once.
        b.write(Batch::new().put(THINGS, format!("k{i}"), vec![i]))
            .await
            .unwrap();
        assert_eq!(b.get(THINGS, &format!("k{i}")).await.unwrap(), Some(vec![i]));
        written.push(last_log(&a));
    }
    assert_eq!(alone(&router, "c"), before, "c was sent a commit index alone");
    // Each append carried the commit of the write before it.
    caught_up(&c, written[8]).await;
    assert_eq!(c.get(THINGS, "k8").await.unwrap(), Some(vec![8]));
    // And the next one, whoever proposes it, that of the last.
    a.write(Batch::new().put(THINGS, "on-a", vec![10])).await.unwrap();
    caught_up(&c, written[9]).await;
    assert_eq!(c.get(THINGS, "k9").await.unwrap(), Some(vec![9]));
    assert_eq!(alone(&router, "c"), before, "c was sent a commit index alone");
    for member in [&a, &b, &c] {
        assert_eq!(term(member), first, "no election");
        assert_eq!(member.raft().metrics().borrow().current_leader, Some(leader));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_index_held_goes_alone_once_the_hold_is_over() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    // No heartbeat within the test to carry it instead: only the held append can.
    let timing = Timing {
        heartbeat: Duration::from_secs(60),
        election_min: Duration::from_secs(120),
        election_max: Duration::from_secs(180),
        ..fast()
    };
    let [a, b, c] = voters(&router, &dir, timing).await;
    b.write(Batch::new().put(THINGS, "from-b", vec![1])).await.unwrap();
    // Nothing follows the write: c learns its commit from the held append, 5 ms on.
    caught_up(&c, last_log(&a)).await;
    assert_eq!(c.get(THINGS, "from-b").await.unwrap(), Some(vec![1]));
    assert!(alone(&router, "c") > 0, "the commit index went alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_the_leader_is_answered_with_an_applied_index_that_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let [a, b, _c] = voters(&router, &dir, fast()).await;
    for i in 0..20u8 {
        a.write(Batch::new().put(THINGS, format!("k{i}"), vec![i]))
            .await
            .unwrap();
        // What a mutation's answer carries as its commit index.
        let index = a.applied_index();
        let entry = last_log(&a);
        assert!(index >= entry, "answered with {index}, its entry {entry}");
        // A read on b that waits for that index finds the write, although b is told of
        // the commit up to the hold later.
        caught_up(&b, index).await;
        assert_eq!(b.get(THINGS, &format!("k{i}")).await.unwrap(), Some(vec![i]));
    }
}

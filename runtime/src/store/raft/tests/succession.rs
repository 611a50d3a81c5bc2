//! A leader that stops on purpose names its successor, which alone stands.

use std::sync::Arc;
use std::time::Duration;

use super::{three_voters, Router, THINGS};
use crate::store::Batch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_leader_names_the_member_that_takes_over_in_the_next_term() {
    // Three clusters in turn: without the successor standing first, the followers' own
    // election timers pick either of them.
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let router = Arc::new(Router::default());
        let [a, b, c] = three_voters(&router, &dir).await;
        a.write(Batch::new().put(THINGS, "k", vec![round])).await.unwrap();
        let term = a.raft().metrics().borrow().current_term;
        a.stop_raft().await;
        let named = b.inner.successions.named();
        assert_eq!(named, c.inner.successions.named(), "both followers heard the same word");
        let named = named.expect("the stopping leader named a successor");
        assert_eq!((named.leader, named.term), (a.raft_id(), term));
        let (successor, other) = match named.successor == b.raft_id() {
            true => (&b, &c),
            false => (&c, &b),
        };
        assert_eq!(named.successor, successor.raft_id());
        successor
            .raft()
            .wait(Some(Duration::from_secs(10)))
            .metrics(|m| m.current_leader == Some(m.id), "the successor leads")
            .await
            .unwrap();
        let leads = successor.raft().metrics().borrow().clone();
        assert_eq!(
            leads.current_term,
            term + 1,
            "round {round}: one election, won by the successor"
        );
        let vote = other.raft().metrics().borrow().vote;
        assert_eq!(
            vote.leader_id().voted_for(),
            Some(successor.raft_id()),
            "round {round}: {vote:?}"
        );
        successor
            .write(Batch::new().put(THINGS, "after", vec![round]))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_nobody_can_vote_for_does_not_stand() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let [a, b, c] = three_voters(&router, &dir).await;
    a.write(Batch::new().put(THINGS, "k", vec![1])).await.unwrap();
    let term = a.raft().metrics().borrow().current_term;
    a.stop_raft().await;
    let named = b
        .inner
        .successions
        .named()
        .expect("the stopping leader named a successor");
    let (successor, (other, other_name)) = match named.successor == b.raft_id() {
        true => (&b, (&c, "c")),
        false => (&c, (&b, "b")),
    };
    // The other follower stops at the same moment as the leader (cut off both ways, as good
    // as stopped, well before the successor stands): nobody is left to vote for it.
    router.cut.lock().unwrap().insert(other_name.into());
    other.transport().set(Arc::new(Router::default()));
    // It asks before it stands, and nobody would vote for it.
    let mut pre_votes = successor.pre_votes();
    tokio::time::timeout(Duration::from_secs(10), pre_votes.wait_for(|p| p.lost >= 1))
        .await
        .expect("it asked before standing")
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while successor.inner.successions.standing() {
        assert!(tokio::time::Instant::now() < deadline, "it kept standing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let now = successor.raft().metrics().borrow().current_term;
    assert_eq!(now, term, "it stood with nobody to vote for it");
}

#[test]
fn the_successor_is_the_voter_known_to_hold_the_most_of_the_log() {
    use super::super::elect::successor;
    assert_eq!(successor(1, &[1, 2, 3], &[(2, Some(40)), (3, Some(41))]), Some(3));
    assert_eq!(successor(1, &[1, 2, 3], &[(2, Some(41)), (3, None)]), Some(2));
    // A tie goes to the lower id, the same on every run.
    assert_eq!(successor(1, &[1, 2, 3], &[(2, Some(41)), (3, Some(41))]), Some(2));
    // A learner is never named; a leader alone names nobody.
    assert_eq!(successor(1, &[1, 3], &[(2, Some(50)), (3, Some(41))]), Some(3));
    assert_eq!(successor(1, &[1], &[(2, Some(50))]), None);
}

//! Members admitted to the log: one at a time, and each receiving the whole state (from
//! the log, or a snapshot once the log was purged).

use std::sync::Arc;

use serde_json::json;

use super::{caught_up, events_of, fast, has_events, member, Router, THINGS};
use crate::events::NewEvent;
use crate::store::{Batch, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_member_wrote_alone_reaches_every_member_it_admits_later() {
    let router = Arc::new(Router::default());
    let dir = tempfile::tempdir().unwrap();
    let a = member(&router, &dir, "a", super::super::Start::Alone);
    let made = |key: &str, value: u8| {
        Batch::new()
            .put(THINGS, key, vec![value])
            .event(NewEvent::new("THING_MADE", Some(key.into()), json!(null)))
    };
    a.write(made("alone", 1)).await.unwrap();
    let b = member(&router, &dir, "b", super::super::Start::Join);
    a.admit(b.raft_id(), "b", 3).await.unwrap();
    a.write(made("two", 2)).await.unwrap();
    let c = member(&router, &dir, "c", super::super::Start::Join);
    a.admit(c.raft_id(), "c", 3).await.unwrap();
    a.write(made("three", 3)).await.unwrap();
    let expected = events_of(&a).await;
    assert_eq!(expected.len(), 3, "{expected:?}");
    for member in [&b, &c] {
        has_events(member, &expected).await;
        for (key, value) in [("alone", 1), ("two", 2), ("three", 3)] {
            assert_eq!(member.get(THINGS, key).await.unwrap(), Some(vec![value]), "{key}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_counts_as_a_voter_only_once_it_holds_about_all_the_log() {
    let router = Arc::new(Router::default());
    let dir = tempfile::tempdir().unwrap();
    let a = member(&router, &dir, "a", super::super::Start::Alone);
    let c = member(&router, &dir, "c", super::super::Start::Join);
    a.admit(c.raft_id(), "c", 3).await.unwrap();
    for i in 0..300u32 {
        a.write(Batch::new().put(THINGS, format!("k{i}"), vec![1]))
            .await
            .unwrap();
    }
    // b takes its appends slowly (a busy machine): 300 entries are 19 appends of 16. With
    // a and c voting, the change that makes it a voter commits without it.
    router
        .slow
        .lock()
        .unwrap()
        .insert("b".into(), std::time::Duration::from_millis(20));
    let b = member(&router, &dir, "b", super::super::Start::Join);
    assert_eq!(a.admit(b.raft_id(), "b", 3).await.unwrap(), super::super::Role::Voter);
    // Counted once it held the log to within a few appends (the two membership changes
    // came after, and its own count may trail a moment), not while it held nothing.
    let (last, held) = (
        super::last_log(&a),
        b.raft().metrics().borrow().last_log_index.unwrap_or(0),
    );
    assert!(held + 100 >= last, "b became a voter holding {held} of {last} entries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_joining_at_once_are_both_admitted_as_voters() {
    let router = Arc::new(Router::default());
    let dir = tempfile::tempdir().unwrap();
    let a = member(&router, &dir, "a", super::super::Start::Alone);
    a.write(Batch::new().put(THINGS, "k", vec![1])).await.unwrap();
    let b = member(&router, &dir, "b", super::super::Start::Join);
    let c = member(&router, &dir, "c", super::super::Start::Join);
    let (to_b, to_c) = futures::join!(a.admit(b.raft_id(), "b", 3), a.admit(c.raft_id(), "c", 3));
    assert_eq!(to_b.unwrap(), super::super::Role::Voter);
    assert_eq!(to_c.unwrap(), super::super::Role::Voter);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_dies_while_it_is_admitted_can_be_removed_at_once_which_ends_its_admission() {
    // More entries than a member may lack and count as caught up: the admission waits.
    dies_while_admitted(100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_took_an_append_is_not_caught_up_however_short_the_log() {
    // Fewer: it was counted caught up at once, holding nothing, and made a voter.
    dies_while_admitted(0).await;
}

/// d, joining a, b and c after `writes` more writes, is cut off from the start: admitted
/// as a learner, removed, and answered that it was.
async fn dies_while_admitted(writes: u32) {
    let router = Arc::new(Router::default());
    let dir = tempfile::tempdir().unwrap();
    let [a, _b, _c] = super::three_voters(&router, &dir).await;
    for i in 0..writes {
        a.write(Batch::new().put(THINGS, format!("k{i}"), vec![1]))
            .await
            .unwrap();
    }
    // d is added as a learner but nothing reaches it: it never catches up.
    router.cut.lock().unwrap().insert("d".into());
    let d = member(&router, &dir, "d", super::super::Start::Join);
    let admitting = tokio::spawn({
        let (a, id) = (a.clone(), d.raft_id());
        async move { a.admit(id, "d", 3).await }
    });
    let mut metrics = a.raft().metrics();
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while metrics
            .borrow_and_update()
            .membership_config
            .membership()
            .get_node(&d.raft_id())
            .is_none()
        {
            metrics.changed().await.unwrap();
        }
    })
    .await
    .expect("d added as a learner");
    // Removed while its admission waits for it: at once (it waited for the admission's
    // minute, which held every change of the membership back), and the admission ends.
    let removed = tokio::time::timeout(std::time::Duration::from_secs(10), a.remove_member("d", 3)).await;
    assert_eq!(
        removed.expect("removed without waiting for the admission").unwrap(),
        None
    );
    let admitted = tokio::time::timeout(std::time::Duration::from_secs(10), admitting)
        .await
        .expect("the admission ended")
        .unwrap();
    assert!(
        matches!(&admitted, Err(crate::store::StoreError::Rejected(why)) if why.contains("removed")),
        "{admitted:?}"
    );
    assert!(a.status().members.iter().all(|m| m.name != "d"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_admitted_after_the_log_was_purged_catches_up_from_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let a = member(&router, &dir, "a", super::super::Start::Alone);
    // Two members, so that every write is an entry of the log.
    let b = member(&router, &dir, "b", super::super::Start::Join);
    a.admit(b.raft_id(), "b", 3).await.unwrap();
    for i in 0..50u8 {
        a.write(
            Batch::new()
                .put(THINGS, format!("k{i:02}"), vec![i])
                .event(NewEvent::new("THING", Some(format!("k{i:02}")), json!({ "i": i }))),
        )
        .await
        .unwrap();
    }
    let index = a.raft().metrics().borrow().last_applied.map(|id| id.index).unwrap();
    a.raft().trigger().snapshot().await.unwrap();
    let wait = || a.raft().wait(Some(std::time::Duration::from_secs(10)));
    wait()
        .metrics(|m| m.snapshot.map(|s| s.index) >= Some(index), "snapshot built")
        .await
        .unwrap();
    a.raft().trigger().purge_log(index).await.unwrap();
    wait()
        .metrics(|m| m.purged.map(|p| p.index) >= Some(index), "log purged")
        .await
        .unwrap();
    let c = member(&router, &dir, "c", super::super::Start::Join);
    assert_eq!(a.admit(c.raft_id(), "c", 3).await.unwrap(), super::super::Role::Voter);
    caught_up(&c, index).await;
    assert_eq!(c.get(THINGS, "k42").await.unwrap(), Some(vec![42]));
    let events = c.events_after(0, 1000).await.unwrap();
    assert_eq!(events.len(), 50);
    assert_eq!(events[49].data, json!({ "i": 49 }));
    // The kind and subject indexes came with it.
    assert_eq!(c.events_of_kinds(0, vec!["THING".into()], 100).await.unwrap().len(), 50);
    let about = c
        .events_about("k42".into(), crate::store::Window::Last, None, 10)
        .await
        .unwrap();
    assert_eq!(about.len(), 1);
    assert_eq!(about[0].data, json!({ "i": 42 }));
    // And they go on as one: a write on the new member is applied on every one.
    let seqs = c
        .write(Batch::new().event(NewEvent::new("LATER", None, json!(null))))
        .await
        .unwrap();
    assert_eq!(seqs, vec![51]);
    has_events(&b, &events_of(&c).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarted_after_its_log_was_purged_still_hands_a_late_member_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let a = member(&router, &dir, "a", super::super::Start::Alone);
    for i in 0..20u8 {
        a.write(Batch::new().put(THINGS, format!("k{i:02}"), vec![i]))
            .await
            .unwrap();
    }
    a.compact().await.unwrap();
    // Restarted, it holds no snapshot any more (a start empties its snapshots) and the log is purged: openraft
    // rebuilds one at start (storage/helper.rs), which is what the late member receives.
    router.stores.lock().unwrap().remove("a");
    drop(a);
    let a = loop {
        let options = crate::store::StoreOptions {
            identity: super::super::Identity {
                name: "a".into(),
                timing: fast(),
                start: super::super::Start::Alone,
            },
            ..Default::default()
        };
        match Store::open_with(&dir.path().join("a"), options) {
            Ok(s) => break s,
            Err(crate::store::StoreError::Locked) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            Err(e) => panic!("{e}"),
        }
    };
    a.transport().set(router.clone());
    router.stores.lock().unwrap().insert("a".into(), a.clone());
    let b = member(&router, &dir, "b", super::super::Start::Join);
    assert_eq!(a.admit(b.raft_id(), "b", 3).await.unwrap(), super::super::Role::Voter);
    assert_eq!(b.get(THINGS, "k07").await.unwrap(), Some(vec![7]));
    assert_eq!(b.get(THINGS, "k19").await.unwrap(), Some(vec![19]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_started_afresh_under_a_former_members_name_is_refused_its_messages() {
    let router = Arc::new(Router::default());
    let dir = tempfile::tempdir().unwrap();
    let [a, b, c] = super::three_voters(&router, &dir).await;
    for i in 0..3u8 {
        a.write(Batch::new().put(THINGS, format!("k{i}"), vec![i]))
            .await
            .unwrap();
    }
    caught_up(&c, super::last_log(&a)).await;
    // c's disk is lost: a store of that name starts again, empty, with a new Raft id, and
    // the leader's messages for the old c reach it by name.
    c.transport().set(Arc::new(Router::default()));
    let elsewhere = tempfile::tempdir().unwrap();
    let again = member(&router, &elsewhere, "c", super::super::Start::Join);
    assert_ne!(again.raft_id(), c.raft_id());
    // The leader goes on with b (before, its Raft core stopped: "follower log reversion is
    // not allowed"), and the new c holds nothing of the old one's log.
    for i in 3..6u8 {
        a.write(Batch::new().put(THINGS, format!("k{i}"), vec![i]))
            .await
            .unwrap();
    }
    caught_up(&b, super::last_log(&a)).await;
    assert_eq!(again.raft().metrics().borrow().last_log_index, None);
    assert!(a.raft().metrics().borrow().running_state.is_ok());
}

#[test]
fn a_request_is_read_with_or_without_the_member_it_is_for_after_it() {
    let vote = openraft::raft::VoteRequest::new(openraft::Vote::new(3, 7), None);
    let alone = crate::codec::encode(&vote).unwrap();
    let mut addressed = alone.clone();
    addressed.extend(crate::codec::encode(&42u64).unwrap());
    let (read, to) = super::super::network::addressed::<openraft::raft::VoteRequest<u64>>(&alone).unwrap();
    assert_eq!((read, to), (vote.clone(), None));
    let (read, to) = super::super::network::addressed::<openraft::raft::VoteRequest<u64>>(&addressed).unwrap();
    assert_eq!((read, to), (vote.clone(), Some(42)));
    // A release before this one reads the request and leaves what follows.
    let earlier: openraft::raft::VoteRequest<u64> = crate::codec::decode(&addressed).unwrap();
    assert_eq!(earlier, vote);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_forwarded_by_a_member_of_a_cluster_recovered_without_it_is_refused_as_not_written() {
    let router = Arc::new(Router::default());
    let dir = tempfile::tempdir().unwrap();
    let [a, b, _c] = super::three_voters(&router, &dir).await;
    // What `troupe recover` leaves on the survivor a: b's Raft id among those it hears none of.
    let forgotten = crate::codec::encode(&vec![b.raft_id()]).unwrap();
    a.write(Batch::new().put(crate::store::META, crate::store::raft::FORGOTTEN_IDS, forgotten))
        .await
        .unwrap();
    caught_up(&b, super::last_log(&a)).await;
    // b tries again while a leads, and is told why once its wait for another leader is over.
    let refused = b.write(Batch::new().put(THINGS, "k", vec![1])).await.unwrap_err();
    let said = refused.to_string();
    assert!(
        matches!(refused, crate::store::StoreError::Rejected(_)) && said.contains("must join afresh"),
        "{refused:?}"
    );
    assert!(!said.contains("may still be applied"), "{said}");
    assert_eq!(a.get(THINGS, "k").await.unwrap(), None);
}

//! A follower's groups in flight together (see `store::writer::flight`): sent without
//! waiting for the ones before them, and applied in the order they were taken even when one
//! is lost on the way.

use std::sync::Arc;

use serde_json::json;

use super::super::Start;
use super::{fast, has_events, member, member_with, three_voters, Parked, Router};
use crate::events::NewEvent;
use crate::store::{Batch, Store, Ticket};

fn event(kind: &str) -> Batch {
    Batch::new().event(NewEvent::new(kind, None, json!(null)))
}

/// Writes FIRST, then SECOND, on `follower`, while the router holds every forwarded group;
/// both tickets, and the groups held, in the order they came. With one group at a time,
/// the second would wait for the first's answer, held here.
async fn two_groups_held(router: &Router, follower: &Store) -> (Ticket, Ticket, Vec<Parked>) {
    router.hold();
    let first = follower.submit(event("FIRST"));
    router.parked_at_least(1).await;
    let second = follower.submit(event("SECOND"));
    router.parked_at_least(2).await;
    (first, second, router.release())
}

/// Writes FIRST on `follower` while the router holds forwarded groups; its ticket, and its
/// group held on the way (the router holds no more).
async fn first_held(router: &Router, follower: &Store) -> (Ticket, Parked) {
    router.hold();
    let first = follower.submit(event("FIRST"));
    router.parked_at_least(1).await;
    let parked = router.release().pop().unwrap();
    (first, parked)
}

/// Both writes are acknowledged, and every member applied FIRST before SECOND.
async fn applied_in_order(first: Ticket, second: Ticket, members: &[Store]) {
    assert_eq!(first.durable().await.unwrap(), vec![1]);
    assert_eq!(second.durable().await.unwrap(), vec![2]);
    let expected = [(1, "FIRST".to_owned()), (2, "SECOND".to_owned())];
    for store in members {
        has_events(store, &expected).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_sends_its_next_group_while_an_earlier_one_is_on_its_way() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let members = three_voters(&router, &dir).await;
    let (first, second, parked) = two_groups_held(&router, &members[1]).await;
    for group in parked {
        router.deliver(group).await;
    }
    applied_in_order(first, second, &members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_lost_on_the_way_applies_before_the_groups_sent_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let members = three_voters(&router, &dir).await;
    let (first, second, parked) = two_groups_held(&router, &members[1]).await;
    let mut parked = parked.into_iter();
    let (lost, behind) = (parked.next().unwrap(), parked.next().unwrap());
    // The link drops the first group (it never left b); the second reaches the leader.
    let _ = lost.answer.send(Err(super::super::network::SendError::NotSent(
        "dropped on the way".into(),
    )));
    router.deliver(behind).await;
    // The leader refused the second (the first was missing); b sent both again, in order.
    applied_in_order(first, second, &members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_behind_a_group_sent_again_is_answered_only_once_that_group_landed() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    // b's writer says when it takes a flush (an empty batch), through its fault hook.
    let (took, mut taken) = tokio::sync::mpsc::unbounded_channel();
    let hook: crate::store::FaultHook = Arc::new(move |batch: &Batch| {
        if batch.is_empty() {
            let _ = took.send(());
        }
        None
    });
    let a = member(&router, &dir, "a", Start::Alone);
    let b = member_with(&router, &dir, "b", Start::Join, fast(), Some(hook));
    let c = member(&router, &dir, "c", Start::Join);
    a.admit(b.raft_id(), "b", 3).await.unwrap();
    a.admit(c.raft_id(), "c", 3).await.unwrap();
    let b = &b;
    router.hold();
    let first = b.submit(event("FIRST"));
    router.parked_at_least(1).await;
    while taken.try_recv().is_ok() {}
    // A flush taken while FIRST is on its way: "everything handed over so far is durable".
    let mut flushed = Box::pin(b.flush());
    assert!(futures::poll!(&mut flushed).is_pending());
    taken.recv().await.unwrap();
    // The link drops FIRST (it never left b): b sends it again once every group landed.
    let lost = router.release().pop().unwrap();
    router.hold();
    let _ = lost.answer.send(Err(super::super::network::SendError::NotSent(
        "dropped on the way".into(),
    )));
    router.parked_at_least(2).await;
    assert!(
        futures::poll!(&mut flushed).is_pending(),
        "the flush was answered while FIRST, taken before it, was still to be sent again"
    );
    let again = router.release().pop().unwrap();
    router.deliver(again).await;
    flushed.await.unwrap();
    assert!(super::events_of(b).await.contains(&(1, "FIRST".to_owned())));
    assert_eq!(first.durable().await.unwrap(), vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_after_a_write_of_unknown_outcome_goes_through_the_log_which_settles_it() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let members = three_voters(&router, &dir).await;
    let b = &members[1];
    // FIRST reaches the leader, which commits it with c, but its answer is lost: b cannot
    // know. (Cut off from the leader's appends meanwhile, b cannot have applied FIRST
    // either, which would answer it.)
    let (first, parked) = first_held(&router, b).await;
    router.hold();
    router.cut.lock().unwrap().insert("b".into());
    let leader = router.stores.lock().unwrap().get(&parked.to).cloned().unwrap();
    super::super::serve(&leader, super::super::RpcKind::Propose, &parked.request)
        .await
        .unwrap();
    let _ = parked.answer.send(Err(super::super::network::SendError::Lost(
        "the answer was lost".into(),
    )));
    assert!(first.durable().await.is_err(), "b cannot know how FIRST fared");
    router.cut.lock().unwrap().remove("b");
    // A flush now goes through the log: once its own entry commits, FIRST is applied here
    // (it is in the log before it) or never will be.
    let mut flushed = Box::pin(b.flush());
    assert!(futures::poll!(&mut flushed).is_pending(), "answered at once");
    router.parked_at_least(2).await;
    let barrier = router.release().pop().unwrap();
    router.deliver(barrier).await;
    flushed.await.unwrap();
    assert!(
        super::events_of(b).await.contains(&(1, "FIRST".to_owned())),
        "the flush answered before FIRST, committed before it, was applied here"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_answers_its_write_once_it_applied_it_without_waiting_for_the_leaders_answer() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let members = three_voters(&router, &dir).await;
    let b = &members[1];
    let (first, parked) = first_held(&router, b).await;
    // The leader takes the group and commits it, but its answer never reaches b (kept
    // unsent: b's forward neither fails nor returns).
    let leader = router.stores.lock().unwrap().get(&parked.to).cloned().unwrap();
    super::super::serve(&leader, super::super::RpcKind::Propose, &parked.request)
        .await
        .unwrap();
    let index = super::last_log(&leader);
    let _unanswered = parked.answer;
    // b applies the entry when it hears of the commit, and that answers the write: within
    // the leader's heartbeats, not at the forward's 10 s limit.
    let durable = tokio::time::timeout(std::time::Duration::from_secs(5), first.durable()).await;
    assert_eq!(durable.expect("answered from b's own apply").unwrap(), vec![1]);
    // What a mutation's answer carries as its commit index already holds the write.
    assert!(b.applied_index() >= index, "{} < {index}", b.applied_index());
    assert!(super::events_of(b).await.contains(&(1, "FIRST".to_owned())));
    assert_eq!(b.inner.tables.forwarded.open(), 0, "the wait was closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_leader_stopped_before_committing_goes_to_the_next_leader_once() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let members = three_voters(&router, &dir).await;
    let (b, c) = (&members[1], &members[2]);
    let (first, parked) = first_held(&router, b).await;
    // The leader stops (a node's graceful stop) as b's group reaches it: it answers that its
    // log stopped, without knowing whether the group is in it (here it is not). b and c
    // elect a leader of a later term.
    let leader = router.stores.lock().unwrap().get(&parked.to).cloned().unwrap();
    leader.stop_raft().await;
    router.deliver(parked).await;
    // Once b applied an entry of the later term without FIRST, FIRST is surely not written:
    // it goes to the new leader, and is written once. It used to fail as refused (a caller's
    // INVALID_INPUT) though nothing was wrong with it.
    let durable = first.durable().await;
    assert_eq!(durable.expect("written through the next leader"), vec![1]);
    let expected = [(1, "FIRST".to_owned())];
    for store in [b, c] {
        has_events(store, &expected).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_write_whose_answer_was_lost_is_answered_once_it_applies_here() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let members = three_voters(&router, &dir).await;
    let b = &members[1];
    let (first, parked) = first_held(&router, b).await;
    // The link to the leader closes with the group on its way (the leader's node stops):
    // b hears that no answer will come before the leader even takes the group...
    let _ = parked
        .answer
        .send(Err(super::super::network::SendError::Lost("the link closed".into())));
    // ...which it then commits. b learns it when the entry applies here, and that answers
    // the write; it used to fail at once with "it may still be applied".
    let leader = router.stores.lock().unwrap().get(&parked.to).cloned().unwrap();
    super::super::serve(&leader, super::super::RpcKind::Propose, &parked.request)
        .await
        .unwrap();
    assert_eq!(first.durable().await.expect("answered by its apply here"), vec![1]);
    has_events(b, &[(1, "FIRST".to_owned())]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_of_unknown_outcome_the_leader_never_took_is_written_once_after_a_barrier() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let members = three_voters(&router, &dir).await;
    let b = &members[1];
    // The link breaks with FIRST on its way: no answer, and the leader never took it.
    let (first, lost) = first_held(&router, b).await;
    let _ = lost
        .answer
        .send(Err(super::super::network::SendError::Lost("the link closed".into())));
    // b cannot know. It sends an empty group first in a new run; once that is applied, FIRST
    // can no longer apply from its old run, and b did not apply it: it goes again, and is
    // written once. It used to fail with "it may still be applied".
    assert_eq!(first.durable().await.expect("settled and written"), vec![1]);
    for store in &members {
        has_events(store, &[(1, "FIRST".to_owned())]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_forwarded_to_a_leader_that_went_silent_goes_to_the_next_leader_once_it_leads() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let [a, b, c] = three_voters(&router, &dir).await;
    let (first, parked) = first_held(&router, &b).await;
    // The leader goes silent with b's group in its hands, never answering (a frozen
    // process): nobody reaches it and it reaches nobody.
    router.cut.lock().unwrap().insert("a".into());
    a.transport().set(Arc::new(Router::default()));
    let _unanswered = parked.answer;
    // b and c elect a leader of a later term. Once b applied that leader's first entry,
    // FIRST (which a never committed) is surely not written: it goes to the new leader, and
    // is written once, within the election's time. It used to wait out the forward's 10 s.
    let durable = tokio::time::timeout(std::time::Duration::from_secs(6), first.durable()).await;
    assert_eq!(durable.expect("written through the next leader").unwrap(), vec![1]);
    for store in [&b, &c] {
        has_events(store, &[(1, "FIRST".to_owned())]).await;
    }
}

/// A member back from a cut far behind applies its backlog before its own write, which the
/// others committed at once: the write is answered once it is applied here, for as long as
/// this member applies entries. It was answered "not yet applied here" (or "may still be
/// applied") once a fixed time had passed: a member restarted 16 s behind logged it for
/// each of its writes while it caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_forwarded_by_a_member_catching_up_is_answered_once_applied_however_long_the_backlog_takes() {
    let router = Arc::new(Router::default());
    let dir = tempfile::tempdir().unwrap();
    let a = member(&router, &dir, "a", Start::Alone);
    let b = member(&router, &dir, "b", Start::Join);
    let within = std::time::Duration::from_millis(300);
    let timing = super::super::Timing {
        forward_within: within,
        ..fast()
    };
    let c = member_with(&router, &dir, "c", Start::Join, timing, None);
    a.admit(b.raft_id(), "b", 3).await.unwrap();
    a.admit(c.raft_id(), "c", 3).await.unwrap();
    router.cut.lock().unwrap().insert("c".into());
    for i in 0..600u32 {
        a.write(event(&format!("E{i}"))).await.unwrap();
    }
    // c takes its appends slowly (16 entries each): its backlog takes over a second, each
    // append well within `within`.
    router
        .slow
        .lock()
        .unwrap()
        .insert("c".into(), std::time::Duration::from_millis(20));
    router.cut.lock().unwrap().remove("c");
    let started = std::time::Instant::now();
    let written = c.write(event("MINE")).await;
    assert!(written.is_ok(), "{written:?} after {:?}", started.elapsed());
    // Answered once applied here, after the whole backlog: longer than `within`.
    let events = c.events_after(0, 1000).await.unwrap();
    assert_eq!(events.last().map(|e| e.kind.as_str()), Some("MINE"));
    assert!(events.len() > 600, "{}", events.len());
}

/// The leader is killed as a follower's group reaches it: the follower hears at once that
/// no answer will come (the connection reset), and the rest elect a leader. Once an entry
/// of the new leader's term applies on the follower without the group, the group is surely
/// not written and goes to the new leader at once. It waited out the whole wait for a lost
/// answer's entry (3 s after the kill, where the new leader was elected within 1.1 s: the
/// first write sent to a cluster of three right after its leader's kill took 3.1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lost_with_its_leader_goes_to_the_next_leader_once_that_ones_entry_applies() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let members = three_voters(&router, &dir).await;
    let (a, b) = (&members[0], &members[1]);
    let term = b.raft().metrics().borrow().current_term;
    let (first, lost) = first_held(&router, b).await;
    assert_eq!(lost.to, "a", "the group went to the leader");
    // a is gone both ways, and b hears that the group's answer is lost.
    router.cut.lock().unwrap().insert("a".into());
    router.stores.lock().unwrap().remove("a");
    a.transport().set(Arc::new(Router::default()));
    let _ = lost.answer.send(Err(super::super::network::SendError::Lost(
        "connection reset by peer".into(),
    )));
    b.raft()
        .wait(Some(std::time::Duration::from_secs(20)))
        .metrics(
            |m| m.last_applied.is_some_and(|l| l.leader_id.term > term),
            "the new leader's entry applied on b",
        )
        .await
        .unwrap();
    let applied = tokio::time::Instant::now();
    assert_eq!(first.durable().await.expect("written through the next leader"), vec![1]);
    // Bounded because that is the change: sent again as the new leader's entry applies
    // here, not once the wait for a lost answer's entry (3 s from the loss) is over.
    let waited = applied.elapsed();
    assert!(
        waited < std::time::Duration::from_secs(1),
        "answered {waited:?} after the new leader's entry applied"
    );
    has_events(b, &[(1, "FIRST".to_owned())]).await;
}

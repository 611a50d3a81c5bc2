//! A follower's groups in flight together (see `store::writer::flight`): sent without
//! waiting for the ones before them, and applied in the order they were taken even when one
//! is lost on the way.

use std::sync::Arc;

use serde_json::json;

use super::{has_events, three_voters, Parked, Router};
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

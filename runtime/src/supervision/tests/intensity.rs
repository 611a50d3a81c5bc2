//! Restart intensity: a supervisor's own, a child's own, and a child's second chance.

use std::sync::Arc;
use std::time::Duration;

use ractor::Actor;

use super::*;

#[tokio::test]
async fn past_its_intensity_a_supervisor_stops_its_children_and_fails() {
    let mut h = Harness::new();
    let args = h.args(Strategy::OneForOne, Some(1), h.workers(&["a", "b"]));
    let (sup, done) = Actor::spawn(None, Supervisor, args).await.unwrap();
    let first = h.starts(2).await;
    first[0].1.cast(WorkerMsg::Fail).unwrap();
    let again = h.starts(1).await;
    again[0].1.cast(WorkerMsg::Fail).unwrap();
    tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .expect("the supervisor fails")
        .unwrap();
    assert_eq!(sup.get_status(), ractor::ActorStatus::Stopped);
    assert_eq!(
        first[1].1.get_status(),
        ractor::ActorStatus::Stopped,
        "b was stopped with it"
    );
    assert!(h.kinds_of("test").await.contains(&"SUPERVISOR_ESCALATED".to_string()));
    assert_eq!(h.kinds_of("b").await, ["WORKER_STARTED", "WORKER_STOPPED"]);
}

#[tokio::test]
async fn a_child_past_its_own_intensity_alone_is_failed_and_its_sibling_keeps_running() {
    let mut h = Harness::new();
    let mut flaky = WorkerSpec::new("flaky", &h.log);
    flaky.intensity = Some(Intensity {
        max_restarts: 2,
        window: Duration::from_secs(60),
    });
    let children: Vec<Arc<dyn ChildSpec>> = vec![Arc::new(flaky), h.workers(&["steady"]).remove(0)];
    // The supervisor itself would escalate at its first restart: the child's own budget rules.
    let args = h.args(Strategy::OneForOne, Some(0), children);
    let (sup, _) = Actor::spawn(None, Supervisor, args).await.unwrap();
    let first = h.starts(2).await;
    let mut flaky = first[0].1.clone();
    for _ in 0..2 {
        flaky.cast(WorkerMsg::Fail).unwrap();
        flaky = h.starts(1).await.remove(0).1;
    }
    flaky.cast(WorkerMsg::Fail).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let children = ractor::call!(sup, SupervisorMsg::Children).unwrap();
        if children == vec![("steady".to_string(), true)] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "children: {children:?}");
        tokio::task::yield_now().await;
    }
    assert_eq!(first[1].1.get_status(), ractor::ActorStatus::Running);
    let kinds = h.kinds_of("flaky").await;
    assert_eq!(kinds.iter().filter(|k| *k == "WORKER_FAILED").count(), 3, "{kinds:?}");
    let events = h.store.events_after(0, 10_000).await.unwrap();
    let last = events.iter().rev().find(|e| e.kind == "WORKER_FAILED").unwrap();
    assert_eq!(last.data["restarting"], false);
    assert!(last.data["reason"]
        .as_str()
        .unwrap()
        .contains("gave up after 2 restarts"));
}

#[tokio::test]
async fn a_child_given_one_more_chance_is_restarted_with_a_fresh_history_then_given_up_on() {
    let mut h = Harness::new();
    let mut flaky = WorkerSpec::new("flaky", &h.log);
    flaky.intensity = Some(Intensity {
        max_restarts: 1,
        window: Duration::from_secs(60),
    });
    flaky.chances = 1.into();
    let args = h.args(Strategy::OneForOne, None, vec![Arc::new(flaky)]);
    let (sup, _) = Actor::spawn(None, Supervisor, args).await.unwrap();
    let mut flaky = h.starts(1).await.remove(0).1;
    // Restart, then past the intensity the second chance, then one restart in the fresh
    // history, then given up on.
    for _ in 0..3 {
        flaky.cast(WorkerMsg::Fail).unwrap();
        flaky = h.starts(1).await.remove(0).1;
    }
    flaky.cast(WorkerMsg::Fail).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ractor::call!(sup, SupervisorMsg::Children).unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the child was never given up on"
        );
        tokio::task::yield_now().await;
    }
    let kinds = h.kinds_of("flaky").await;
    assert_eq!(kinds.iter().filter(|k| *k == "WORKER_FAILED").count(), 4, "{kinds:?}");
}

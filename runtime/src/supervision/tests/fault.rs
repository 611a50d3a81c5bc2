//! Injected crashes and the watchdog's kill: predicted from the owner's ladder, refused past
//! its intensity unless allowed, routed to the supervisor that owns the child, and failed.

use std::time::Duration;

use ractor::Actor;

use super::*;
use crate::supervision::supervisor::CrashReply;

fn crash(owner: &str, child: &str, dry_run: bool, allow_escalation: bool) -> impl FnOnce(CrashReply) -> SupervisorMsg {
    let request = CrashRequest {
        owner: owner.into(),
        child: child.into(),
        dry_run,
        allow_escalation,
        kill: false,
    };
    move |reply| SupervisorMsg::Crash(request, reply)
}

#[tokio::test]
async fn an_injected_crash_is_a_failure_its_supervisor_predicted_from_its_strategy() {
    let mut h = Harness::new();
    let args = h.args(Strategy::RestForOne, Some(5), h.workers(&["a", "b", "c"]));
    let (sup, _) = Actor::spawn(None, Supervisor, args).await.unwrap();
    let first = h.starts(3).await;
    // A dry run predicts and touches nothing.
    let plan = ractor::call!(sup, crash("test", "b", true, false))
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(plan.restart, ["b", "c"]);
    assert!(!plan.escalate);
    assert!(h.started.try_recv().is_err(), "a dry run restarts nothing");
    // The crash itself: b fails (as a panic would) and b and c start again, not a.
    let plan = ractor::call!(sup, crash("test", "b", false, false))
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(plan.restart, ["b", "c"]);
    let again = ids(&h.starts(2).await);
    assert_eq!(again.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["b", "c"]);
    assert_ne!(again[0].1, first[1].1.get_id(), "b is a new actor");
    let kinds = h.kinds_of("b").await;
    assert!(kinds.contains(&"WORKER_FAILED".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"WORKER_RESTARTED".to_owned()), "{kinds:?}");
    assert!(!h.kinds_of("a").await.contains(&"WORKER_RESTARTED".to_owned()));
}

#[tokio::test]
async fn a_crash_that_would_escalate_is_refused_unless_allowed_and_one_deeper_is_routed() {
    let mut h = Harness::new();
    let mut children = h.workers(&["a"]);
    children.push(Nested::child(h.inner(Some(Intensity {
        max_restarts: 0,
        window: Duration::from_secs(60),
    }))));
    let (sup, _) = Actor::spawn(None, Supervisor, h.args(Strategy::OneForOne, Some(3), children))
        .await
        .unwrap();
    h.starts(2).await;
    let refused = ractor::call!(sup, crash("inner", "leaf", false, false)).unwrap();
    assert!(refused.unwrap_err().contains("restart intensity"));
    assert!(h.started.try_recv().is_err(), "nothing was crashed");
    let nobody = ractor::call!(sup, crash("elsewhere", "leaf", true, false)).unwrap();
    assert_eq!(nobody, Ok(None));
    // Allowed: inner escalates, and its parent (one_for_one) restarts it with its leaf.
    let plan = ractor::call!(sup, crash("inner", "leaf", false, true))
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(plan.escalate);
    assert_eq!(h.starts(1).await[0].0, "leaf");
    assert!(h.kinds_of("inner").await.contains(&"SUPERVISOR_RESTARTED".to_owned()));
}

#[tokio::test]
async fn a_hung_child_killed_for_the_watchdog_is_a_failure_found_without_naming_its_supervisor() {
    let mut h = Harness::new();
    let mut children = h.workers(&["a"]);
    children.push(Nested::child(h.inner(None)));
    let (sup, _) = Actor::spawn(None, Supervisor, h.args(Strategy::OneForOne, Some(3), children))
        .await
        .unwrap();
    let first = h.starts(2).await;
    let leaf = first.iter().find(|(id, _)| id == "leaf").unwrap().1.clone();
    leaf.cast(WorkerMsg::Block).unwrap();
    let request = CrashRequest {
        owner: String::new(),
        child: "leaf".into(),
        dry_run: false,
        allow_escalation: true,
        kill: true,
    };
    let plan = ractor::call!(sup, |r| SupervisorMsg::Crash(request, r))
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(plan.supervisor, "inner");
    let again = h.starts(1).await;
    assert_eq!(again[0].0, "leaf");
    assert_ne!(again[0].1.get_id(), leaf.get_id());
    h.store.flush().await.unwrap();
    let failed = h
        .store
        .events_after(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.kind == "WORKER_FAILED" && e.subject.as_deref() == Some("leaf"))
        .expect("the kill is recorded as a failure");
    assert_eq!(failed.data["reason"], UNRESPONSIVE);
}

fn reach(child: &str, reach: Reach) -> impl FnOnce(crate::supervision::supervisor::ReachReply) -> SupervisorMsg {
    let request = ReachRequest {
        owner: String::new(),
        child: child.into(),
        reach,
    };
    move |reply| SupervisorMsg::Reach(request, reply)
}

/// A one_for_one supervisor of a worker `a` and the nested supervisor `inner` (with its
/// worker `leaf`), both started; the harness kept for its log, and the starts.
async fn worker_and_nested() -> (Harness, ActorRef<SupervisorMsg>, Vec<Started>) {
    let mut h = Harness::new();
    let mut children = h.workers(&["a"]);
    children.push(Nested::child(h.inner(None)));
    let (sup, _) = Actor::spawn(None, Supervisor, h.args(Strategy::OneForOne, Some(3), children))
        .await
        .unwrap();
    let started = h.starts(2).await;
    (h, sup, started)
}

/// Holds `inner`'s loop until `release` turns true.
async fn hold_inner(sup: &ActorRef<SupervisorMsg>, release: tokio::sync::watch::Receiver<bool>) {
    let (held, mut is_held) = tokio::sync::mpsc::unbounded_channel();
    let hold = reach("inner", Reach::Hold { release, held });
    assert_eq!(ractor::call!(sup, hold).unwrap(), Ok(Some(true)));
    is_held.recv().await.expect("the loop is held");
}

#[tokio::test]
async fn a_held_nested_supervisor_misses_its_ping_until_released_and_a_worker_has_no_ping() {
    let (_h, sup, _) = worker_and_nested().await;
    let ping = || reach("inner", Reach::Ping(Duration::from_millis(200)));
    assert_eq!(ractor::call!(sup, ping()).unwrap(), Ok(Some(true)));
    // A worker's kind has no ping: it says so, it is not counted as a miss.
    let worker = reach("a", Reach::Ping(Duration::from_millis(200)));
    assert!(ractor::call!(sup, worker).unwrap().unwrap_err().contains("no ping"));

    let (release, released) = tokio::sync::watch::channel(false);
    hold_inner(&sup, released).await;
    assert_eq!(
        ractor::call!(sup, ping()).unwrap(),
        Ok(Some(false)),
        "a held loop answers nothing"
    );
    // The held supervisor's own children are out of reach meanwhile, and say so.
    let deeper = reach("leaf", Reach::Ping(Duration::from_millis(100)));
    assert_eq!(ractor::call!(sup, deeper).unwrap(), Ok(None));
    release.send(true).unwrap();
    assert_eq!(ractor::call!(sup, ping()).unwrap(), Ok(Some(true)));
    let nobody = reach("nowhere", Reach::Ping(Duration::from_millis(100)));
    assert_eq!(ractor::call!(sup, nobody).unwrap(), Ok(None));
}

#[tokio::test]
async fn a_child_that_stops_while_it_is_pinged_is_not_a_miss() {
    let (_h, sup, started) = worker_and_nested().await;
    let worker = started.iter().find(|(name, _)| name == "a").unwrap().1.get_id();
    let inner = sup
        .get_children()
        .into_iter()
        .find(|c| c.get_id() != worker)
        .expect("the nested supervisor");
    // Held, its ping waits; stopped meanwhile (as a node that lost its lease stops its
    // work), the ping ends at once with no answer: the child is gone, not stuck.
    let (_release, released) = tokio::sync::watch::channel(false);
    hold_inner(&sup, released).await;
    let pinged = {
        let sup = sup.clone();
        tokio::spawn(async move { ractor::call!(sup, reach("inner", Reach::Ping(Duration::from_secs(30)))) })
    };
    tokio::task::yield_now().await;
    inner.kill();
    let answer = tokio::time::timeout(Duration::from_secs(10), pinged)
        .await
        .expect("answered at once, not after the ping's 30 s")
        .unwrap()
        .unwrap();
    assert_eq!(
        answer,
        Ok(None),
        "a child gone while pinged is not said to have missed its ping"
    );
}

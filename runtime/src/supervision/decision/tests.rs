use super::*;

fn ladder(strategy: Strategy, max: u32) -> RestartLadder {
    RestartLadder::new(
        strategy,
        Some(Intensity {
            max_restarts: max,
            window: Duration::from_secs(10),
        }),
        Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        },
    )
}

fn kids(policies: &[Restart]) -> Vec<ChildView> {
    policies
        .iter()
        .enumerate()
        .map(|(i, p)| ChildView {
            id: format!("c{i}"),
            restart: *p,
            running: true,
            intensity: None,
        })
        .collect()
}

#[test]
fn one_for_one_restarts_only_the_failed_child_at_once() {
    let mut l = ladder(Strategy::OneForOne, 5);
    let d = l.decide(&kids(&[Restart::Permanent; 3]), "c1", Exit::Failed, Instant::now());
    assert_eq!(
        d,
        Decision::Restart {
            stop: vec![],
            start: vec!["c1".into()],
            delay: Duration::ZERO,
            restarts: 1
        }
    );
}

#[test]
fn one_for_all_stops_siblings_in_reverse_and_restarts_all_in_order() {
    let mut l = ladder(Strategy::OneForAll, 5);
    let d = l.decide(&kids(&[Restart::Permanent; 3]), "c1", Exit::Failed, Instant::now());
    let Decision::Restart { stop, start, .. } = d else {
        panic!("expected a restart, got {d:?}")
    };
    assert_eq!(stop, vec!["c2", "c0"]);
    assert_eq!(start, vec!["c0", "c1", "c2"]);
}

#[test]
fn rest_for_one_restarts_the_child_and_those_started_after_it() {
    let mut l = ladder(Strategy::RestForOne, 5);
    let d = l.decide(&kids(&[Restart::Permanent; 4]), "c1", Exit::Failed, Instant::now());
    let Decision::Restart { stop, start, .. } = d else {
        panic!("expected a restart, got {d:?}")
    };
    assert_eq!(stop, vec!["c3", "c2"]);
    assert_eq!(start, vec!["c1", "c2", "c3"]);
}

#[test]
fn restart_policies_decide_whether_an_exit_restarts() {
    let mut l = ladder(Strategy::OneForOne, 5);
    let c = kids(&[Restart::Permanent, Restart::Transient, Restart::Temporary]);
    let now = Instant::now();
    assert!(matches!(
        l.decide(&c, "c0", Exit::Normal, now),
        Decision::Restart { .. }
    ));
    assert_eq!(l.decide(&c, "c1", Exit::Normal, now), Decision::Remove);
    assert!(matches!(
        l.decide(&c, "c1", Exit::Failed, now),
        Decision::Restart { .. }
    ));
    assert_eq!(l.decide(&c, "c2", Exit::Failed, now), Decision::Remove);
    assert_eq!(l.decide(&c, "unknown", Exit::Failed, now), Decision::Remove);
}

#[test]
fn exceeding_intensity_within_the_window_escalates() {
    let mut l = ladder(Strategy::OneForOne, 2);
    let c = kids(&[Restart::Permanent]);
    let t = Instant::now();
    assert!(matches!(
        l.decide(&c, "c0", Exit::Failed, t),
        Decision::Restart { restarts: 1, .. }
    ));
    assert!(matches!(
        l.decide(&c, "c0", Exit::Failed, t),
        Decision::Restart { restarts: 2, .. }
    ));
    assert_eq!(l.decide(&c, "c0", Exit::Failed, t), Decision::Escalate { restarts: 3 });
}

#[test]
fn restarts_older_than_the_window_are_forgotten() {
    let mut l = ladder(Strategy::OneForOne, 1);
    let c = kids(&[Restart::Permanent]);
    let t = Instant::now();
    assert!(matches!(l.decide(&c, "c0", Exit::Failed, t), Decision::Restart { .. }));
    let later = t + Duration::from_secs(11);
    assert!(matches!(
        l.decide(&c, "c0", Exit::Failed, later),
        Decision::Restart { restarts: 1, .. }
    ));
}

#[test]
fn the_first_restart_is_immediate_then_backoff_doubles_and_is_capped() {
    let b = Backoff {
        base: Duration::from_millis(100),
        max: Duration::from_millis(500),
    };
    assert_eq!(b.delay(1), Duration::ZERO);
    assert_eq!(b.delay(2), Duration::from_millis(100));
    assert_eq!(b.delay(3), Duration::from_millis(200));
    assert_eq!(b.delay(4), Duration::from_millis(400));
    assert_eq!(b.delay(5), Duration::from_millis(500));
    assert_eq!(b.delay(64), Duration::from_millis(500));
}

#[test]
fn temporary_siblings_are_not_restarted_with_the_group() {
    let mut l = ladder(Strategy::OneForAll, 5);
    let c = kids(&[Restart::Temporary, Restart::Permanent]);
    let Decision::Restart { stop, start, .. } = l.decide(&c, "c1", Exit::Failed, Instant::now()) else {
        panic!("expected a restart")
    };
    assert_eq!(stop, vec!["c0"]);
    assert_eq!(start, vec!["c1"]);
}

#[test]
fn a_child_past_its_own_intensity_is_given_up_alone_and_the_supervisor_never_escalates() {
    // The supervisor would escalate after one restart; the crash-looping child has its own
    // budget, so it is given up on instead and its sibling keeps the supervisor's budget.
    let mut l = ladder(Strategy::OneForOne, 1);
    let mut c = kids(&[Restart::Permanent, Restart::Permanent]);
    c[0].intensity = Some(Intensity {
        max_restarts: 3,
        window: Duration::from_secs(10),
    });
    let t = Instant::now();
    for n in 1..=3 {
        assert!(
            matches!(l.decide(&c, "c0", Exit::Failed, t), Decision::Restart { restarts, .. } if restarts == n),
            "restart {n}"
        );
    }
    assert_eq!(l.decide(&c, "c0", Exit::Failed, t), Decision::GiveUp { restarts: 3 });
    assert!(matches!(
        l.decide(&c, "c1", Exit::Failed, t),
        Decision::Restart { restarts: 1, .. }
    ));
    l.forget("c0");
    assert!(matches!(
        l.decide(&c, "c0", Exit::Failed, t),
        Decision::Restart { restarts: 1, .. }
    ));
}

#[test]
fn a_supervisor_without_intensity_never_escalates() {
    let mut l = RestartLadder::new(
        Strategy::OneForOne,
        None,
        Backoff {
            base: Duration::from_millis(1),
            max: Duration::from_millis(4),
        },
    );
    let c = kids(&[Restart::Permanent]);
    let t = Instant::now();
    for _ in 0..1000 {
        assert!(matches!(l.decide(&c, "c0", Exit::Failed, t), Decision::Restart { .. }));
    }
}

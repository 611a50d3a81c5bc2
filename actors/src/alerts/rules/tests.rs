use std::time::Duration;

use serde_json::json;

use super::*;

fn rule(name: &str, kinds: &[&str], severity: Severity) -> Rule {
    Rule {
        name: name.into(),
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
        labels: BTreeMap::new(),
        severity,
        channels: vec!["ops".into()],
        group_interval: Duration::from_secs(60),
    }
}

fn event(seq: u64, kind: &str, subject: &str, at: DateTime<Utc>) -> Event {
    Event {
        seq,
        kind: kind.into(),
        subject: Some(subject.into()),
        data: json!({ "reason": "boom" }),
        at,
    }
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn a_crash_loop_is_one_notice_then_one_with_the_count_of_its_repeats() {
    let mut g = Grouper::new(vec![rule("agents", &["AGENT_*"], Severity::Warning)]);
    let s = Subject::default();
    let t = t0();
    let first = g.on_event(&event(1, "AGENT_UNHEALTHY", "a1", t), &s, t);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].count, 1);
    for i in 0..4 {
        let at = t + chrono::Duration::seconds(i + 1);
        assert!(g
            .on_event(&event(2 + i as u64, "AGENT_ALERT", "a1", at), &s, at)
            .is_empty());
    }
    assert_eq!(g.next_due(), Some(t + chrono::Duration::seconds(60)));
    assert!(g.due(t + chrono::Duration::seconds(59)).is_empty());
    let folded = g.due(t + chrono::Duration::seconds(60));
    assert_eq!(folded.len(), 1);
    assert_eq!(
        (folded[0].count, folded[0].kind.as_str(), folded[0].seq),
        (4, "AGENT_ALERT", 5)
    );
    assert_eq!(folded[0].starts_at, t);
    // A quiet window closes; the next event is sent at once again.
    assert!(g.due(t + chrono::Duration::seconds(120)).is_empty());
    assert_eq!(g.next_due(), None);
    let later = t + chrono::Duration::seconds(200);
    let again = g.on_event(&event(9, "AGENT_ALERT", "a1", later), &s, later);
    assert_eq!((again.len(), again[0].starts_at), (1, t), "the alert fires since {t}");
}

#[test]
fn another_subject_is_another_group_and_a_resolving_event_ends_the_alert() {
    let mut g = Grouper::new(vec![rule("agents", &["AGENT_UNHEALTHY"], Severity::Info)]);
    let s = Subject::default();
    let t = t0();
    assert_eq!(g.on_event(&event(1, "AGENT_UNHEALTHY", "a1", t), &s, t).len(), 1);
    assert_eq!(g.on_event(&event(2, "AGENT_UNHEALTHY", "a2", t), &s, t).len(), 1);
    let healed = g.on_event(&event(3, "AGENT_HEALTHY", "a1", t), &s, t);
    assert_eq!(healed.len(), 1);
    assert_eq!(
        (healed[0].status, healed[0].group.as_str()),
        (Status::Resolved, "agents/a1")
    );
    // Resolved once: a second HEALTHY resolves nothing.
    assert!(g.on_event(&event(4, "AGENT_HEALTHY", "a1", t), &s, t).is_empty());
}

#[test]
fn the_event_that_ends_an_alert_fires_none_of_its_own_under_a_rule_that_takes_its_kind() {
    let mut g = Grouper::new(vec![rule("members", &["MEMBER_*"], Severity::Info)]);
    let s = Subject::default();
    let t = t0();
    assert_eq!(g.on_event(&event(1, "MEMBER_DOWN", "n2", t), &s, t).len(), 1);
    let back = g.on_event(&event(2, "MEMBER_UP", "n2", t), &s, t);
    let seen: Vec<(Status, &str)> = back.iter().map(|n| (n.status, n.kind.as_str())).collect();
    assert_eq!(seen, [(Status::Resolved, "MEMBER_UP")]);
    // Nothing left firing for n2: its next fall fires at once.
    let later = t + chrono::Duration::seconds(5);
    let again = g.on_event(&event(3, "MEMBER_SUSPECT", "n2", later), &s, later);
    assert_eq!((again.len(), again[0].status), (1, Status::Firing));
}

#[test]
fn a_group_taken_up_again_is_resolved_by_its_next_resolving_event_and_keeps_its_name() {
    let mut g = Grouper::new(vec![rule("down", &["AGENT_FAILED"], Severity::Info)]);
    let t = t0();
    let restored = |group: &str, rule: &str| Restored {
        group: group.into(),
        rule: rule.into(),
        kind: "AGENT_FAILED".into(),
        severity: Severity::Critical,
        subject_name: Some("agent first".into()),
        starts_at: t,
    };
    g.restore(&restored("down/a1", "down"));
    // A group whose rule is gone is not taken up.
    g.restore(&restored("gone/a2", "gone"));
    // The agent is gone from the store: the resolved notice still names it.
    let later = t + chrono::Duration::seconds(90);
    let removed = g.on_event(&event(7, "AGENT_REMOVED", "a1", later), &Subject::default(), later);
    assert_eq!(removed.len(), 1);
    let n = &removed[0];
    assert_eq!(
        (n.status, n.group.as_str(), n.subject_name.as_deref(), n.starts_at),
        (Status::Resolved, "down/a1", Some("agent first"), t)
    );
    // With the labels it fired with.
    assert_eq!((n.fired_as.as_str(), n.severity), ("AGENT_FAILED", Severity::Critical));
    assert!(g
        .on_event(&event(8, "AGENT_REMOVED", "a2", later), &Subject::default(), later)
        .is_empty());
    // Taken up with no window open: its next firing goes out at once, as of when it began.
    g.restore(&restored("down/a1", "down"));
    let again = g.on_event(&event(9, "AGENT_FAILED", "a1", later), &Subject::default(), later);
    assert_eq!((again.len(), again[0].count, again[0].starts_at), (1, 1, t));
}

fn failed(seq: u64, restarting: bool, at: DateTime<Utc>) -> Event {
    Event {
        data: json!({ "reason": "panicked", "restarting": restarting }),
        ..event(seq, "AGENT_FAILED", "a1", at)
    }
}

#[test]
fn a_failure_its_supervisor_recovers_from_is_a_warning_resolved_once_the_restart_holds() {
    let mut g = Grouper::new(vec![rule("agents", &["AGENT_*"], Severity::Warning)]);
    let s = Subject::default();
    let t = t0();
    let at = |secs: i64| t + chrono::Duration::seconds(secs);
    // The supervisor restarts it: a warning, not critical.
    let fired = g.on_event(&failed(1, true, t), &s, t);
    assert_eq!(
        (fired.len(), fired[0].severity, fired[0].status),
        (1, Severity::Warning, Status::Firing)
    );
    // The restart resolves nothing at once, and fires nothing of its own.
    assert!(g
        .on_event(&event(2, "AGENT_RESTARTED", "a1", at(1)), &s, at(1))
        .is_empty());
    assert_eq!(g.next_due(), Some(at(60)), "the window and the recovery end together");
    assert!(g.due(at(59)).is_empty());
    let resolved = g.due(at(61));
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    let n = &resolved[0];
    assert_eq!(
        (n.status, n.kind.as_str(), n.fired_as.as_str(), n.severity, n.starts_at),
        (
            Status::Resolved,
            "AGENT_RESTARTED",
            "AGENT_FAILED",
            Severity::Warning,
            t
        )
    );
    assert_eq!(g.next_due(), None, "nothing fires any more");

    // A crash loop: each restart fails again before it holds; one alert, its repeats
    // folded, and no resolved notice between them.
    let t = at(100);
    let at = |secs: i64| t + chrono::Duration::seconds(secs);
    assert_eq!(g.on_event(&failed(3, true, t), &s, t).len(), 1);
    for i in 0..3 {
        assert!(g
            .on_event(
                &event(4 + 2 * i, "AGENT_RESTARTED", "a1", at(2 * i as i64 + 1)),
                &s,
                at(2 * i as i64 + 1)
            )
            .is_empty());
        assert!(g
            .on_event(&failed(5 + 2 * i, true, at(2 * i as i64 + 2)), &s, at(2 * i as i64 + 2))
            .is_empty());
    }
    let folded = g.due(at(60));
    assert_eq!(folded.len(), 1);
    assert_eq!((folded[0].status, folded[0].count), (Status::Firing, 3));
    // Then given up on: critical, at once once the window is closed.
    let gave_up = g.on_event(&failed(20, false, at(130)), &s, at(130));
    assert_eq!((gave_up.len(), gave_up[0].severity), (1, Severity::Critical));
    // Resolved by its start, with the labels of its last firing notice.
    let started = g.on_event(&event(21, "AGENT_STARTED", "a1", at(140)), &s, at(140));
    assert_eq!(
        (started[0].status, started[0].fired_as.as_str(), started[0].severity),
        (Status::Resolved, "AGENT_FAILED", Severity::Critical)
    );
}

#[test]
fn severity_labels_and_kinds_choose_the_events() {
    let mut critical = rule("critical", &[], Severity::Critical);
    critical.labels.insert("team".into(), "ml".into());
    let t = t0();
    let ml = Subject {
        name: Some("agent upper".into()),
        labels: [("team".to_string(), "ml".to_string())].into(),
    };
    let web = Subject::default();
    assert!(matches(&critical, &event(1, "AGENT_ALERT", "a", t), &ml));
    assert!(!matches(&critical, &event(1, "AGENT_ALERT", "a", t), &web), "labels");
    assert!(
        !matches(&critical, &event(1, "AGENT_UNHEALTHY", "a", t), &ml),
        "below critical"
    );
    assert!(!matches(&critical, &event(1, "ALERT_DELIVERY_FAILED", "a", t), &ml));
    let named = rule("named", &["ALERT_DELIVERY_FAILED"], Severity::Info);
    assert!(
        matches(&named, &event(1, "ALERT_DELIVERY_FAILED", "d", t), &web),
        "named, it is taken"
    );
}

//! Progress reports: kept at once, written at most once per interval, the last one kept.

use serde_json::json;

use super::super::*;
use super::{cap_task, caps, engine, later, now0, starts};
use crate::task::{Priority, TaskState};

fn progress_events(effects: &[Effect]) -> Vec<Option<f64>> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Record(t) if t.kind == "TASK_PROGRESS" => Some(t.status.progress.as_ref()?.fraction),
            _ => None,
        })
        .collect()
}

fn wakes(effects: &[Effect]) -> Vec<tokio::time::Instant> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Wake(at) => Some(*at),
            _ => None,
        })
        .collect()
}

#[test]
fn progress_is_written_at_most_once_per_interval_and_the_last_report_is_kept() {
    let mut e = engine();
    let now = now0();
    e.agent_up("a", caps(&["echo"]), 1, 1, now);
    e.enqueue(cap_task("t", "echo", Priority::Normal), TaskStatus::queued(), now);
    let fx = e.progress("t", 1, "a", Reported::working(Some(0.1), Some("loading".into())), now);
    assert_eq!(progress_events(&fx), [Some(0.1)], "the first report goes out at once");
    // Two more within the interval: held, one wake at the interval's end.
    let fx = e.progress("t", 1, "a", Reported::working(Some(0.2), None), later(now, 100));
    assert!(progress_events(&fx).is_empty());
    let due = now.at + PROGRESS_INTERVAL;
    assert_eq!(wakes(&fx), [due]);
    let fx = e.progress(
        "t",
        1,
        "a",
        Reported::working(Some(0.3), Some("almost".into())),
        later(now, 200),
    );
    assert!(progress_events(&fx).is_empty() && wakes(&fx).is_empty());
    let shown = e.status("t").and_then(|s| s.progress.clone()).unwrap();
    assert_eq!(
        (shown.fraction, shown.note.as_deref()),
        (Some(0.3), Some("almost")),
        "kept at once"
    );
    assert!(progress_events(&e.wake(later(now, 499))).is_empty());
    assert_eq!(
        progress_events(&e.wake(later(now, 500))),
        [Some(0.3)],
        "the held report, the latest"
    );
    assert!(
        progress_events(&e.wake(later(now, 1500))).is_empty(),
        "nothing more to write"
    );
    // Once the interval has passed, a report goes out at once again.
    assert_eq!(
        progress_events(&e.progress("t", 1, "a", Reported::working(Some(2.0), None), later(now, 1100))),
        [Some(1.0)]
    );
    // The end of the task keeps its last progress.
    let fx = e.finished("t", 1, "a", Ok(json!(1)), later(now, 1200));
    let end = fx
        .iter()
        .find_map(|e| match e {
            Effect::Record(t) if t.kind == "TASK_SUCCEEDED" => t.status.progress.clone(),
            _ => None,
        })
        .unwrap();
    assert_eq!(end.fraction, Some(1.0));
}

#[test]
fn progress_of_an_attempt_that_is_not_running_is_ignored_and_a_new_attempt_starts_with_none() {
    let mut e = engine();
    let now = now0();
    e.agent_up("a", caps(&["echo"]), 1, 1, now);
    e.enqueue(cap_task("t", "echo", Priority::Normal), TaskStatus::queued(), now);
    e.progress("t", 1, "a", Reported::working(Some(0.5), None), now);
    e.finished("t", 1, "a", Err("boom".into()), now);
    assert!(
        e.progress("t", 1, "a", Reported::working(Some(0.9), None), later(now, 10))
            .is_empty(),
        "attempt 1 is over"
    );
    let fx = e.wake(later(now, 1000));
    assert_eq!(starts(&fx), [("a".to_string(), "t".to_string(), 2)]);
    assert_eq!(
        e.status("t").unwrap().progress,
        None,
        "attempt 2 has reported nothing yet"
    );
    assert!(e
        .progress("t", 1, "a", Reported::working(Some(0.9), None), later(now, 1001))
        .is_empty());
    assert!(
        e.progress("t", 2, "b", Reported::working(Some(0.9), None), later(now, 1001))
            .is_empty(),
        "not its agent"
    );
    assert_eq!(
        progress_events(&e.progress("t", 2, "a", Reported::working(Some(0.2), None), later(now, 1002))),
        [Some(0.2)]
    );
}

fn kinds(effects: &[Effect]) -> Vec<(&'static str, TaskState)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Record(t) => Some((t.kind, t.status.state)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_attempt_held_for_an_approval_is_awaiting_approval_then_running_again_and_still_ends() {
    let mut e = engine();
    let now = now0();
    e.agent_up("a", caps(&["llm"]), 1, 1, now);
    e.enqueue(cap_task("t", "llm", Priority::Normal), TaskStatus::queued(), now);
    let held = Reported {
        fraction: None,
        note: Some("AWAITING_APPROVAL: deploy (approval k1)".into()),
        held: true,
    };
    // The change of state is written at once, whatever the progress interval says.
    let fx = e.progress("t", 1, "a", held.clone(), later(now, 10));
    assert_eq!(kinds(&fx), [("TASK_AWAITING_APPROVAL", TaskState::AwaitingApproval)]);
    assert!(
        kinds(&e.progress("t", 1, "a", held, later(now, 20))).is_empty(),
        "held already"
    );
    // Its slot stays taken: a second task for the capability waits.
    let fx = e.enqueue(
        cap_task("u", "llm", Priority::Normal),
        TaskStatus::queued(),
        later(now, 30),
    );
    assert!(starts(&fx).is_empty(), "{fx:?}");
    let fx = e.progress(
        "t",
        1,
        "a",
        Reported::working(None, Some("deploy approved: going on".into())),
        later(now, 40),
    );
    assert_eq!(kinds(&fx), [("TASK_RESUMED", TaskState::Running)]);
    // Held again, then it ends while held (a cancel or a budget stop): the attempt is current.
    let again = Reported {
        fraction: None,
        note: None,
        held: true,
    };
    e.progress("t", 1, "a", again, later(now, 50));
    let fx = e.finished("t", 1, "a", Ok(json!("done")), later(now, 60));
    assert!(kinds(&fx).contains(&("TASK_SUCCEEDED", TaskState::Succeeded)), "{fx:?}");
    assert_eq!(starts(&fx), [("a".to_string(), "u".to_string(), 1)]);
}

//! Requirement sets live while open tasks need them (defect 18: they were never removed, so
//! every refile of an agent grew with every set ever asked for).

use serde_json::json;

use super::super::index::Want;
use super::super::*;
use super::{caps, engine, now0, starts};
use crate::task::Priority;

fn needing(id: &str, capabilities: &[&str], min: f64) -> Limits {
    let r = Requirement {
        capabilities: caps(capabilities),
        min_proficiency: min,
    };
    Limits {
        requires: Some(r.clone()),
        ..Limits::plain(id, Want::Capability(r.key()), Priority::Normal, 1)
    }
}

#[test]
fn a_requirement_set_is_dropped_once_no_open_task_needs_it() {
    let mut e = engine();
    let now = now0();
    e.agent_up("a", caps(&["sql", "echo"]), 1, 1, now);
    // A thousand different sets, one task each, each run to its end.
    for n in 0..1000 {
        let id = format!("t{n}");
        let fx = e.enqueue(
            needing(&id, &["sql", "echo"], n as f64 / 10_000.0),
            TaskStatus::queued(),
            now,
        );
        assert_eq!(starts(&fx).len(), 1);
        assert!(e.requirement_sets() <= 1, "only the set of the open task is known");
        e.finished(&id, 1, "a", Ok(json!(n)), now);
    }
    assert_eq!(e.requirement_sets(), 0);
    assert_eq!(
        e.keys_served("a"),
        2,
        "the agent serves its capabilities again, nothing more"
    );
}

#[test]
fn a_set_stays_while_any_open_task_needs_it_and_a_retry_still_finds_its_agents() {
    let mut e = engine();
    let now = now0();
    e.agent_up("a", caps(&["sql", "echo"]), 1, 1, now);
    let retried = Limits {
        max_attempts: 2,
        ..needing("retried", &["sql", "echo"], 0.0)
    };
    e.enqueue(retried, TaskStatus::queued(), now);
    e.enqueue(needing("waiting", &["sql", "echo"], 0.0), TaskStatus::queued(), now);
    e.cancel("waiting", now);
    assert_eq!(e.requirement_sets(), 1, "the running task still needs it");
    e.finished("retried", 1, "a", Err("once".into()), now);
    let fx = e.wake(super::later(now, 1000));
    assert_eq!(starts(&fx), [("a".to_string(), "retried".to_string(), 2)]);
    e.finished("retried", 2, "a", Ok(json!(1)), now);
    assert_eq!(e.requirement_sets(), 0);
    // A task for a set nobody meets is bounded too once it is cancelled.
    e.enqueue(needing("nobody", &["gpu"], 0.0), TaskStatus::queued(), now);
    assert_eq!(e.requirement_sets(), 1);
    e.cancel("nobody", now);
    assert_eq!((e.requirement_sets(), e.keys_served("a")), (0, 2));
}

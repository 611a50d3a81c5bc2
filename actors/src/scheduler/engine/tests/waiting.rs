//! Why a queued task waits, as the engine answers it, kept current as things change.

use std::time::Duration;

use serde_json::json;

use super::super::index::Want;
use super::super::*;
use super::{cap_task, caps, engine, later, now0, starts};
use crate::task::Priority;

#[test]
fn a_task_for_a_capability_nobody_has_says_so_until_an_agent_takes_it() {
    let mut e = engine();
    let now = now0();
    e.enqueue(cap_task("t", "translate", Priority::Normal), TaskStatus::queued(), now);
    assert_eq!(
        e.waiting_for("t", now).as_deref(),
        Some("no agent has capability translate")
    );
    e.agent_up("busy", caps(&["translate"]), 1, 1, now);
    assert_eq!(e.waiting_for("t", now), None, "it runs now");
    e.enqueue(cap_task("u", "translate", Priority::Normal), TaskStatus::queued(), now);
    assert_eq!(
        e.waiting_for("u", now).as_deref(),
        Some("every agent with capability translate is busy")
    );
    e.set_open("busy", 1, false, now);
    assert_eq!(
        e.waiting_for("u", now).as_deref(),
        Some("every agent with capability translate takes no tasks now (paused, unhealthy or stopping)")
    );
    let fx = e.finished("t", 1, "busy", Ok(json!(1)), now);
    assert!(starts(&fx).is_empty(), "a closed agent takes nothing");
    e.set_open("busy", 1, true, now);
    assert_eq!(e.waiting_for("u", now), None);
    assert_eq!(e.waiting_for("t", now), None, "ended");
}

#[test]
fn a_task_for_an_agent_that_is_not_running_says_so() {
    let mut e = engine();
    let now = now0();
    let limits = Limits::plain("t", Want::Agent("a".into()), Priority::Normal, 3);
    e.enqueue(limits, TaskStatus::queued(), now);
    assert_eq!(e.waiting_for("t", now).as_deref(), Some("agent a is not running"));
    e.agent_up("a", caps(&[]), 1, 7, now);
    assert_eq!(e.waiting_for("t", now), None);
}

#[test]
fn the_texts_people_read_name_the_agent_not_its_id() {
    let mut e = engine();
    let now = now0();
    let id = "01936f2a-0000-7000-8000-00000000a1b2";
    e.name_agent(id, "reviewer");
    e.agent_up(id, caps(&[]), 1, 7, now);
    e.enqueue(
        Limits::plain("t", Want::Agent(id.into()), Priority::Normal, 3),
        TaskStatus::queued(),
        now,
    );
    e.enqueue(
        Limits::plain("u", Want::Agent(id.into()), Priority::Normal, 3),
        TaskStatus::queued(),
        now,
    );
    assert_eq!(
        e.waiting_for("u", now).as_deref(),
        Some("agent reviewer is busy (every slot in use)")
    );
    e.agent_down(id, 7, Down::Failed("exit 1".into()), now);
    assert_eq!(
        e.waiting_for("u", now).as_deref(),
        Some("agent reviewer is not running")
    );
}

#[test]
fn dependencies_backoff_breakers_and_requirements_are_named() {
    let mut e = engine().with_breaker(BreakerPolicy {
        failures: 1,
        cooldown: Duration::from_secs(30),
    });
    let now = now0();
    e.enqueue(cap_task("first", "echo", Priority::Normal), TaskStatus::queued(), now);
    let then = Limits {
        depends_on: vec!["first".into()],
        ..cap_task("then", "echo", Priority::Normal)
    };
    e.enqueue(then, TaskStatus::queued(), now);
    assert_eq!(
        e.waiting_for("then", now).as_deref(),
        Some("dependencies not done: first")
    );
    e.agent_up("a", caps(&["echo"]), 1, 1, now);
    e.finished("first", 1, "a", Err("boom".into()), now);
    assert_eq!(
        e.waiting_for("first", now).as_deref(),
        Some("a retry backoff after a failed attempt")
    );
    let fx = e.wake(later(now, 200));
    assert!(starts(&fx).is_empty(), "the breaker is open");
    assert_eq!(
        e.waiting_for("first", later(now, 200)).as_deref(),
        Some("every agent with capability echo has its circuit breaker open")
    );
    let many = Limits::from(&crate::task::TaskSpec {
        capabilities: caps(&["echo", "sql"]),
        min_proficiency: Some(0.5),
        capability: None,
        ..spec("both")
    });
    e.enqueue(many, TaskStatus::queued(), now);
    assert_eq!(
        e.waiting_for("both", now).as_deref(),
        Some("no agent has capabilities echo, sql with proficiency at least 0.5")
    );
}

fn spec(id: &str) -> crate::task::TaskSpec {
    crate::task::TaskSpec {
        strategy: crate::task::Strategy::Score,
        ..crate::task::TaskSpec::example(id)
    }
}

#[test]
fn an_agent_whose_backend_found_a_capability_takes_the_tasks_waiting_for_it_at_once() {
    let mut e = engine();
    let now = now0();
    e.agent_up("mcp", caps(&["mcp:calc/charge"]), 2, 3, now);
    e.enqueue(
        cap_task("t", "mcp:calc/shout", Priority::Normal),
        TaskStatus::queued(),
        now,
    );
    assert_eq!(
        e.waiting_for("t", now).as_deref(),
        Some("no agent has capability mcp:calc/shout")
    );
    // Another incarnation's news is ignored.
    assert!(starts(&e.set_capabilities("mcp", 2, caps(&["mcp:calc/shout"]), now)).is_empty());
    let fx = e.set_capabilities("mcp", 3, caps(&["mcp:calc/charge", "mcp:calc/shout"]), now);
    assert_eq!(starts(&fx).len(), 1, "it runs now");
}

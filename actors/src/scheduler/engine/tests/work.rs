//! Dependencies, time, breakers, strategies and their properties, with plain values.

use std::time::Duration;

use serde_json::json;

use super::super::index::Want;
use super::super::*;
use super::{cap_task, caps, engine, later, now0, records, starts};
use crate::agent::{BreakerState, Skills};
use crate::task::{Priority, Strategy, TaskState};

fn after(limits: Limits, deps: &[&str]) -> Limits {
    Limits {
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        ..limits
    }
}

#[test]
fn a_dependent_runs_after_its_dependencies_succeed_and_gets_their_results() {
    let mut e = engine();
    let now = now0();
    e.agent_up("a", caps(&["c"]), 4, 1, now);
    let fx = e.enqueue(cap_task("one", "c", Priority::Normal), TaskStatus::queued(), now);
    assert_eq!(starts(&fx).len(), 1);
    e.enqueue(cap_task("two", "c", Priority::Normal), TaskStatus::queued(), now);
    let fx = e.enqueue(
        after(cap_task("joined", "c", Priority::Critical), &["one", "two"]),
        TaskStatus::queued(),
        now,
    );
    assert!(
        starts(&fx).is_empty(),
        "it waits although it is CRITICAL and the agent has room"
    );
    let fx = e.finished("one", 1, "a", Ok(json!(1)), now);
    assert!(starts(&fx).is_empty(), "one dependency is still open");
    let fx = e.finished("two", 1, "a", Ok(json!(2)), now);
    let inputs = fx
        .iter()
        .find_map(|f| match f {
            Effect::Start { task, inputs, .. } if task == "joined" => Some(inputs.clone()),
            _ => None,
        })
        .expect("joined starts");
    assert_eq!(
        inputs,
        [("one".to_string(), json!(1)), ("two".to_string(), json!(2))]
            .into_iter()
            .collect()
    );
}

#[test]
fn a_failed_dependency_fails_every_task_downstream_and_an_unknown_one_at_once() {
    let mut e = engine();
    let now = now0();
    e.agent_up("a", caps(&["c"]), 1, 1, now);
    let mut root = cap_task("root", "c", Priority::Normal);
    root.max_attempts = 1;
    e.enqueue(root, TaskStatus::queued(), now);
    e.enqueue(
        after(cap_task("mid", "c", Priority::Normal), &["root"]),
        TaskStatus::queued(),
        now,
    );
    e.enqueue(
        after(cap_task("leaf", "c", Priority::Normal), &["mid"]),
        TaskStatus::queued(),
        now,
    );
    e.enqueue(cap_task("free", "c", Priority::Normal), TaskStatus::queued(), now);
    let fx = e.finished("root", 1, "a", Err("boom".into()), now);
    assert_eq!(
        records(&fx),
        [
            ("root".to_string(), "TASK_DEAD"),
            ("mid".to_string(), "TASK_DEPENDENCY_FAILED"),
            ("leaf".to_string(), "TASK_DEPENDENCY_FAILED"),
        ]
    );
    assert_eq!(starts(&fx)[0].1, "free", "unrelated work goes on");
    let fx = e.enqueue(
        after(cap_task("orphan", "c", Priority::Normal), &["nowhere"]),
        TaskStatus::queued(),
        now,
    );
    assert_eq!(records(&fx), [("orphan".to_string(), "TASK_DEPENDENCY_FAILED")]);
    // Already ended before it was queued: a success feeds it, anything else fails it.
    let fx = e.enqueue_with(
        after(cap_task("late", "c", Priority::Normal), &["done"]),
        TaskStatus::queued(),
        vec![("done".into(), Some(json!("r")))],
        now,
    );
    assert!(records(&fx).is_empty());
    assert_eq!(e.status("late").unwrap().state, TaskState::Queued);
}

#[test]
fn not_before_delays_a_start_and_a_deadline_expires_a_running_task() {
    let mut e = engine();
    let now = now0();
    e.agent_up("a", caps(&["c"]), 2, 1, now);
    let delayed = Limits {
        not_before: Some(now.wall + chrono::Duration::milliseconds(500)),
        ..cap_task("delayed", "c", Priority::Normal)
    };
    let fx = e.enqueue(delayed, TaskStatus::queued(), now);
    assert!(starts(&fx).is_empty());
    assert!(fx
        .iter()
        .any(|f| matches!(f, Effect::Wake(at) if *at == now.at + Duration::from_millis(500))));
    assert!(starts(&e.wake(later(now, 499))).is_empty());
    assert_eq!(starts(&e.wake(later(now, 500)))[0].1, "delayed");

    let bounded = Limits {
        deadline: Some(now.wall + chrono::Duration::milliseconds(1000)),
        ..cap_task("bounded", "c", Priority::Normal)
    };
    assert_eq!(starts(&e.enqueue(bounded, TaskStatus::queued(), now))[0].1, "bounded");
    let fx = e.wake(later(now, 1000));
    assert_eq!(records(&fx), [("bounded".to_string(), "TASK_EXPIRED")]);
    assert!(fx
        .iter()
        .any(|f| matches!(f, Effect::Cancel { task, .. } if task == "bounded")));
    assert!(e.status("bounded").is_none());
    // A late result of the expired attempt changes nothing.
    assert!(e.finished("bounded", 1, "a", Ok(json!(1)), later(now, 1001)).is_empty());
    // A deadline already past expires at once.
    let past = Limits {
        deadline: Some(now.wall - chrono::Duration::milliseconds(1)),
        ..cap_task("past", "c", Priority::Normal)
    };
    assert_eq!(
        records(&e.enqueue(past, TaskStatus::queued(), now)),
        [("past".to_string(), "TASK_EXPIRED")]
    );
}

#[test]
fn a_tasks_own_retry_backoff_has_its_jitter_within_bounds() {
    let spec = crate::task::RetrySpec {
        base_ms: 100,
        max_ms: 1000,
        jitter: 0.5,
    };
    let mut seen = std::collections::HashSet::new();
    for n in 0..200 {
        let d = RetryPolicy::of_task(&spec, &format!("t{n}"), 3);
        assert!(
            d <= Duration::from_millis(400) && d >= Duration::from_millis(200),
            "{d:?}"
        );
        seen.insert(d);
        assert_eq!(
            d,
            RetryPolicy::of_task(&spec, &format!("t{n}"), 3),
            "the same task and attempt give the same delay"
        );
    }
    assert!(seen.len() > 50, "jitter spreads retries");
    let none = crate::task::RetrySpec { jitter: 0.0, ..spec };
    assert_eq!(RetryPolicy::of_task(&none, "t", 10), Duration::from_millis(1000));
}

proptest::proptest! {
    /// Random graphs on random agents: nothing starts before its dependencies succeeded, no
    /// task is assigned twice, no agent runs more than its slots, and every task ends.
    #[test]
    fn the_engine_keeps_its_invariants_on_random_graphs(
        tasks in proptest::collection::vec((0u8..4, proptest::collection::vec(0usize..40, 0..3), proptest::bool::weighted(0.15)), 1..40),
        slots in proptest::collection::vec(1u32..4, 1..4),
    ) {
        let mut e = engine();
        let mut now = now0();
        for (i, s) in slots.iter().enumerate() {
            e.agent_up(&format!("a{i}"), caps(&["c"]), *s, i as u64 + 1, now);
        }
        let mut fails = std::collections::HashMap::new();
        let mut deps_of = std::collections::HashMap::new();
        let mut running: std::collections::HashMap<String, (String, u32)> = std::collections::HashMap::new();
        let mut succeeded = std::collections::HashSet::new();
        let mut pending: Vec<Effect> = Vec::new();
        for (i, (p, deps, fail)) in tasks.iter().enumerate() {
            let id = format!("t{i:02}");
            let deps: Vec<String> = deps.iter().filter(|&&d| d < i).map(|d| format!("t{d:02}")).collect();
            let priority = [Priority::Critical, Priority::High, Priority::Normal, Priority::Low][*p as usize];
            let mut limits = after(cap_task(&id, "c", priority), &deps.iter().map(String::as_str).collect::<Vec<_>>());
            limits.max_attempts = 1;
            fails.insert(id.clone(), *fail);
            deps_of.insert(id.clone(), deps);
            pending.extend(e.enqueue(limits, TaskStatus::queued(), now));
        }
        let (mut steps, mut wakes) = (0, 0);
        loop {
            for f in pending.drain(..) {
                if let Effect::Start { agent, task, attempt, .. } = f {
                    proptest::prop_assert!(!running.contains_key(&task), "{task} started twice");
                    for d in &deps_of[&task] {
                        proptest::prop_assert!(succeeded.contains(d), "{task} started before {d} succeeded");
                    }
                    running.insert(task, (agent, attempt));
                }
            }
            for (i, s) in slots.iter().enumerate() {
                let on = running.values().filter(|(a, _)| *a == format!("a{i}")).count() as u32;
                proptest::prop_assert!(on <= *s);
            }
            let Some(task) = running.keys().min().cloned() else {
                // Nothing runs but tasks are open: every agent's breaker opened after
                // consecutive failures. Time passes until they half-open and take work again.
                if e.open() > 0 && wakes < tasks.len() {
                    wakes += 1;
                    now = later(now, BreakerPolicy::default().cooldown.as_millis() as u64);
                    pending.extend(e.wake(now));
                    continue;
                }
                break;
            };
            let (agent, attempt) = running.remove(&task).unwrap();
            let outcome = if fails[&task] { Err("no".to_string()) } else { Ok(json!(task)) };
            if outcome.is_ok() {
                succeeded.insert(task.clone());
            }
            pending.extend(e.finished(&task, attempt, &agent, outcome, now));
            steps += 1;
            proptest::prop_assert!(steps <= tasks.len());
        }
        proptest::prop_assert_eq!(e.open(), 0, "every task ended");
    }
}

#[test]
fn a_breaker_opens_after_consecutive_failures_half_opens_for_one_trial_and_closes_on_success() {
    let mut e = engine().with_breaker(BreakerPolicy {
        failures: 2,
        cooldown: Duration::from_millis(100),
    });
    let now = now0();
    e.agent_up("a", caps(&["c"]), 4, 1, now);
    let one = |id: &str| {
        let mut t = cap_task(id, "c", Priority::Normal);
        t.max_attempts = 1;
        t
    };
    let kinds = |fx: &[Effect]| -> Vec<&'static str> {
        fx.iter()
            .filter_map(|f| match f {
                Effect::AgentEvent { kind, .. } => Some(*kind),
                _ => None,
            })
            .collect()
    };
    e.enqueue(one("f1"), TaskStatus::queued(), now);
    e.enqueue(one("f2"), TaskStatus::queued(), now);
    assert!(kinds(&e.finished("f1", 1, "a", Err("x".into()), now)).is_empty());
    let fx = e.finished("f2", 1, "a", Err("x".into()), now);
    assert_eq!(kinds(&fx), ["AGENT_BREAKER_OPENED"]);
    assert_eq!(e.breaker_of("a").state, BreakerState::Open);
    // Open: nothing starts, however much room the agent has.
    assert!(starts(&e.enqueue(one("w1"), TaskStatus::queued(), now)).is_empty());
    e.enqueue(one("w2"), TaskStatus::queued(), now);
    assert!(starts(&e.wake(later(now, 99))).is_empty());
    // Half-open: one trial only.
    let fx = e.wake(later(now, 100));
    assert_eq!(kinds(&fx), ["AGENT_BREAKER_HALF_OPEN"]);
    assert_eq!(starts(&fx).len(), 1, "{fx:?}");
    let trial = starts(&fx).remove(0).1;
    // A failed trial opens it again.
    let fx = e.finished(&trial, 1, "a", Err("x".into()), later(now, 101));
    assert_eq!(kinds(&fx), ["AGENT_BREAKER_OPENED"]);
    assert!(starts(&fx).is_empty());
    let fx = e.wake(later(now, 201));
    let trial = starts(&fx).remove(0).1;
    let fx = e.finished(&trial, 1, "a", Ok(json!(1)), later(now, 202));
    assert_eq!(kinds(&fx), ["AGENT_BREAKER_CLOSED"]);
    assert_eq!(e.breaker_of("a").state, BreakerState::Closed);
}

fn skills(p: &[(&str, f64)], weight: f64) -> Skills {
    Skills {
        proficiency: p.iter().map(|(c, v)| (c.to_string(), *v)).collect(),
        weight,
    }
}

fn with(limits: Limits, strategy: Strategy) -> Limits {
    Limits { strategy, ..limits }
}

/// Starts `n` tasks one after the other, each finishing before the next: who ran each.
fn one_by_one(e: &mut Engine, n: usize, strategy: Strategy, now: Now) -> Vec<String> {
    (0..n)
        .map(|i| {
            let id = format!("{}-{i}", strategy.as_str());
            let fx = e.enqueue(
                with(cap_task(&id, "c", Priority::Normal), strategy),
                TaskStatus::queued(),
                now,
            );
            let (agent, task, attempt) = starts(&fx).remove(0);
            e.finished(&task, attempt, &agent, Ok(json!(null)), now);
            agent
        })
        .collect()
}

#[test]
fn each_strategy_picks_as_documented_and_started_tasks_say_why() {
    let mut e = engine();
    let now = now0();
    e.agent_up_with("a", caps(&["c", "x"]), skills(&[("c", 0.3)], 3.0), 4, 1, now);
    e.agent_up_with("b", caps(&["c"]), skills(&[("c", 0.9)], 1.0), 4, 2, now);
    e.agent_up_with(
        "d",
        caps(&["c", "x"]),
        skills(&[("c", 0.6), ("x", 0.5)], 1.0),
        4,
        3,
        now,
    );
    // SCORE: the most proficient while all are idle; the runner-up is named.
    let fx = e.enqueue(cap_task("s", "c", Priority::Normal), TaskStatus::queued(), now);
    let Some(Effect::Start { agent, transition, .. }) = fx.first() else {
        panic!("{fx:?}")
    };
    assert_eq!(agent, "b");
    assert_eq!(transition.data["strategy"], "SCORE");
    assert_eq!(transition.data["score"], json!(0.5 * 0.9 + 0.3 + 0.2));
    assert_eq!(transition.data["runnerUp"]["agentId"], "d");
    e.finished("s", 1, "b", Ok(json!(null)), now);
    // ROUND_ROBIN: each in turn.
    assert_eq!(
        one_by_one(&mut e, 6, Strategy::RoundRobin, now),
        ["a", "b", "d", "a", "b", "d"]
    );
    // WEIGHTED: a has weight 3, b and d 1: a runs three times as often (counted from a
    // fresh start: the weights share out every task an agent has started).
    let mut fresh = engine();
    fresh.agent_up_with("a", caps(&["c"]), skills(&[], 3.0), 4, 1, now);
    fresh.agent_up_with("b", caps(&["c"]), skills(&[], 1.0), 4, 2, now);
    fresh.agent_up_with("d", caps(&["c"]), skills(&[], 1.0), 4, 3, now);
    let ran = one_by_one(&mut fresh, 10, Strategy::Weighted, now);
    let count = |x: &str| ran.iter().filter(|a| *a == x).count();
    assert_eq!((count("a"), count("b"), count("d")), (6, 2, 2), "{ran:?}");
    // LEAST_CONNECTIONS: the fewest running, whatever their score.
    let mut gated = Vec::new();
    for i in 0..2 {
        let fx = e.enqueue(
            with(
                cap_task(&format!("busy-b{i}"), "c", Priority::Normal),
                Strategy::LeastConnections,
            ),
            TaskStatus::queued(),
            now,
        );
        gated.push(starts(&fx).remove(0).0);
    }
    assert_eq!(gated, ["a", "b"], "ties go to the smaller id");
    let fx = e.enqueue(
        with(cap_task("lc", "c", Priority::Normal), Strategy::LeastConnections),
        TaskStatus::queued(),
        now,
    );
    assert_eq!(starts(&fx)[0].0, "d");
    // Several capabilities and a least proficiency: only d has x and c at 0.5 or better.
    let need = Limits {
        requires: Some(Requirement {
            capabilities: caps(&["c", "x"]),
            min_proficiency: 0.5,
        }),
        want: Want::Capability(
            Requirement {
                capabilities: caps(&["c", "x"]),
                min_proficiency: 0.5,
            }
            .key(),
        ),
        ..cap_task("both", "unused", Priority::Normal)
    };
    let fx = e.enqueue(need, TaskStatus::queued(), now);
    assert_eq!(starts(&fx)[0].0, "d");
    // Nobody meets 0.95: it waits without holding anything else up.
    let picky = Limits {
        requires: Some(Requirement {
            capabilities: caps(&["c"]),
            min_proficiency: 0.95,
        }),
        want: Want::Capability("c>=0.95".into()),
        ..cap_task("picky", "unused", Priority::Critical)
    };
    assert!(starts(&e.enqueue(picky, TaskStatus::queued(), now)).is_empty());
    let fx = e.enqueue(cap_task("plain", "c", Priority::Low), TaskStatus::queued(), now);
    assert_eq!(starts(&fx).len(), 1);
}

proptest::proptest! {
    /// Tasks queued while the only agent is busy start in priority order, then arrival order.
    #[test]
    fn queued_tasks_start_by_priority_then_arrival(priorities in proptest::collection::vec(0u8..4, 1..60)) {
        let mut e = engine();
        let now = now0();
        e.agent_up("a", caps(&["c"]), 1, 1, now);
        let fx = e.enqueue(cap_task("blocker", "c", Priority::Normal), TaskStatus::queued(), now);
        proptest::prop_assert_eq!(starts(&fx).len(), 1);
        let classes = [Priority::Critical, Priority::High, Priority::Normal, Priority::Low];
        for (i, p) in priorities.iter().enumerate() {
            e.enqueue(cap_task(&format!("t{i:03}"), "c", classes[*p as usize]), TaskStatus::queued(), now);
        }
        let mut expected: Vec<(u8, usize)> = priorities.iter().enumerate().map(|(i, p)| (*p, i)).collect();
        expected.sort();
        let mut current = ("blocker".to_string(), 1);
        for (_, i) in expected {
            let fx = e.finished(&current.0, current.1, "a", Ok(json!(null)), now);
            let (_, task, attempt) = starts(&fx).remove(0);
            proptest::prop_assert_eq!(&task, &format!("t{i:03}"));
            current = (task, attempt);
        }
    }
}

#[test]
fn a_final_error_fails_the_task_at_once_whatever_attempts_it_has_left() {
    let mut e = engine();
    let now = now0();
    e.agent_up("a", caps(&["c"]), 2, 1, now);
    e.enqueue(cap_task("spent", "c", Priority::Normal), TaskStatus::queued(), now);
    e.enqueue(cap_task("flaky", "c", Priority::Normal), TaskStatus::queued(), now);
    let fx = e.finished(
        "spent",
        1,
        "a",
        Err("BUDGET_EXCEEDED: the task's maxTokens is 10".into()),
        now,
    );
    assert_eq!(records(&fx), [("spent".to_string(), "TASK_FAILED")]);
    assert_eq!(e.status("spent"), None, "it ended");
    // Another error, or a code without its colon, is retried as before.
    let fx = e.finished("flaky", 1, "a", Err("MAX_STEPS is a word here".into()), now);
    assert_eq!(records(&fx), [("flaky".to_string(), "TASK_RETRYING")]);
    assert!(crate::task::is_final("MAX_STEPS: 10 calls"));
    assert!(crate::task::is_final("MODEL_REFUSED: HTTP 404: no such model"));
    assert!(!crate::task::is_final("BUDGET_EXCEEDED"));
}

//! The engine with plain values: no actors, no disk, time passed in.

use std::time::Duration;

use serde_json::json;

use super::index::Want;
use super::*;
use crate::task::{Priority, TaskState};

fn now0() -> Now {
    Now {
        at: Instant::now(),
        wall: chrono::Utc::now(),
    }
}

fn later(now: Now, ms: u64) -> Now {
    Now {
        at: now.at + Duration::from_millis(ms),
        wall: now.wall + chrono::TimeDelta::milliseconds(ms as i64),
    }
}

fn engine() -> Engine {
    Engine::new(RetryPolicy {
        base: Duration::from_millis(100),
        max: Duration::from_secs(1),
    })
}

fn cap_task(id: &str, cap: &str, priority: Priority) -> Limits {
    Limits::plain(id, Want::Capability(cap.into()), priority, 3)
}

fn caps(c: &[&str]) -> Vec<String> {
    c.iter().map(|s| s.to_string()).collect()
}

/// (agent, task, attempt) of every Start.
fn starts(effects: &[Effect]) -> Vec<(String, String, u32)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Start {
                agent, task, attempt, ..
            } => Some((agent.clone(), task.clone(), *attempt)),
            _ => None,
        })
        .collect()
}

fn records(effects: &[Effect]) -> Vec<(String, &'static str)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Record(t) => Some((t.task.clone(), t.kind)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_blocked_backlog_does_not_hold_up_a_task_an_idle_agent_can_run() {
    let mut e = engine();
    let now = now0();
    e.agent_up("echo-agent", caps(&["echo"]), 1, 1, now);
    for n in 0..10_000 {
        let fx = e.enqueue(
            cap_task(&format!("blocked-{n:05}"), "nobody-has-this", Priority::Critical),
            TaskStatus::queued(),
            now,
        );
        assert!(fx.is_empty());
    }
    let fx = e.enqueue(cap_task("echo-1", "echo", Priority::Low), TaskStatus::queued(), now);
    assert_eq!(starts(&fx), [("echo-agent".to_string(), "echo-1".to_string(), 1)]);
    assert_eq!(e.queued(), 10_000);
}

#[test]
fn an_agent_takes_higher_classes_first_then_arrival_order() {
    let mut e = engine();
    let now = now0();
    e.agent_up("a", caps(&["c"]), 1, 1, now);
    e.enqueue(cap_task("blocker", "c", Priority::Normal), TaskStatus::queued(), now);
    for (id, p) in [
        ("low", Priority::Low),
        ("n1", Priority::Normal),
        ("crit", Priority::Critical),
        ("n2", Priority::Normal),
    ] {
        assert!(starts(&e.enqueue(cap_task(id, "c", p), TaskStatus::queued(), now)).is_empty());
    }
    let mut order = Vec::new();
    let mut current = ("blocker".to_string(), 1);
    for _ in 0..4 {
        let fx = e.finished(&current.0, current.1, "a", Ok(json!(null)), now);
        let (_, task, attempt) = starts(&fx).remove(0);
        order.push(task.clone());
        current = (task, attempt);
    }
    assert_eq!(order, ["crit", "n1", "n2", "low"]);
}

#[test]
fn the_least_loaded_capable_agent_gets_a_new_task() {
    let mut e = engine();
    let now = now0();
    e.agent_up("busy", caps(&["c"]), 2, 1, now);
    e.agent_up("idle", caps(&["c"]), 4, 2, now);
    e.agent_up("other", caps(&["x"]), 4, 3, now);
    let fx = e.enqueue(cap_task("t1", "c", Priority::Normal), TaskStatus::queued(), now);
    // Both are empty: the tie goes to the smaller id.
    assert_eq!(starts(&fx)[0].0, "busy");
    let fx = e.enqueue(cap_task("t2", "c", Priority::Normal), TaskStatus::queued(), now);
    assert_eq!(starts(&fx)[0].0, "idle", "busy is at 1/2, idle at 0/4");
    let fx = e.enqueue(cap_task("t3", "c", Priority::Normal), TaskStatus::queued(), now);
    assert_eq!(starts(&fx)[0].0, "idle", "busy at 1/2, idle at 1/4");
}

#[test]
fn a_stopped_agent_gives_its_tasks_back_without_charging_an_attempt() {
    let mut e = engine();
    let now = now0();
    e.agent_up("a", caps(&["c"]), 1, 1, now);
    let mut last = cap_task("t", "c", Priority::Normal);
    last.max_attempts = 1;
    e.enqueue(last, TaskStatus::queued(), now);
    let fx = e.agent_down("a", 1, Down::Stopped, now);
    assert_eq!(records(&fx), [("t".to_string(), "TASK_REQUEUED")]);
    let status = e.status("t").unwrap();
    assert_eq!(
        (status.state, status.attempts, status.failures),
        (TaskState::Queued, 1, 0)
    );
    // It runs again on the next agent, as attempt 2, and may still fail once.
    let fx = e.agent_up("b", caps(&["c"]), 1, 2, now);
    assert_eq!(starts(&fx), [("b".to_string(), "t".to_string(), 2)]);
    let fx = e.finished("t", 2, "b", Err("boom".into()), now);
    assert_eq!(records(&fx), [("t".to_string(), "TASK_DEAD")]);
}

#[test]
fn a_crashed_agent_charges_the_attempt_and_the_retry_waits_its_backoff() {
    let mut e = engine();
    let now = now0();
    e.agent_up("a", caps(&["c"]), 1, 1, now);
    e.enqueue(cap_task("t", "c", Priority::Normal), TaskStatus::queued(), now);
    let fx = e.agent_down("a", 1, Down::Failed("panicked".into()), now);
    assert_eq!(records(&fx), [("t".to_string(), "TASK_RETRYING")]);
    let wake = fx.iter().find_map(|f| match f {
        Effect::Wake(at) => Some(*at),
        _ => None,
    });
    assert_eq!(wake, Some(now.at + Duration::from_millis(100)));
    e.agent_up("a", caps(&["c"]), 1, 2, now);
    assert!(starts(&e.wake(later(now, 50))).is_empty(), "not before the backoff");
    let fx = e.wake(later(now, 100));
    assert_eq!(starts(&fx), [("a".to_string(), "t".to_string(), 2)]);
    assert_eq!(e.status("t").unwrap().failures, 1);
}

#[test]
fn a_new_incarnation_first_settles_what_the_old_one_held() {
    let mut e = engine();
    let now = now0();
    e.agent_up("a", caps(&["c"]), 2, 1, now);
    e.enqueue(cap_task("t", "c", Priority::Normal), TaskStatus::queued(), now);
    // The old actor died without a word (killed); the restarted one registers.
    let fx = e.agent_up("a", caps(&["c"]), 2, 2, now);
    assert_eq!(records(&fx), [("t".to_string(), "TASK_RETRYING")]);
    assert_eq!(e.running_on("a"), 0, "the new incarnation starts empty");
    let fx = e.wake(later(now, 100));
    assert_eq!(starts(&fx), [("a".to_string(), "t".to_string(), 2)]);
    // A late down of the old incarnation changes nothing.
    assert!(e.agent_down("a", 1, Down::Failed("late".into()), now).is_empty());
    assert_eq!(e.running_on("a"), 1);
}

#[test]
fn a_late_result_of_an_earlier_attempt_is_ignored() {
    let mut e = engine();
    let now = now0();
    e.agent_up("a", caps(&["c"]), 1, 1, now);
    e.enqueue(cap_task("t", "c", Priority::Normal), TaskStatus::queued(), now);
    e.agent_down("a", 1, Down::Stopped, now);
    e.agent_up("a", caps(&["c"]), 1, 2, now);
    assert!(e.finished("t", 1, "a", Ok(json!("late")), now).is_empty());
    let fx = e.finished("t", 2, "a", Ok(json!("current")), now);
    assert_eq!(records(&fx), [("t".to_string(), "TASK_SUCCEEDED")]);
}

#[test]
fn cancelling_a_queued_a_waiting_and_a_running_task() {
    let mut e = engine();
    let now = now0();
    e.enqueue(cap_task("queued", "c", Priority::Normal), TaskStatus::queued(), now);
    let (status, fx) = e.cancel("queued", now).unwrap();
    assert_eq!(status.state, TaskState::Cancelled);
    assert_eq!(records(&fx), [("queued".to_string(), "TASK_CANCELLED")]);

    e.agent_up("a", caps(&["c"]), 1, 1, now);
    e.enqueue(cap_task("retrying", "c", Priority::Normal), TaskStatus::queued(), now);
    e.finished("retrying", 1, "a", Err("once".into()), now);
    let (status, _) = e.cancel("retrying", now).unwrap();
    assert_eq!((status.state, status.failures), (TaskState::Cancelled, 1));
    assert!(
        starts(&e.wake(later(now, 1000))).is_empty(),
        "a cancelled retry never starts"
    );

    e.enqueue(cap_task("running", "c", Priority::Normal), TaskStatus::queued(), now);
    let (_, fx) = e.cancel("running", now).unwrap();
    assert!(fx.contains(&Effect::Cancel {
        agent: "a".into(),
        task: "running".into(),
        attempt: 1
    }));
    assert!(
        e.cancel("running", now).is_none(),
        "a finished task is not this engine's"
    );
    assert_eq!(e.running(), 0);
}

#[test]
fn an_undeliverable_start_is_undone_and_the_agent_dropped() {
    let mut e = engine();
    let now = now0();
    e.agent_up("dead", caps(&["c"]), 2, 1, now);
    e.enqueue(cap_task("t1", "c", Priority::Normal), TaskStatus::queued(), now);
    e.agent_up("alive", caps(&["c"]), 2, 2, now);
    let fx = e.undeliverable("dead", &["t1".to_string()], now);
    assert_eq!(starts(&fx), [("alive".to_string(), "t1".to_string(), 1)]);
    assert_eq!(e.status("t1").unwrap().failures, 0);
}

#[test]
fn draining_starts_nothing_and_shutdown_requeues_without_charge() {
    let mut e = engine();
    let now = now0();
    e.agent_up("a", caps(&["c"]), 2, 1, now);
    e.enqueue(cap_task("t1", "c", Priority::Normal), TaskStatus::queued(), now);
    e.drain();
    assert!(starts(&e.enqueue(cap_task("t2", "c", Priority::Normal), TaskStatus::queued(), now)).is_empty());
    let fx = e.requeue_running("the node is shutting down", now);
    assert_eq!(records(&fx), [("t1".to_string(), "TASK_REQUEUED")]);
    assert!(starts(&fx).is_empty());
    assert_eq!(e.status("t1").unwrap().failures, 0);
}

#[test]
fn under_random_inputs_no_task_runs_twice_no_agent_overcommits_and_each_ends_once() {
    for seed in [1u64, 7, 42, 1234] {
        let mut rng = seed;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut e = engine();
        let mut now = now0();
        let maxes = [1u32, 2, 3, 1];
        let mut incarnation = [1u64, 1, 1, 1];
        for (i, m) in maxes.iter().enumerate() {
            e.agent_up(&format!("a{i}"), caps(&["c", &format!("only{i}")]), *m, 1, now);
        }
        let mut running: HashMap<String, (String, u32)> = HashMap::new();
        let ended = std::cell::RefCell::new(HashMap::<String, u32>::new());
        let apply = |fx: Vec<Effect>, running: &mut HashMap<String, (String, u32)>| {
            for f in fx {
                match f {
                    Effect::Start {
                        agent, task, attempt, ..
                    } => {
                        assert!(
                            running.insert(task.clone(), (agent, attempt)).is_none(),
                            "{task} started twice"
                        );
                    }
                    Effect::Record(t) => {
                        if t.status.state != TaskState::Running {
                            running.remove(&t.task);
                        }
                        if t.ended.is_some() {
                            *ended.borrow_mut().entry(t.task.clone()).or_default() += 1;
                        }
                    }
                    Effect::Cancel { task, .. } => {
                        running.remove(&task);
                    }
                    Effect::Wake(_) | Effect::AgentEvent { .. } => {}
                }
            }
        };
        const TASKS: usize = 400;
        for n in 0..TASKS {
            let want = if n % 5 == 0 {
                format!("only{}", n % 4)
            } else {
                "c".into()
            };
            let p = [Priority::Critical, Priority::High, Priority::Normal, Priority::Low][n % 4];
            apply(
                e.enqueue(cap_task(&format!("t{n:04}"), &want, p), TaskStatus::queued(), now),
                &mut running,
            );
        }
        for _ in 0..20_000 {
            now = later(now, next() % 50);
            let r = next();
            match r % 10 {
                0 => {
                    let i = (next() % 4) as usize;
                    let down = if r % 3 == 0 {
                        Down::Stopped
                    } else {
                        Down::Failed("x".into())
                    };
                    apply(e.agent_down(&format!("a{i}"), incarnation[i], down, now), &mut running);
                    incarnation[i] += 1;
                    apply(
                        e.agent_up(
                            &format!("a{i}"),
                            caps(&["c", &format!("only{i}")]),
                            maxes[i],
                            incarnation[i],
                            now,
                        ),
                        &mut running,
                    );
                }
                1 => apply(e.wake(now), &mut running),
                _ => {
                    let Some((task, (agent, attempt))) = running.iter().next().map(|(t, v)| (t.clone(), v.clone()))
                    else {
                        apply(e.wake(later(now, 2000)), &mut running);
                        continue;
                    };
                    let outcome = if r % 4 == 0 {
                        Err("unlucky".to_string())
                    } else {
                        Ok(json!(1))
                    };
                    apply(e.finished(&task, attempt, &agent, outcome, now), &mut running);
                }
            }
            for (i, m) in maxes.iter().enumerate() {
                assert!(e.running_on(&format!("a{i}")) <= *m, "seed {seed}: a{i} overcommitted");
            }
            if ended.borrow().len() == TASKS {
                break;
            }
        }
        let ended = ended.into_inner();
        assert_eq!(ended.len(), TASKS, "seed {seed}: not every task ended");
        assert!(ended.values().all(|n| *n == 1), "seed {seed}: a task ended twice");
    }
}

#[test]
fn a_closed_agent_takes_nothing_new_and_an_opened_one_takes_what_waited() {
    let mut e = engine();
    let now = now0();
    e.agent_up("a", caps(&["c"]), 2, 7, now);
    assert!(
        e.set_open("a", 6, false, now).is_empty(),
        "an older incarnation is ignored"
    );
    e.set_open("a", 7, false, now);
    let fx = e.enqueue(cap_task("t1", "c", Priority::Normal), TaskStatus::queued(), now);
    assert!(starts(&fx).is_empty(), "a closed agent was given a task");
    let fx = e.set_open("a", 7, true, now);
    assert_eq!(starts(&fx), [("a".to_string(), "t1".to_string(), 1)]);
}

#[test]
fn the_tasks_waiting_for_a_removed_agent_end_failed_and_others_stay() {
    let mut e = engine();
    let now = now0();
    let mine = Limits::plain("mine", Want::Agent("gone".into()), Priority::Normal, 3);
    e.enqueue(mine, TaskStatus::queued(), now);
    e.enqueue(cap_task("other", "c", Priority::Normal), TaskStatus::queued(), now);
    let fx = e.agent_removed("gone", now);
    assert_eq!(records(&fx), [("mine".to_string(), "TASK_FAILED")]);
    assert_eq!(e.queued(), 1);
    assert!(e.status("mine").is_none());
}

mod progress;
mod requirements;
mod waiting;
mod work;

#[test]
fn a_start_the_agent_hands_back_goes_back_to_the_queue_uncharged() {
    let mut e = engine();
    let now = now0();
    e.agent_up("a", caps(&["c"]), 1, 1, now);
    let fx = e.enqueue(cap_task("t", "c", Priority::Normal), TaskStatus::queued(), now);
    assert_eq!(starts(&fx), [("a".to_string(), "t".to_string(), 1)]);
    // The agent was paused while the start was on its way: it closed, then handed it back.
    e.set_open("a", 1, false, now);
    let fx = e.declined("t", 1, "a", "paused", now);
    assert_eq!(records(&fx), [("t".to_string(), "TASK_REQUEUED")]);
    assert!(starts(&fx).is_empty(), "offered again to the closed agent");
    assert_eq!(e.running_on("a"), 0);
    let status = e.status("t").map(|s| (s.state, s.attempts, s.failures));
    assert_eq!(status, Some((TaskState::Queued, 0, 0)));
    // A second hand-back of that start changes nothing; resumed, the agent gets attempt 1.
    assert!(e.declined("t", 1, "a", "late", now).is_empty());
    let fx = e.set_open("a", 1, true, now);
    assert_eq!(starts(&fx), [("a".to_string(), "t".to_string(), 1)]);
}

/// Every capability is served by some peer.
fn anywhere(_: &str, _: Option<&Requirement>) -> bool {
    true
}

#[test]
fn tasks_no_agent_here_can_run_are_named_and_let_go_of_and_the_rest_stay() {
    let mut e = engine();
    let now = now0();
    e.agent_up("a", caps(&["here"]), 1, 1, now);
    e.enqueue(cap_task("busy", "here", Priority::Normal), TaskStatus::queued(), now);
    e.enqueue(cap_task("waits", "here", Priority::Normal), TaskStatus::queued(), now);
    e.enqueue(
        cap_task("far", "elsewhere", Priority::Normal),
        TaskStatus::queued(),
        now,
    );
    e.enqueue(cap_task("far-2", "elsewhere", Priority::Low), TaskStatus::queued(), now);
    let named = e.unserved(10, anywhere);
    let ids: Vec<&[String]> = named.iter().map(|u| u.tasks.as_slice()).collect();
    assert_eq!(ids, [["far"], ["far-2"]], "{named:?}");
    assert!(named.iter().all(|u| u.want == "elsewhere" && u.requires.is_none()));
    assert_eq!(e.unserved(1, anywhere).len(), 1, "bounded");
    // Let go of: no longer held, nothing started for it.
    let open = e.open();
    let states = |s: Option<Vec<TaskStatus>>| s.map(|s| s.into_iter().map(|s| s.state).collect::<Vec<_>>());
    assert_eq!(states(e.hand_off(&["far".into()], now)), Some(vec![TaskState::Queued]));
    assert!(e.status("far").is_none());
    assert_eq!(e.open(), open - 1);
    // Only a task waiting in a queue is let go of: not a running one, not an unknown one.
    assert!(e.hand_off(&["busy".into()], now).is_none(), "running");
    assert!(e.hand_off(&["gone".into()], now).is_none());
    // Once an agent here serves it, it is no longer named.
    e.agent_up("b", caps(&["elsewhere"]), 1, 1, now);
    assert!(e.unserved(10, anywhere).is_empty());
}

#[test]
fn once_the_engine_drains_every_queued_task_a_peer_serves_is_named_even_those_agents_here_serve() {
    let mut e = engine();
    let now = now0();
    e.agent_up("a", caps(&["here"]), 1, 1, now);
    e.enqueue(cap_task("busy", "here", Priority::Normal), TaskStatus::queued(), now);
    e.enqueue(cap_task("waits", "here", Priority::Normal), TaskStatus::queued(), now);
    e.enqueue(cap_task("next", "here", Priority::Low), TaskStatus::queued(), now);
    assert!(e.unserved(10, anywhere).is_empty(), "served here while it runs");
    e.drain();
    let named = e.unserved(10, anywhere);
    let ids: Vec<&[String]> = named.iter().map(|u| u.tasks.as_slice()).collect();
    assert_eq!(ids, [["waits"], ["next"]], "the running one stays: {named:?}");
    assert!(
        e.unserved(10, |_, _| false).is_empty(),
        "no peer serves them: they stay"
    );
}

#[test]
fn tasks_no_peer_serves_either_do_not_take_the_turn_of_those_a_peer_could_run() {
    let mut e = engine();
    let now = now0();
    // Queued first, for a capability no node serves: more of them than a look names.
    for i in 0..5 {
        e.enqueue(
            cap_task(&format!("nobody-{i}"), "a-nobody", Priority::Normal),
            TaskStatus::queued(),
            now,
        );
    }
    e.enqueue(cap_task("far", "b-far", Priority::Normal), TaskStatus::queued(), now);
    let only_far = |want: &str, _: Option<&Requirement>| want == "b-far";
    let named = e.unserved(3, only_far);
    let ids: Vec<&[String]> = named.iter().map(|u| u.tasks.as_slice()).collect();
    assert_eq!(ids, [["far"]], "{named:?}");
}

#[test]
fn a_graph_no_agent_here_can_start_is_named_whole_and_only_while_none_of_it_runs() {
    let mut e = engine();
    let now = now0();
    e.agent_up("a", caps(&["here"]), 1, 1, now);
    // root (elsewhere) <- child (here) <- grandchild (elsewhere); child also waits on side.
    e.enqueue(
        cap_task("root", "elsewhere", Priority::Normal),
        TaskStatus::queued(),
        now,
    );
    e.enqueue(
        cap_task("side", "elsewhere", Priority::Normal),
        TaskStatus::queued(),
        now,
    );
    let mut child = cap_task("child", "here", Priority::Normal);
    child.depends_on = vec!["root".into(), "side".into()];
    e.enqueue(child, TaskStatus::queued(), now);
    let mut grandchild = cap_task("grandchild", "elsewhere", Priority::Normal);
    grandchild.depends_on = vec!["child".into()];
    e.enqueue(grandchild, TaskStatus::queued(), now);
    let named = e.unserved(10, anywhere);
    assert_eq!(named.len(), 1, "one graph, named once: {named:?}");
    let mut graph = named[0].tasks.clone();
    assert_eq!(graph[0], "root", "the task first");
    graph.sort();
    assert_eq!(graph, ["child", "grandchild", "root", "side"]);
    // Too large for the bound: named on its own only when nothing was named before it.
    assert_eq!(e.unserved(2, anywhere).len(), 1);
    // Let go of whole: nothing of it stays here, nothing waits on it.
    let statuses = e.hand_off(&named[0].tasks, now).expect("let go of");
    assert_eq!(statuses.len(), 4);
    for t in ["root", "side", "child", "grandchild"] {
        assert!(e.status(t).is_none(), "{t}");
    }
    assert_eq!(e.open(), 0);

    // A graph one of whose tasks runs here stays whole.
    let mut e = engine();
    e.agent_up("a", caps(&["here"]), 1, 1, now);
    e.enqueue(cap_task("runs", "here", Priority::Normal), TaskStatus::queued(), now);
    e.enqueue(
        cap_task("far", "elsewhere", Priority::Normal),
        TaskStatus::queued(),
        now,
    );
    let mut join = cap_task("join", "here", Priority::Normal);
    join.depends_on = vec!["runs".into(), "far".into()];
    e.enqueue(join, TaskStatus::queued(), now);
    assert!(e.unserved(10, anywhere).is_empty(), "{:?}", e.unserved(10, anywhere));
    assert!(e.hand_off(&["far".into(), "join".into(), "runs".into()], now).is_none());
    assert!(e.status("far").is_some());
}

#[test]
fn a_task_whose_requirement_no_agent_here_meets_is_named_with_it() {
    let mut e = engine();
    let now = now0();
    let mut skills = Skills::default();
    skills.proficiency.insert("nap".into(), 0.3);
    e.agent_up_with("a", caps(&["nap"]), skills, 1, 1, now);
    let r = Requirement {
        capabilities: vec!["nap".into()],
        min_proficiency: 0.5,
    };
    let mut task = cap_task("good-nap", &r.key(), Priority::Normal);
    task.requires = Some(r.clone());
    e.enqueue(task, TaskStatus::queued(), now);
    let named = e.unserved(10, anywhere);
    assert_eq!(named.len(), 1, "{named:?}");
    assert_eq!(named[0].requires.as_ref(), Some(&r));
    assert_eq!(named[0].tasks, ["good-nap"]);
    // An agent here that meets it: no longer named.
    e.agent_up("b", caps(&["nap"]), 1, 1, now);
    assert!(e.unserved(10, anywhere).is_empty());
}

//! Scheduler decisions, in process and pure: the engine alone, no store, no actors. With 1,000
//! and 10,000 agents and 100,000 queued tasks no agent can run, each decision queues a
//! runnable task, starts it on the agent the strategy picks and finishes it; the figure must
//! not depend on the backlog. A 10,000-task dependency graph is then run through the engine.
//! Run: `cargo bench --bench engine`

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::time::Instant as TokioInstant;
use troupe_actors::scheduler::engine::index::Want;
use troupe_actors::scheduler::engine::{Effect, Engine, Limits, Now};
use troupe_actors::scheduler::RetryPolicy;
use troupe_actors::task::{Priority, Strategy, TaskStatus};

const BACKLOG: usize = 100_000;
const DECISIONS: usize = 200_000;

fn now() -> Now {
    Now {
        at: TokioInstant::now(),
        wall: chrono::Utc::now(),
    }
}

fn engine() -> Engine {
    Engine::new(RetryPolicy {
        base: Duration::from_millis(100),
        max: Duration::from_secs(1),
    })
}

fn started(fx: &[Effect]) -> Vec<(String, String, u32)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Start {
                agent, task, attempt, ..
            } => Some((agent.clone(), task.clone(), *attempt)),
            _ => None,
        })
        .collect()
}

fn decisions(agents: usize, backlog: usize, strategy: Strategy) -> f64 {
    let mut e = engine();
    let t0 = now();
    for i in 0..agents {
        e.agent_up(&format!("agent-{i:05}"), vec!["work".into()], 4, i as u64 + 1, t0);
    }
    for i in 0..backlog {
        let limits = Limits::plain(
            &format!("blocked-{i:06}"),
            Want::Capability("nobody".into()),
            Priority::Critical,
            3,
        );
        e.enqueue(limits, TaskStatus::queued(), t0);
    }
    let start = Instant::now();
    for i in 0..DECISIONS {
        let limits = Limits {
            strategy,
            ..Limits::plain(
                &format!("t-{i:07}"),
                Want::Capability("work".into()),
                Priority::Normal,
                3,
            )
        };
        let fx = e.enqueue(limits, TaskStatus::queued(), t0);
        for (agent, task, attempt) in started(&fx) {
            e.finished(&task, attempt, &agent, Ok(json!(null)), t0);
        }
    }
    DECISIONS as f64 / start.elapsed().as_secs_f64()
}

fn graph(tasks: usize) -> f64 {
    let mut e = engine();
    let t0 = now();
    for i in 0..64 {
        e.agent_up(&format!("agent-{i:02}"), vec!["work".into()], 4, i + 1, t0);
    }
    let start = Instant::now();
    let mut running = Vec::new();
    for i in 0..tasks {
        let mut deps = Vec::new();
        if i > 0 {
            deps.push(format!("g-{:06}", i / 2));
        }
        if i > 1 {
            deps.push(format!("g-{:06}", i - 1));
        }
        let limits = Limits {
            depends_on: deps,
            ..Limits::plain(
                &format!("g-{i:06}"),
                Want::Capability("work".into()),
                Priority::Normal,
                3,
            )
        };
        running.extend(started(&e.enqueue(limits, TaskStatus::queued(), t0)));
    }
    let mut done = 0;
    while let Some((agent, task, attempt)) = running.pop() {
        running.extend(started(&e.finished(&task, attempt, &agent, Ok(json!(1)), t0)));
        done += 1;
    }
    assert_eq!(done, tasks, "every task of the graph ran");
    tasks as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    println!("scheduler engine decisions (queue, start, finish), {DECISIONS} per run");
    for agents in [1_000, 10_000] {
        for backlog in [0, BACKLOG] {
            for strategy in [
                Strategy::Score,
                Strategy::RoundRobin,
                Strategy::LeastConnections,
                Strategy::Weighted,
            ] {
                let rate = decisions(agents, backlog, strategy);
                println!(
                    "  {agents:>6} agents, {backlog:>6} unrunnable queued, {:<17} {rate:>12.0} decisions/s",
                    strategy.as_str()
                );
            }
        }
    }
    println!(
        "a 10,000-task graph (each task after its predecessor and its half): {:.0} tasks/s",
        graph(10_000)
    );
}

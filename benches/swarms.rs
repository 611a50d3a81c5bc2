//! Swarms in an embedded node: 100 swarms of 20 builtin echo agents created (time, memory);
//! a mesh swarm's throughput against the same number of agents without a swarm; and the
//! latency of a scatter-gather over 20 members, submit to result.
//! Run: `cargo bench --bench swarms`

use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use troupe_actors::swarm::{Aggregate, CreateSwarmRequest, MemberStrategy, SwarmTaskMode, Template, Topology};
use troupe_actors::task::SubmitTaskRequest;
use troupe_actors::Api;
use troupe_runtime::events::EventFilter;

mod common;

const SWARMS: usize = 100;
const MEMBERS: u32 = 20;
const TASKS: usize = 4_000;
const GATHERS: usize = 200;

fn swarm(name: String, topology: Topology, size: u32) -> CreateSwarmRequest {
    CreateSwarmRequest {
        name,
        topology,
        templates: vec![Template {
            agent: common::echo("echo".into(), 4),
            count: size,
        }],
        members: Vec::new(),
        min_agents: None,
        max_agents: None,
        strategy: MemberStrategy::OneForOne,
        autoscale: None,
        memory_limit_bytes: None,
        lead: None,
        node: None,
        budget: None,
    }
}

const SUBMITTERS: usize = 64;

/// Runs `submit(i)` for `TASKS` values of i from `SUBMITTERS` concurrent submitters, then
/// waits for as many `kind` events; how long all took.
async fn run<F, Fut>(api: &Api, kind: &str, submit: F) -> Duration
where
    F: Fn(Api, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let after = api.last_seq().await.expect("seq");
    let started = Instant::now();
    let per = TASKS / SUBMITTERS;
    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|s| {
            let (api, submit) = (api.clone(), submit.clone());
            tokio::spawn(async move {
                for i in 0..per {
                    submit(api.clone(), s * per + i).await;
                }
            })
        })
        .collect();
    for s in submitters {
        s.await.expect("submitter");
    }
    common::await_events(api, after, kind, per * SUBMITTERS, Duration::from_secs(600)).await;
    started.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (_dir, node) = common::node().await;
    let api = node.api().clone();
    api.agents()
        .spawn(common::echo("warm-up".into(), 1), None)
        .await
        .expect("spawn");
    tokio::time::sleep(Duration::from_millis(200)).await;

    // 100 swarms x 20 members.
    let rss_before = common::rss_bytes();
    let started = Instant::now();
    let mut ids = Vec::new();
    for s in 0..SWARMS {
        let view = api
            .swarms()
            .create(swarm(format!("swarm-{s}"), Topology::Hierarchical, MEMBERS))
            .await
            .expect("create");
        ids.push(view.spec.id);
    }
    let took = started.elapsed();
    api.store().flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = common::rss_bytes().saturating_sub(rss_before) as f64;
    let agents = SWARMS * MEMBERS as usize;
    println!("{SWARMS} swarms x {MEMBERS} builtin echo agents ({agents} agents), created one after another");
    common::report(
        "  all created (each answered with its members started)",
        took.as_secs_f64(),
        "s",
    );
    common::report("  per swarm", took.as_secs_f64() * 1e3 / SWARMS as f64, "ms");
    common::report(
        "  memory per swarm (RSS delta, members included)",
        grown / SWARMS as f64 / 1024.0,
        "KiB",
    );
    common::report("  memory per member", grown / agents as f64 / 1024.0, "KiB");
    for id in &ids {
        api.swarms().destroy(id).await.expect("destroy");
    }

    // The same 20 agents' worth of work: plain tasks, then a mesh swarm's.
    for i in 0..MEMBERS {
        api.agents()
            .spawn(common::echo(format!("plain-{i}"), 4), None)
            .await
            .expect("spawn");
    }
    let took = run(&api, "TASK_SUCCEEDED", |api: Api, i| async move {
        let req = SubmitTaskRequest::to_capability("echo", json!({ "i": i }));
        api.tasks().submit(req, None).await.expect("submit");
    })
    .await;
    let plain = TASKS as f64 / took.as_secs_f64();
    // The plain agents stay, but their capability is not the swarm's: only members take its work.
    let mesh = api
        .swarms()
        .create(swarm("mesh".into(), Topology::Mesh, MEMBERS))
        .await
        .expect("create");
    let swarm_id = mesh.spec.id.clone();
    let took = run(&api, "SWARM_TASK_SUCCEEDED", move |api: Api, i| {
        let id = swarm_id.clone();
        async move {
            let mode = SwarmTaskMode::Single {
                capabilities: Vec::new(),
                payload: json!({ "i": i }),
            };
            api.swarms().submit_task(&id, mode).await.expect("submit");
        }
    })
    .await;
    let swarmed = TASKS as f64 / took.as_secs_f64();
    println!("{TASKS} one-step tasks over {MEMBERS} builtin echo agents, {SUBMITTERS} submitters");
    common::report("  plain tasks by capability", plain, "tasks/s");
    common::report("  a mesh swarm's SINGLE tasks", swarmed, "tasks/s");
    common::report("  swarm / plain", swarmed / plain, "x");

    // Scatter-gather over all 20 members, one at a time: submit to the swarm task's end.
    let gather = |_: usize| SwarmTaskMode::ScatterGather {
        k: MEMBERS,
        aggregate: Aggregate::Majority,
        capabilities: Vec::new(),
        payload: json!({ "q": 1 }),
    };
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    let filter = EventFilter {
        kinds: Some(["SWARM_TASK_SUCCEEDED".to_string(), "SWARM_TASK_FAILED".to_string()].into()),
        subject: Some(mesh.spec.id.clone()),
    };
    let after = api.last_seq().await.expect("seq");
    let mut ends = Box::pin(api.subscribe(after, filter));
    for i in 0..GATHERS {
        let t = Instant::now();
        api.swarms()
            .submit_task(&mesh.spec.id, gather(i))
            .await
            .expect("submit");
        let end = ends.next().await.expect("an end").expect("an event");
        assert_eq!(end.kind, "SWARM_TASK_SUCCEEDED", "{end:?}");
        h.record(t.elapsed().as_micros() as u64).expect("record");
    }
    println!("scatter-gather to {MEMBERS} members, MAJORITY, {GATHERS} one after another");
    common::report("  p50", h.value_at_quantile(0.5) as f64 / 1e3, "ms");
    common::report("  p99", h.value_at_quantile(0.99) as f64 / 1e3, "ms");
    common::report("  max", h.max() as f64 / 1e3, "ms");
    node.shutdown(Duration::from_secs(5)).await;
}

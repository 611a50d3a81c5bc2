//! Swarms through the front door, on a real `troupe serve` with builtin echo members:
//! `swarms-create` creates 100 swarms of 20 with `createSwarm` (time, the node's memory);
//! `swarms-mesh` submits 20,000 one-step tasks with 64 clients to 20 agents, once as plain
//! tasks and once as a MESH swarm's SINGLE tasks (the ratio is the swarm's overhead);
//! `swarms-gather` times 200 scatter-gathers over 20 members, each from `submitSwarmTask`
//! until its SWARM_TASK_SUCCEEDED arrives on the client's WebSocket subscription.

use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::server::{rss_kib, subscribe, Server};
use crate::{report, report_latency, Unit};

const SWARMS: usize = 100;
const MEMBERS: usize = 20;
const TASKS: usize = 20_000;
const CLIENTS: usize = 64;
const GATHERS: usize = 200;

/// `createSwarm`'s input: `size` builtin echo members with 4 slots each.
fn swarm(name: &str, topology: &str, size: usize) -> Value {
    json!({ "name": name, "topology": topology, "templates": [{ "count": size, "agent": {
        "name": "echo", "backend": { "builtin": { "kind": "echo" } }, "capabilities": ["echo"],
        "maxConcurrentTasks": 4 } }] })
}

async fn create(server: &Server, input: Value) -> String {
    let q = "mutation($input: CreateSwarmInput!) { createSwarm(input: $input) { id members { id } } }";
    let made = server.gql(q, json!({ "input": input })).await;
    assert_eq!(
        made["createSwarm"]["members"].as_array().map(Vec::len),
        input["templates"][0]["count"].as_u64().map(|n| n as usize),
        "every member started: {made}"
    );
    made["createSwarm"]["id"].as_str().expect("an id").to_owned()
}

pub async fn create_many() {
    let server = Server::start("swarms-create", &[]).await;
    let before = rss_kib(server.pid());
    let started = Instant::now();
    let mut each = Histogram::<u64>::new(3).expect("histogram");
    for s in 0..SWARMS {
        let t = Instant::now();
        create(&server, swarm(&format!("swarm-{s}"), "HIERARCHICAL", MEMBERS)).await;
        each.record(t.elapsed().as_micros() as u64).expect("record");
    }
    let took = started.elapsed();
    let grown = rss_kib(server.pid()).saturating_sub(before) as f64;
    println!("createSwarm over HTTP: {SWARMS} swarms x {MEMBERS} builtin echo members, one after another");
    report(
        "  all created (each answered with its members started)",
        took.as_secs_f64(),
        "s",
    );
    report_latency("  createSwarm", &each, Unit::Micros);
    report(
        "  node memory per swarm (RSS delta, members included)",
        grown / SWARMS as f64,
        "KiB",
    );
    report("  node memory per member", grown / (SWARMS * MEMBERS) as f64, "KiB");
}

/// Counts the swarm task ends a subscription delivers until `n` have succeeded (one
/// failing stops the run).
async fn await_swarm_tasks(ws: &mut super::server::Ws, n: usize) {
    let mut seen = 0;
    while seen < n {
        let msg = tokio::time::timeout(Duration::from_secs(600), ws.next())
            .await
            .expect("swarm tasks end in time");
        let Some(Ok(Message::Text(text))) = msg else { continue };
        let text = text.as_str();
        if text.starts_with(r#"{"type":"next""#) {
            assert!(text.contains("SWARM_TASK_SUCCEEDED"), "{text}");
            seen += 1;
        }
    }
}

/// A subscription to the ends of swarm tasks.
async fn swarm_task_ends(server: &Server) -> super::server::Ws {
    let query = "subscription($kinds: [String!]) { events(kinds: $kinds) { kind subject } }";
    let kinds = json!({ "kinds": ["SWARM_TASK_SUCCEEDED", "SWARM_TASK_FAILED"] });
    subscribe(&server.addr, &server.token, query, kinds).await
}

pub async fn mesh() {
    let server = Server::start("swarms-mesh", &[]).await;
    server.echo_agents(MEMBERS, 4).await;
    let plain = |c: usize, i: usize| {
        json!({ "query": "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id } }",
                "variables": { "input": { "capability": "echo", "payload": { "c": c, "i": i } } } })
    };
    let started = Instant::now();
    server.load(CLIENTS, TASKS, plain, |_| true).await;
    server.await_succeeded(TASKS as u64).await;
    let plain_rate = TASKS as f64 / started.elapsed().as_secs_f64();

    let id = create(&server, swarm("mesh", "MESH", MEMBERS)).await;
    let body = move |c: usize, i: usize| {
        json!({ "query": "mutation($id: ID!, $input: SubmitSwarmTaskInput!) { submitSwarmTask(id: $id, input: $input) { id } }",
                "variables": { "id": id, "input": { "mode": "SINGLE", "payload": { "c": c, "i": i } } } })
    };
    // Read while the load runs, as a client following its work would.
    let mut ends = swarm_task_ends(&server).await;
    let all_ended = tokio::spawn(async move { await_swarm_tasks(&mut ends, TASKS).await });
    let started = Instant::now();
    server.load(CLIENTS, TASKS, body, |_| true).await;
    all_ended.await.expect("the subscriber");
    let mesh_rate = TASKS as f64 / started.elapsed().as_secs_f64();
    println!("{TASKS} one-step tasks over HTTP from {CLIENTS} clients, {MEMBERS} builtin echo agents");
    report("  plain tasks, submit to all done", plain_rate, "tasks/s");
    report("  MESH swarm SINGLE tasks, submit to all done", mesh_rate, "tasks/s");
    report("  swarm / plain", mesh_rate / plain_rate, "x");
}

pub async fn gather() {
    let server = Server::start("swarms-gather", &[]).await;
    let id = create(&server, swarm("gatherers", "HIERARCHICAL", MEMBERS)).await;
    let mut ws = swarm_task_ends(&server).await;
    // The subscription is live once an event reaches it: a first gather, not timed.
    let q = "mutation($id: ID!, $input: SubmitSwarmTaskInput!) { submitSwarmTask(id: $id, input: $input) { id } }";
    let input =
        |i: usize| json!({ "mode": "SCATTER_GATHER", "k": MEMBERS, "aggregate": "MAJORITY", "payload": { "i": i } });
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for i in 0..=GATHERS {
        let t = Instant::now();
        server.gql(q, json!({ "id": id, "input": input(i) })).await;
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(60), ws.next())
                .await
                .expect("the gather's end in time");
            let Some(Ok(Message::Text(text))) = msg else { continue };
            let v: Value = serde_json::from_str(text.as_str()).expect("json");
            if v["type"] == "next" {
                assert_eq!(v["payload"]["data"]["events"]["kind"], "SWARM_TASK_SUCCEEDED", "{v}");
                break;
            }
        }
        if i > 0 {
            h.record(t.elapsed().as_micros() as u64).expect("record");
        }
    }
    println!("scatter-gather over HTTP: {GATHERS} in a row, {MEMBERS} builtin echo members, MAJORITY, end seen on a WebSocket subscription");
    report_latency("  submitSwarmTask to SWARM_TASK_SUCCEEDED", &h, Unit::Micros);
}

//! Work and messages through the front door, on a real `troupe serve` with 1,000 builtin echo
//! agents: `tasks-1k` submits 100,000 tasks with 64 GraphQL clients and reads back each one's
//! submit-to-done time as the node recorded it; `messages` times `sendMessage` round trips
//! over HTTP (64 clients) and one `publish` to 1,000 subscribed agents until each has answered.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::server::Server;
use crate::{report, report_latency, Unit};

const CLIENTS: usize = 64;
const AGENTS: usize = 1_000;
const TASKS: usize = 100_000;
const ROUND_TRIPS: usize = 50_000;

/// Spawns `AGENTS` echo agents (4 slots each) subscribed to `bench.#`, 16 requests at a time.
async fn agents(server: &Server) {
    let q = "mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }";
    for chunk in (0..AGENTS).collect::<Vec<_>>().chunks(16) {
        let spawns = chunk.iter().map(|i| {
            let input = json!({ "name": format!("echo-{i}"), "backend": { "builtin": { "kind": "echo" } },
                                "capabilities": ["echo"], "maxConcurrentTasks": 4, "topics": ["bench.#"] });
            async move { server.gql(q, json!({ "input": input })).await }
        });
        futures::future::join_all(spawns).await;
    }
}

pub async fn tasks_many() {
    let server = Server::start("tasks-1k", &[]).await;
    agents(&server).await;
    let body = |c: usize, i: usize| {
        json!({ "query": "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id } }",
                "variables": { "input": { "capability": "echo", "payload": { "c": c, "i": i } } } })
    };
    let started = Instant::now();
    let (submitted, submits) = server.load(CLIENTS, TASKS, body, |_| true).await;
    let n = TASKS as u64;
    server.await_succeeded(n).await;
    let took = started.elapsed();
    // Each task's submit to done, as the node recorded it.
    let q = "query($after: String) { tasks(first: 500, after: $after) { pageInfo { hasNextPage endCursor }
             nodes { createdAt finishedAt } } }";
    let mut done = Histogram::<u64>::new(3).expect("histogram");
    let mut after = Value::Null;
    loop {
        let page = server.gql(q, json!({ "after": after })).await;
        for t in page["tasks"]["nodes"].as_array().expect("nodes") {
            let at = |f: &str| chrono::DateTime::parse_from_rfc3339(t[f].as_str().expect("a time")).expect("rfc3339");
            let us = (at("finishedAt") - at("createdAt"))
                .num_microseconds()
                .unwrap_or(0)
                .max(0);
            done.record(us as u64).expect("record");
        }
        if page["tasks"]["pageInfo"]["hasNextPage"] != json!(true) {
            break;
        }
        after = page["tasks"]["pageInfo"]["endCursor"].clone();
    }
    println!("submitTask over HTTP: {CLIENTS} clients, {n} builtin tasks across {AGENTS} echo agents");
    report("  acknowledged submits", n as f64 / submitted.as_secs_f64(), "tasks/s");
    report(
        "  first submit to last success",
        n as f64 / took.as_secs_f64(),
        "tasks/s",
    );
    report_latency("  submitTask latency", &submits, Unit::Micros);
    report_latency("  submit to done (node's times)", &done, Unit::Micros);
}

pub async fn messages() {
    let server = Server::start("messages", &[]).await;
    agents(&server).await;
    let ids: Vec<String> = {
        let q = "query($after: String) { agents(first: 500, after: $after) { pageInfo { hasNextPage endCursor } nodes { id } } }";
        let mut ids = Vec::new();
        let mut after = Value::Null;
        loop {
            let page = server.gql(q, json!({ "after": after })).await;
            ids.extend(
                page["agents"]["nodes"]
                    .as_array()
                    .expect("nodes")
                    .iter()
                    .map(|a| a["id"].as_str().expect("id").to_owned()),
            );
            if page["agents"]["pageInfo"]["hasNextPage"] != json!(true) {
                break;
            }
            after = page["agents"]["pageInfo"]["endCursor"].clone();
        }
        ids
    };
    assert_eq!(ids.len(), AGENTS);

    // One publish, timed until every subscriber has answered it (its newest history entry).
    let since = chrono::Utc::now();
    let started = Instant::now();
    let q = r#"mutation { publish(topic: "bench.fanout", payload: { hello: "all" }) { queued } }"#;
    let queued = server.gql(q, json!({})).await["publish"]["queued"].as_u64();
    assert_eq!(queued, Some(AGENTS as u64));
    let queued_in = started.elapsed();
    let q = "query($after: String) { agents(first: 500, after: $after) { pageInfo { hasNextPage endCursor } nodes { messages { at } } } }";
    loop {
        let mut answered = 0;
        let mut after = Value::Null;
        loop {
            let page = server.gql(q, json!({ "after": after })).await;
            for a in page["agents"]["nodes"].as_array().expect("nodes") {
                let last = a["messages"]
                    .as_array()
                    .and_then(|m| m.last())
                    .and_then(|m| m["at"].as_str());
                let at = last.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
                answered += usize::from(at.is_some_and(|t| t >= since));
            }
            if page["agents"]["pageInfo"]["hasNextPage"] != json!(true) {
                break;
            }
            after = page["agents"]["pageInfo"]["endCursor"].clone();
        }
        if answered == AGENTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let fanned = started.elapsed();

    // Round trips, spread over the agents.
    let body = move |c: usize, i: usize| {
        json!({ "query": "mutation($to: ID!, $p: JSON!) { sendMessage(to: $to, payload: $p, timeoutMs: 30000) { id } }",
                "variables": { "to": ids[(c * 7919 + i) % ids.len()], "p": { "c": c, "i": i } } })
    };
    let answered = |a: &Value| a["data"]["sendMessage"]["id"].is_string();
    let (took, h) = server.load(CLIENTS, ROUND_TRIPS, body, answered).await;
    println!("messages over HTTP to {AGENTS} builtin echo agents");
    report(
        "  publish: queued for all 1,000 subscribers in",
        queued_in.as_secs_f64() * 1e3,
        "ms",
    );
    report("  publish: answered by all 1,000 in", fanned.as_secs_f64() * 1e3, "ms");
    report(
        "  sendMessage round trips (64 clients)",
        ROUND_TRIPS as f64 / took.as_secs_f64(),
        "/s",
    );
    report_latency("  sendMessage round trip", &h, Unit::Micros);
}

//! GraphQL over HTTP, as a client sends it: concurrent `submitTask`, and a read query at a
//! fixed rate (open loop: latency counts from when the request was due, so a slow answer
//! cannot hide the ones queued behind it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;

use super::server::Server;
use crate::{report, report_latency, Unit};

const CLIENTS: usize = 64;
const SUBMITS: usize = 40_000;

pub async fn submit() {
    let server = Server::start("submit", &[]).await;
    server.echo_agents(64, 16).await;
    let q = "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id } }";
    let body = move |c: usize, i: usize| json!({ "query": q, "variables": { "input": { "capability": "echo", "payload": { "c": c, "i": i } } } });
    let started = Instant::now();
    let (submitted, latencies) = server.load(CLIENTS, SUBMITS, body, |_| true).await;
    server.await_succeeded(SUBMITS as u64).await;
    let finished = started.elapsed();
    let n = SUBMITS as f64;
    println!("submitTask over HTTP: {CLIENTS} clients, {SUBMITS} tasks, 64 echo agents");
    report("  acknowledged submits", n / submitted.as_secs_f64(), "tasks/s");
    report("  submitted to all succeeded", n / finished.as_secs_f64(), "tasks/s");
    report_latency("  submitTask latency", &latencies, Unit::Micros);
}

const RATE: u64 = 2_000;
const SECONDS: u64 = 15;

pub async fn fixed_rate_read() {
    let server = Server::start("reads", &[]).await;
    server.echo_agents(20, 1).await;
    let body = json!({ "query": "{ agents(first: 10) { totalCount nodes { id name state runningTasks } } }" });
    let latencies = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new(3).expect("histogram")));
    let interval = Duration::from_nanos(1_000_000_000 / RATE);
    let start = tokio::time::Instant::now();
    let mut inflight = Vec::with_capacity((RATE * SECONDS) as usize);
    for n in 0..RATE * SECONDS {
        let due = start + interval * n as u32;
        tokio::time::sleep_until(due).await;
        let (http, url, token, body, latencies) = (
            server.http().clone(),
            server.graphql_url(),
            server.token.clone(),
            body.clone(),
            latencies.clone(),
        );
        inflight.push(tokio::spawn(async move {
            let resp = http
                .post(&url)
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .expect("read");
            let ok = resp.status() == 200;
            let _ = resp.bytes().await;
            assert!(ok, "read failed");
            let took = tokio::time::Instant::now().duration_since(due);
            latencies
                .lock()
                .expect("lock")
                .record(took.as_micros() as u64)
                .expect("record");
        }));
    }
    for r in inflight {
        r.await.expect("reader");
    }
    let achieved = (RATE * SECONDS) as f64 / start.elapsed().as_secs_f64();
    println!("read query at a fixed {RATE} requests/s for {SECONDS} s (agents page of 10)");
    report("  achieved rate", achieved, "requests/s");
    report_latency(
        "  latency from when due",
        &latencies.lock().expect("lock"),
        Unit::Micros,
    );
}

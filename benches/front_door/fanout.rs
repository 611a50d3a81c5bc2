//! Subscription fan-out: many WebSocket clients (graphql-transport-ws) each receive every
//! event of a run of tasks. Delivery latency is the client's receive time minus the event's
//! `at` (stamped when the event is made, just before its commit; same machine, same clock).

use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::server::Server;
use crate::{report, report_latency, Unit};

const CLIENTS: usize = 1_000;
const TASKS: usize = 10_000;
/// Events per task: TASK_QUEUED, TASK_STARTED, TASK_SUCCEEDED.
const EVENTS_PER_TASK: usize = 3;

/// Tasks per second of the paced run: below what 1,000 subscribers can take (each task is
/// 3,000 deliveries), so latency measures delivery, not a backlog.
const PACED_RATE: u64 = 25;

/// `paced`: submit at [`PACED_RATE`]; otherwise as fast as 64 clients can.
pub async fn fanout(paced: bool) {
    let server = Server::start("fanout", &["--ws-max-connections", "2000"]).await;
    server.echo_agents(16, 16).await;
    let after = server.gql("{ node { lastSeq } }", json!({})).await["node"]["lastSeq"]
        .as_u64()
        .expect("lastSeq");
    let expected = TASKS * EVENTS_PER_TASK;
    let (ready_tx, mut ready) = tokio::sync::mpsc::channel(CLIENTS);
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let (addr, token, ready_tx) = (server.addr.clone(), server.token.clone(), ready_tx.clone());
        clients.push(tokio::spawn(async move {
            client(addr, token, after, expected, ready_tx).await
        }));
    }
    for _ in 0..CLIENTS {
        ready.recv().await.expect("a client came up");
    }
    let started = Instant::now();
    const Q: &str = "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id } }";
    let submit = |http: reqwest::Client, url: String, token: String, n: usize| async move {
        let body = json!({ "query": Q, "variables": { "input": { "capability": "echo", "payload": n } } });
        http.post(&url)
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .expect("submit");
    };
    if paced {
        let interval = Duration::from_nanos(1_000_000_000 / PACED_RATE);
        let start = tokio::time::Instant::now();
        for n in 0..TASKS {
            tokio::time::sleep_until(start + interval * n as u32).await;
            submit(server.http().clone(), server.graphql_url(), server.token.clone(), n).await;
        }
    } else {
        let per = TASKS.div_ceil(64);
        let submitters: Vec<_> = (0..64)
            .map(|s| {
                let (http, url, token) = (server.http().clone(), server.graphql_url(), server.token.clone());
                tokio::spawn(async move {
                    for n in (s * per..(s + 1) * per).filter(|n| *n < TASKS) {
                        submit(http.clone(), url.clone(), token.clone(), n).await;
                    }
                })
            })
            .collect();
        for s in submitters {
            s.await.expect("submitter");
        }
    }
    let mut all = Histogram::<u64>::new(3).expect("histogram");
    for c in clients {
        all.add(c.await.expect("client")).expect("merge");
    }
    let secs = started.elapsed().as_secs_f64();
    let pace = if paced {
        format!("submitted at {PACED_RATE} tasks/s")
    } else {
        "submitted by 64 clients at full speed".into()
    };
    println!("subscription fan-out: {CLIENTS} WebSocket clients x {expected} events ({TASKS} tasks, {pace})");
    report("  deliveries", all.len() as f64 / secs, "events/s");
    report_latency("  delivery latency (event made -> client)", &all, Unit::Micros);
}

/// One client: subscribes to every event after `after`, reads `expected` of them.
async fn client(
    addr: String,
    token: String,
    after: u64,
    expected: usize,
    ready: tokio::sync::mpsc::Sender<()>,
) -> Histogram<u64> {
    let query = "subscription($after: Int64) { events(after: $after) { seq at } }";
    let mut ws = super::server::subscribe(&addr, &token, query, json!({ "after": after })).await;
    let _ = ready.send(()).await;
    let mut latencies = Histogram::<u64>::new(3).expect("histogram");
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut seen = 0;
    while seen < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next()).await.expect("events in time");
        let Some(Ok(Message::Text(text))) = msg else { continue };
        let now = chrono::Utc::now();
        // Only the event's time is needed: found in the text rather than parsing every
        // message whole, so the driver leaves the CPU to the node it measures.
        let text = text.as_str();
        if !text.starts_with(r#"{"type":"next""#) {
            continue;
        }
        let at = text
            .split_once(r#""at":""#)
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(at, _)| at)
            .expect("an event time");
        let at: chrono::DateTime<chrono::Utc> = at.parse().expect("a time");
        let micros = (now - at).num_microseconds().unwrap_or(0).max(0) as u64;
        latencies.record(micros).expect("record");
        seen += 1;
    }
    latencies
}

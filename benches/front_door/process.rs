//! Agents with processes, through the gateway: 10,000 tasks through exec agents (a process
//! per task) and through process agents (one long-lived process each), side by side; and a
//! process agent's pause and restart as a client sees them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::server::Server;
use crate::{report, report_latency, Unit};

const TASKS: usize = 10_000;
const CLIENTS: usize = 16;
const AGENTS: usize = 4;
const SLOTS: i64 = 8;

fn python_agent() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/agents/process_agent.py");
    vec!["python3".into(), path.into()]
}

/// Tasks/s and each task's latency from its submission to its end (the node's own
/// `createdAt` and `finishedAt`), for exec agents and for process agents.
pub async fn exec_vs_process() {
    for (kind, backend, payload) in [
        (
            "exec",
            json!({ "exec": { "command": ["/bin/cat"] } }),
            json!({ "v": 1 }),
        ),
        (
            "process",
            json!({ "process": { "command": python_agent() } }),
            json!({ "op": "echo", "value": 1 }),
        ),
    ] {
        let server = Server::start(kind, &[]).await;
        let q = "mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }";
        for i in 0..AGENTS {
            let input = json!({ "name": format!("{kind}-{i}"), "backend": backend, "capabilities": ["work"],
                                "maxConcurrentTasks": SLOTS });
            server.gql(q, json!({ "input": input })).await;
        }
        let server = Arc::new(server);
        let started = Instant::now();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (server, payload) = (server.clone(), payload.clone());
                tokio::spawn(async move {
                    let q = "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id } }";
                    for _ in 0..TASKS / CLIENTS {
                        let input = json!({ "capability": "work", "payload": payload });
                        server.gql(q, json!({ "input": input })).await;
                    }
                })
            })
            .collect();
        for c in clients {
            c.await.expect("client");
        }
        server.await_succeeded(TASKS as u64).await;
        let elapsed = started.elapsed();
        report(
            &format!("{kind}: {TASKS} tasks"),
            TASKS as f64 / elapsed.as_secs_f64(),
            "tasks/s",
        );
        report_latency(
            &format!("{kind}: submitted → finished"),
            &latencies(&server).await,
            Unit::Micros,
        );
    }
}

/// Every succeeded task's finishedAt − createdAt, µs.
async fn latencies(server: &Server) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    let q = "query($after: String) { tasks(state: SUCCEEDED, first: 500, after: $after) { \
             edges { cursor node { createdAt finishedAt } } pageInfo { hasNextPage } } }";
    let mut after: Option<String> = None;
    loop {
        let page = server.gql(q, json!({ "after": after })).await;
        let edges = page["tasks"]["edges"].as_array().cloned().unwrap_or_default();
        for e in &edges {
            let at = |f: &str| {
                chrono::DateTime::parse_from_rfc3339(e["node"][f].as_str().expect("a time")).expect("RFC 3339")
            };
            let us = (at("finishedAt") - at("createdAt")).num_microseconds().unwrap_or(0);
            h.record(us.max(0) as u64).expect("record");
        }
        if page["tasks"]["pageInfo"]["hasNextPage"] != true {
            return h;
        }
        after = edges.last().and_then(|e| e["cursor"].as_str()).map(String::from);
    }
}

/// pauseAgent and resumeAgent round trips (they answer once the process group is stopped or
/// continued), and restartAgent until the agent's first task after it has answered.
pub async fn pause_restart() {
    const ROUNDS: usize = 50;
    let server = Server::start("pause", &[]).await;
    let spawn = "mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }";
    let input = json!({ "name": "py", "backend": { "process": { "command": python_agent() } } });
    let agent = server.gql(spawn, json!({ "input": input })).await["spawnAgent"]["id"].clone();
    let act = |m: &str| format!("mutation($id: ID!) {{ {m}(id: $id) {{ state }} }}");
    let (pause, resume, restart) = (act("pauseAgent"), act("resumeAgent"), act("restartAgent"));
    let mut paused = Histogram::<u64>::new(3).expect("histogram");
    let mut resumed = Histogram::<u64>::new(3).expect("histogram");
    let mut serving = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..ROUNDS {
        let t = Instant::now();
        expect_state(
            &server.gql(&pause, json!({ "id": agent })).await,
            "pauseAgent",
            "PAUSED",
        );
        paused.record(t.elapsed().as_micros() as u64).expect("record");
        let t = Instant::now();
        expect_state(
            &server.gql(&resume, json!({ "id": agent })).await,
            "resumeAgent",
            "RUNNING",
        );
        resumed.record(t.elapsed().as_micros() as u64).expect("record");
    }
    for _ in 0..ROUNDS {
        let t = Instant::now();
        expect_state(
            &server.gql(&restart, json!({ "id": agent })).await,
            "restartAgent",
            "RUNNING",
        );
        run_one(&server, &agent).await;
        serving.record(t.elapsed().as_micros() as u64).expect("record");
    }
    report_latency("process agent: pause → PAUSED", &paused, Unit::Micros);
    report_latency("process agent: resume → RUNNING", &resumed, Unit::Micros);
    report_latency("process agent: restart → first task answered", &serving, Unit::Micros);
}

fn expect_state(answer: &Value, field: &str, state: &str) {
    assert_eq!(answer[field]["state"], state, "{answer}");
}

async fn run_one(server: &Server, agent: &Value) {
    let q = "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id } }";
    let id = server
        .gql(
            q,
            json!({ "input": { "agentId": agent, "payload": { "op": "echo", "value": 1 } } }),
        )
        .await["submitTask"]["id"]
        .clone();
    let q = "query($id: ID!) { task(id: $id) { state } }";
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.gql(q, json!({ "id": id })).await["task"]["state"] != "SUCCEEDED" {
        assert!(Instant::now() < deadline, "the task after a restart never ended");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

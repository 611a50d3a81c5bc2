//! Fault experiments through the front door (`faults`): repeated injections into a real
//! node's supervision tree, each an experiment started over GraphQL and read back when it
//! ended; the node's own figures per injection (`timeToDetectMs`, `timeToRecoverMs`), plus
//! the client's time from `startExperiment` to the report. One experiment at a time, so each
//! injection meets a settled tree.
//!
//! - `CRASH` of a builtin agent (under `agents`, one_for_one): detected when its supervisor
//!   records the failure, recovered when the agent is started again;
//! - `CRASH` of a member of a one_for_all swarm of 5: recovered when all 5 were started again;
//! - `PROCESS_KILL` of a process agent's group: recovered when the agent answers with a new
//!   process; detection is what the agent reports about its lost process;
//! - `HANG` of a supervisor (`swarms`) held 500 ms, with the watchdog at 100 ms and 2 misses:
//!   detected when the watchdog reports it, killed and restarted by `core` before the hold
//!   ends; recovered when it answers a ping after the revert (so at least the hold);
//! - `DISK_FULL` held 200 ms while the client writes: detected at the first refused write,
//!   recovered when a write through the store commits after the revert;
//! - `STORE_REJECT` and `STORE_SLOW_COMMIT` (100 ms) held 200 ms while the client writes,
//!   likewise (a slowed commit is detected when the slowed write commits);
//! - `MESSAGE_DELAY` (100 ms) and `MESSAGE_DROP` held 300 ms while the client sends the
//!   agent a message: detected at the first message delayed or dropped, recovered when the
//!   agent answers after the revert;
//! - `HANG` of an agent (agent watchdog 100 ms x 2) and of a VM's actor (watchdog 100 ms x 2),
//!   each held 500 ms, and of the services endpoint (watchdog 200 ms x 2: it also watches the
//!   scheduler and the cluster link) held 1 s: detected when the watchdog reports it;
//! - `PROCESS_PAUSE` of a process agent for 200 ms (nothing in Troupe sees a stopped process
//!   within that: detection "never"), recovered when it answers after SIGCONT;
//! - `HOST_DISCONNECT` and `HOST_HANG` of a simulated host for 200 ms: detected when its
//!   driver records it UNREACHABLE, recovered when it is UP again;
//! - `DOMAIN_DESTROY` of a VM whose run policy is ALWAYS: detected when its actor sees the
//!   domain gone, recovered when the domain runs again.
//!
//! - `PARTITION` of one node of three (fresh nodes, both ways) for 4 s: detected when the
//!   majority suspects it (`MEMBER_SUSPECT`), recovered once it is UP and fenced again.
//!
//! The node runs with no restart backoff (`TROUPE_BENCH_BACKOFF_MS`, default 0), so each
//! figure is one restart, not a place on the backoff ladder 50 crashes in a row climb.

use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::server::Server;
use crate::report;

const ROUNDS: usize = 50;
/// Rounds of the faults whose recovery waits for a timer (a host's probe, a VM's sweep).
const SLOW_ROUNDS: usize = 20;
/// Rounds of a partition: each holds for seconds, then waits for the node to rejoin.
const PARTITION_ROUNDS: usize = 5;

/// What the client does while an experiment runs: a write (what a store fault refuses, a
/// refused one being the detection), or a message to an agent (what a message fault delays
/// or drops).
#[derive(Clone)]
enum Load {
    Write,
    Message(String),
}

async fn experiment(server: &Server, input: Value, load: &Load) -> Value {
    let q = "mutation($i: StartExperimentInput!) { startExperiment(input: $i) { id } }";
    let answer = server.answer(q, json!({ "i": input })).await;
    if answer.get("errors").is_some() {
        return json!({ "state": "REFUSED", "report": { "reason": answer["errors"][0]["message"] } });
    }
    let id = answer["data"]["startExperiment"]["id"].clone();
    match load {
        Load::Write => {
            let write = "mutation { createToken(input: { role: VIEWER, name: \"bench\" }) { token { id } } }";
            let _ = server.answer(write, json!({})).await;
        }
        Load::Message(agent) => {
            let send = "mutation($to: ID!) { sendMessage(to: $to, payload: \"bench\", timeoutMs: 1000) { id } }";
            let _ = server.answer(send, json!({ "to": agent })).await;
        }
    }
    let read = "query($id: ID!) { experiment(id: $id) { state injections { timeToDetectMs timeToRecoverMs outcome } report { verdict reason } } }";
    loop {
        let e = server.gql(read, json!({ "id": id })).await["experiment"].clone();
        if ["PASSED", "FAILED", "ABORTED"].contains(&e["state"].as_str().unwrap_or("")) {
            return e;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

async fn running(server: &Server, id: &str) {
    let q = "query($id: ID!) { agent(id: $id) { state } }";
    while server.gql(q, json!({ "id": id })).await["agent"]["state"] != "RUNNING" {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// One fault at a target, as an experiment's input.
fn one(action: &str, target: Value, duration_ms: Option<u64>) -> Value {
    let mut input =
        json!({ "name": "bench", "recoverWithinMs": 30000, "faults": [{ "action": action, "target": target }] });
    if let Some(ms) = duration_ms {
        input["durationMs"] = json!(ms);
    }
    input
}

async fn rounds(server: &Server, name: &str, input: Value, agent: Option<&str>) {
    repeat(server, name, input, agent, &Load::Write, ROUNDS).await
}

async fn repeat(server: &Server, name: &str, input: Value, agent: Option<&str>, load: &Load, n: usize) {
    let mut detect = Histogram::<u64>::new(3).expect("histogram");
    let mut recover = Histogram::<u64>::new(3).expect("histogram");
    let mut report_ms = Histogram::<u64>::new(3).expect("histogram");
    let mut failed = 0;
    for _ in 0..n {
        if let Some(agent) = agent {
            running(server, agent).await;
        }
        let t0 = Instant::now();
        let e = experiment(server, input.clone(), load).await;
        report_ms.record(t0.elapsed().as_millis() as u64).expect("record");
        if e["state"] != "PASSED" {
            failed += 1;
            eprintln!("{name}: {}", e["report"]["reason"]);
            continue;
        }
        let inj = &e["injections"][0];
        if let Some(d) = inj["timeToDetectMs"].as_u64() {
            detect.record(d).expect("record");
        }
        recover
            .record(inj["timeToRecoverMs"].as_u64().unwrap_or(0))
            .expect("record");
    }
    for (what, h) in [("detect", &detect), ("recover", &recover), ("report", &report_ms)] {
        if h.is_empty() {
            report(&format!("{name} time to {what}"), f64::NAN, "ms (never)");
            continue;
        }
        for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
            report(
                &format!("{name} time to {what} {label}"),
                h.value_at_quantile(q) as f64,
                "ms",
            );
        }
    }
    report(&format!("{name} experiments failed of {n}"), failed as f64, "");
}

/// One fault with its params.
fn with_params(action: &str, target: Value, duration_ms: u64, params: Value) -> Value {
    let mut input = one(action, target, Some(duration_ms));
    input["faults"][0]["params"] = params;
    input
}

pub async fn faults() {
    let backoff = std::env::var("TROUPE_BENCH_BACKOFF_MS").unwrap_or_else(|_| "0".into());
    // Restart limits far above the rounds: every injection is a restart the ladder allows
    // (past them an injection is refused, as it should be).
    let server = Server::start(
        "faults",
        &[
            "--fault-injection",
            "true",
            "--agent-max-restarts",
            "100000",
            "--supervisor-max-restarts",
            "100000",
            // Without a backoff, each figure is the restart itself; with the default one,
            // back-to-back injections climb the backoff ladder (BENCHMARKS.md has both).
            "--supervisor-backoff-ms",
            &backoff,
            // The watchdogs, quick enough to notice a held actor within its hold.
            "--watchdog-ms",
            "SUPERVISOR=100,SERVICE=200,VM=100",
            "--watchdog-misses",
            "2",
            "--agent-watchdog-ms",
            "100",
            "--agent-watchdog-misses",
            "2",
            // A VM's sweep and a host's probe every 100 ms: recovery waits for one.
            "--vm-reconcile-ms",
            "100",
        ],
    )
    .await;
    let spawn = "mutation($i: SpawnAgentInput!) { spawnAgent(input: $i) { id } }";
    let agent = server
        .gql(
            spawn,
            json!({ "i": { "name": "target", "backend": { "builtin": { "kind": "echo" } } } }),
        )
        .await["spawnAgent"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let ids = |id: &str| json!({ "ids": [id] });
    rounds(
        &server,
        "faults CRASH builtin agent",
        one("CRASH", ids(&agent), None),
        Some(&agent),
    )
    .await;

    let swarm = server
        .gql(
            "mutation($i: CreateSwarmInput!) { createSwarm(input: $i) { members { id } } }",
            json!({ "i": { "name": "ofa", "strategy": "ONE_FOR_ALL", "templates": [{ "count": 5, "agent": { "name": "m", "backend": { "builtin": { "kind": "echo" } } } }] } }),
        )
        .await;
    let member = swarm["createSwarm"]["members"][0]["id"]
        .as_str()
        .expect("member")
        .to_owned();
    rounds(
        &server,
        "faults CRASH one_for_all member of 5",
        one("CRASH", ids(&member), None),
        Some(&member),
    )
    .await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/agents/process_agent.py");
    let proc_agent = server
        .gql(
            spawn,
            json!({ "i": { "name": "proc", "backend": { "process": { "command": ["python3", script] } } } }),
        )
        .await["spawnAgent"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    rounds(
        &server,
        "faults PROCESS_KILL process agent",
        one("PROCESS_KILL", ids(&proc_agent), None),
        Some(&proc_agent),
    )
    .await;
    rounds(
        &server,
        "faults HANG supervisor (watchdog 100 ms x 2)",
        one("HANG", ids("swarms"), Some(500)),
        None,
    )
    .await;
    rounds(
        &server,
        "faults DISK_FULL 200 ms",
        one("DISK_FULL", json!({}), Some(200)),
        None,
    )
    .await;
    rounds(
        &server,
        "faults STORE_REJECT 200 ms",
        one("STORE_REJECT", json!({}), Some(200)),
        None,
    )
    .await;
    rounds(
        &server,
        "faults STORE_SLOW_COMMIT 100 ms, held 200 ms",
        with_params("STORE_SLOW_COMMIT", json!({}), 200, json!({ "delayMs": 100 })),
        None,
    )
    .await;
    let message = Load::Message(agent.clone());
    repeat(
        &server,
        "faults MESSAGE_DELAY 100 ms, held 300 ms",
        with_params("MESSAGE_DELAY", ids(&agent), 300, json!({ "delayMs": 100 })),
        Some(&agent),
        &message,
        ROUNDS,
    )
    .await;
    repeat(
        &server,
        "faults MESSAGE_DROP held 300 ms",
        one("MESSAGE_DROP", ids(&agent), Some(300)),
        Some(&agent),
        &message,
        ROUNDS,
    )
    .await;
    rounds(
        &server,
        "faults HANG builtin agent (agent watchdog 100 ms x 2)",
        one("HANG", ids(&agent), Some(500)),
        Some(&agent),
    )
    .await;
    rounds(
        &server,
        "faults HANG services endpoint (watchdog 200 ms x 2)",
        one("HANG", ids("services"), Some(1000)),
        None,
    )
    .await;
    rounds(
        &server,
        "faults PROCESS_PAUSE process agent 200 ms",
        one("PROCESS_PAUSE", ids(&proc_agent), Some(200)),
        Some(&proc_agent),
    )
    .await;

    let hosts = server.gql("{ hosts { id } }", json!({})).await;
    let host = hosts["hosts"][0]["id"].as_str().expect("a simulated host").to_owned();
    for action in ["HOST_DISCONNECT", "HOST_HANG"] {
        repeat(
            &server,
            &format!("faults {action} 200 ms"),
            one(action, ids(&host), Some(200)),
            None,
            &Load::Write,
            SLOW_ROUNDS,
        )
        .await;
    }
    let vm = server
        .gql(
            "mutation($i: CreateVmInput!) { createVm(input: $i) { id } }",
            json!({ "i": { "name": "target", "vcpus": 1, "memoryMiB": 256, "runPolicy": "ALWAYS" } }),
        )
        .await["createVm"]["id"]
        .as_str()
        .expect("vm id")
        .to_owned();
    repeat(
        &server,
        "faults HANG VM actor (watchdog 100 ms x 2)",
        one("HANG", json!({ "kinds": ["VM"], "ids": [vm] }), Some(500)),
        None,
        &Load::Write,
        SLOW_ROUNDS,
    )
    .await;
    repeat(
        &server,
        "faults DOMAIN_DESTROY VM (run policy ALWAYS)",
        one("DOMAIN_DESTROY", ids(&vm), None),
        None,
        &Load::Write,
        SLOW_ROUNDS,
    )
    .await;
    drop(server);

    // A partition needs a cluster: three fresh nodes, the cut made from the first.
    let nodes = super::failover::three_with(&["--fault-injection", "true"]).await;
    let mut input = one("PARTITION", json!({ "nodes": ["c"] }), Some(4000));
    input["recoverWithinMs"] = json!(60000);
    repeat(
        &nodes[0].1,
        "faults PARTITION 1 node of 3, 4 s",
        input,
        None,
        &Load::Write,
        PARTITION_ROUNDS,
    )
    .await;
}

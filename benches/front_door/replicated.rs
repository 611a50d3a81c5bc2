//! One node against three replicated ones, in the same run: durable submitTask over HTTP
//! with 1 and 64 clients (on three nodes, sent to a follower, whose writes the leader
//! commits on a majority), and the time from killing the leader to the first write the
//! survivors accept again, after the load (`replicated`) and in idle clusters
//! (`leader-loss`); a graceful stop of the leader under load (`leader-stop`).

use std::time::{Duration, Instant};

use serde_json::json;

use super::server::{cpu_time, Server};
use crate::{report, report_latency, Unit};

const ONE_CLIENT: usize = 2_000;
const MANY: usize = 64;
const MANY_SUBMITS: usize = 20_000;
const DISPATCHED: usize = 10_000;

/// Acknowledged submits per second through `server` with `clients` clients, and the CPU
/// time the nodes `pids` spent per acknowledged submit (summed over them).
async fn submits(server: &Server, pids: &[u32], label: &str, clients: usize, n: usize) -> (f64, f64) {
    let cpu = || pids.iter().map(|&pid| cpu_time(pid)).sum::<Duration>();
    let cpu_before = cpu();
    let q = "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id } }";
    let body = move |c: usize, i: usize| json!({ "query": q, "variables": { "input": { "capability": "echo", "payload": { "c": c, "i": i } } } });
    let (took, latencies) = server.load(clients, n, body, |_| true).await;
    let rate = n as f64 / took.as_secs_f64();
    let cpu_per_task = (cpu() - cpu_before).as_secs_f64() * 1_000.0 / n as f64;
    report(
        &format!("  {label}: {clients} client(s), acknowledged"),
        rate,
        "tasks/s",
    );
    report_latency(
        &format!("  {label}: {clients} client(s), latency"),
        &latencies,
        Unit::Micros,
    );
    report(
        &format!("  {label}: {clients} client(s), CPU per task (all nodes)"),
        cpu_per_task,
        "ms",
    );
    (rate, cpu_per_task)
}

pub async fn replicated() {
    println!("durable submitTask over HTTP: one node, then three replicated nodes (64 echo agents)");
    let single = Server::start("single", &[]).await;
    single.echo_agents(64, 16).await;
    let one = [single.pid()];
    let (one_1, one_cpu_1) = submits(&single, &one, "one node", 1, ONE_CLIENT).await;
    let (one_64, one_cpu_64) = submits(&single, &one, "one node", MANY, MANY_SUBMITS).await;
    drop(single);

    let a = Server::start("a", &[]).await;
    let join = format!("127.0.0.1:{}", a.cluster_port);
    let b = Server::start("b", &["--join", &join]).await;
    let c = Server::start("c", &["--join", &join]).await;
    b.echo_agents(64, 16).await;
    let term = |v: serde_json::Value| v["cluster"]["term"].as_u64().unwrap_or_default();
    let term_before = term(b.gql("{ cluster { term } }", json!({})).await);
    let three = [a.pid(), b.pid(), c.pid()];
    let label = "three nodes, via a follower";
    let (three_1, three_cpu_1) = submits(&b, &three, label, 1, ONE_CLIENT).await;
    let (three_64, three_cpu_64) = submits(&b, &three, label, MANY, MANY_SUBMITS).await;
    report("  three nodes / one node, 1 client", three_1 / one_1, "×");
    report("  three nodes / one node, 64 clients", three_64 / one_64, "×");
    report(
        "  CPU per task, three nodes / one node, 1 client",
        three_cpu_1 / one_cpu_1,
        "×",
    );
    report(
        "  CPU per task, three nodes / one node, 64 clients",
        three_cpu_64 / one_cpu_64,
        "×",
    );
    // Raft's heartbeats share the ractor_cluster session with the load's entries: an
    // election during the load would say they were held up past the election timeout.
    let term_after = term(b.gql("{ cluster { term } }", json!({})).await);
    report(
        "  elections during the load",
        (term_after - term_before) as f64,
        "elections",
    );

    // Cluster-wide dispatch: only c's agents serve "far"; tasks are submitted on b.
    println!("cluster-wide dispatch: submitted on b, run on c's agents (16 echo agents, 16 slots each)");
    let q = "mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }";
    for i in 0..16 {
        let input = json!({ "name": format!("far-{i}"), "backend": { "builtin": { "kind": "echo" } },
                            "capabilities": ["far"], "maxConcurrentTasks": 16 });
        c.gql(q, json!({ "input": input })).await;
    }
    // b places by the rooms the members' heartbeats carry: it knows c's within a beat.
    let rooms = "{ cluster { members { name rooms { capability free } } } }";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view = b.gql(rooms, json!({})).await;
        let members = view["cluster"]["members"].as_array().cloned().unwrap_or_default();
        let known = members.iter().any(|m| {
            m["name"] == "c"
                && m["rooms"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["capability"] == "far"))
        });
        if known {
            break;
        }
        assert!(Instant::now() < deadline, "b never heard of c's agents: {view}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done_before = b
        .gql("{ tasks(state: SUCCEEDED, first: 0) { totalCount } }", json!({}))
        .await["tasks"]["totalCount"]
        .as_u64()
        .unwrap_or_default();
    let started = Instant::now();
    let q = "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id } }";
    let body = move |c: usize, i: usize| json!({ "query": q, "variables": { "input": { "capability": "far", "payload": { "c": c, "i": i } } } });
    // The task is written on b (its id names b) and held by c, whose agents alone serve
    // "far": every one of them succeeding (below) is every one run on c.
    let check: fn(&serde_json::Value) -> bool = |v| v["data"]["submitTask"]["id"].as_str().is_some();
    let (took, latencies) = b.load(MANY, DISPATCHED, body, check).await;
    b.await_succeeded(done_before + DISPATCHED as u64).await;
    let all = started.elapsed();
    report(
        &format!("  {MANY} clients, acknowledged"),
        DISPATCHED as f64 / took.as_secs_f64(),
        "tasks/s",
    );
    report(
        "  submitted to all succeeded",
        DISPATCHED as f64 / all.as_secs_f64(),
        "tasks/s",
    );
    report_latency(&format!("  {MANY} clients, latency"), &latencies, Unit::Micros);

    // Leader loss, right after that load.
    println!("leader killed (kill -9) right after the loads; a write sent to a survivor every 20 ms");
    leader_loss(vec![("a", a), ("b", b), ("c", c)]).await;
}

/// Leader loss on fresh, idle clusters of three, a few times.
pub async fn leader_loss_idle() {
    println!("leader killed (kill -9) in an idle cluster of three; a write sent to a survivor every 20 ms");
    for _ in 0..ROUNDS {
        leader_loss(three().await).await;
    }
}

/// A fresh cluster of three: a, then b and c joining it.
async fn three() -> Vec<(&'static str, Server)> {
    let a = Server::start("a", &[]).await;
    let join = format!("127.0.0.1:{}", a.cluster_port);
    let b = Server::start("b", &["--join", &join]).await;
    let c = Server::start("c", &["--join", &join]).await;
    vec![("a", a), ("b", b), ("c", c)]
}

const ROUNDS: usize = 3;

/// Kills the leader of `nodes` and reports how long until a survivor accepts a write.
async fn leader_loss(mut nodes: Vec<(&str, Server)>) {
    let leader = nodes[1].1.gql("{ cluster { leader } }", json!({})).await["cluster"]["leader"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let at = nodes.iter().position(|(n, _)| *n == leader).expect("a leader");
    let (_, mut gone) = nodes.remove(at);
    let survivor = &nodes[0].1;
    let killed = Instant::now();
    gone.kill9();
    let q = "mutation { createToken(input: { role: VIEWER, name: \"after-loss\" }) { token { id } } }";
    let mut refused = 0;
    loop {
        let answer = survivor.answer(q, json!({})).await;
        if answer.get("errors").is_none() {
            break;
        }
        refused += 1;
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "no write accepted: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = killed.elapsed();
    report(
        &format!("  leader {leader} lost to the first write accepted"),
        took.as_secs_f64() * 1000.0,
        "ms",
    );
    report("  writes refused meanwhile", refused as f64, "writes");
}

/// How many times `leader-stop` stops a leader, each in a fresh cluster.
const STOPS: usize = 6;
/// The clients submitting through the survivors meanwhile.
const STOP_CLIENTS: usize = 16;

/// A graceful stop (SIGTERM) of the leader of three while clients submit through the other
/// two, in fresh clusters: how long until a survivor knows the new leader, how many terms
/// the handover took (one when the successor the leader named wins at once), how long the
/// stopping node took to exit, and how many submits failed meanwhile.
pub async fn leader_stop() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    println!("leader stopped (SIGTERM) while {STOP_CLIENTS} clients submit through the others; {STOPS} fresh clusters");
    for _ in 0..STOPS {
        let mut nodes = three().await;
        for (_, node) in &nodes {
            node.echo_agents(2, 8).await;
        }
        let view = nodes[1].1.gql("{ cluster { leader term } }", json!({})).await;
        let leader = view["cluster"]["leader"].as_str().unwrap_or_default().to_owned();
        let term = view["cluster"]["term"].as_u64().unwrap_or_default();
        let at = nodes.iter().position(|(n, _)| *n == leader).expect("a leader");
        let (_, mut gone) = nodes.remove(at);
        let survivors: Vec<(String, String, reqwest::Client)> = nodes
            .iter()
            .map(|(_, s)| (s.graphql_url(), s.token.clone(), s.http().clone()))
            .collect();
        let (done, ok, failed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let q = "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id } }";
        let clients: Vec<_> = (0..STOP_CLIENTS)
            .map(|c| {
                let (url, token, http) = survivors[c % survivors.len()].clone();
                let (done, ok, failed) = (done.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    let mut i = 0;
                    while !done.load(Ordering::Relaxed) {
                        let body = json!({ "query": q, "variables": { "input": { "capability": "echo", "payload": { "c": c, "i": i } } } });
                        i += 1;
                        let answer = http.post(&url).bearer_auth(&token).json(&body).send().await;
                        let answer: serde_json::Value = match answer {
                            Ok(resp) => resp.json().await.unwrap_or_default(),
                            Err(_) => serde_json::Value::Null,
                        };
                        match answer["data"]["submitTask"]["id"].is_string() {
                            true => ok.fetch_add(1, Ordering::Relaxed),
                            false => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
            .collect();
        // The load under way before the stop.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let asked = Instant::now();
        gone.sigterm();
        let survivor = &nodes[0].1;
        let (mut elected, mut exited) = (None, None);
        let mut now_term = term;
        while elected.is_none() || exited.is_none() {
            assert!(asked.elapsed() < Duration::from_secs(60), "no new leader or no exit");
            if exited.is_none() && gone.exited() {
                exited = Some(asked.elapsed());
            }
            if elected.is_none() {
                let view = survivor.gql("{ cluster { leader term } }", json!({})).await;
                let now = view["cluster"]["leader"].as_str().unwrap_or_default();
                if !now.is_empty() && now != leader {
                    elected = Some(asked.elapsed());
                    now_term = view["cluster"]["term"].as_u64().unwrap_or_default();
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The load a moment longer on the new leader, then the figures.
        tokio::time::sleep(Duration::from_millis(500)).await;
        done.store(true, Ordering::Relaxed);
        for client in clients {
            let _ = client.await;
        }
        let later = survivor.gql("{ cluster { term } }", json!({})).await["cluster"]["term"]
            .as_u64()
            .unwrap_or_default();
        let ms = |d: Option<Duration>| d.unwrap_or_default().as_secs_f64() * 1000.0;
        report(
            &format!("  leader {leader} stopped to a new leader known"),
            ms(elected),
            "ms",
        );
        report("  to its process gone", ms(exited), "ms");
        report("  terms the handover took", (now_term - term) as f64, "terms");
        report("  terms later (none expected)", (later - now_term) as f64, "terms");
        report(
            "  submits acknowledged meanwhile",
            ok.load(Ordering::Relaxed) as f64,
            "submits",
        );
        report(
            "  submits failed meanwhile",
            failed.load(Ordering::Relaxed) as f64,
            "submits",
        );
    }
}

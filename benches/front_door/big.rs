//! Big payloads through a follower while a member is stopped (`big-payloads`): three nodes,
//! c stopped (SIGTERM), 320 clients submitting 4,000 tasks of 255 KB each to b. What was
//! acknowledged must be committed, no election may happen, and c, started again, must catch
//! up within seconds. Before writes were bounded in bytes, the same run made log entries of
//! hundreds of MB: the term climbed by about 200, 76 of the 4,000 writes succeeded and the
//! cluster then accepted no write at all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::server::{rss_kib, Server};
use crate::report;

const CLIENTS: usize = 320;
const SUBMITS: usize = 4_000;
const PAYLOAD: usize = 255_000;

pub async fn big_payloads() {
    println!("{SUBMITS} submits of {PAYLOAD}-byte payloads by {CLIENTS} clients to b, c stopped");
    let a = Server::start("a", &[]).await;
    let join = format!("127.0.0.1:{}", a.cluster_port);
    let b = Server::start("b", &["--join", &join]).await;
    let mut c = Server::start("c", &["--join", &join]).await;
    b.echo_agents(16, 16).await;
    c.stop();
    let cluster = |v: Value| {
        (
            v["cluster"]["term"].as_u64().unwrap_or(0),
            v["cluster"]["commitIndex"].as_u64().unwrap_or(0),
        )
    };
    let (term_before, _) = cluster(b.gql("{ cluster { term commitIndex } }", json!({})).await);

    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let filler = "x".repeat(PAYLOAD);
    let q = "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id } }";
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (http, url, token) = (b.http().clone(), b.graphql_url(), b.token.clone());
            let (acknowledged, failed, filler) = (acknowledged.clone(), failed.clone(), filler.clone());
            tokio::spawn(async move {
                let count = SUBMITS / CLIENTS + usize::from(client < SUBMITS % CLIENTS);
                for i in 0..count {
                    let input = json!({ "capability": "echo", "payload": { "c": client, "i": i, "filler": filler } });
                    let body = json!({ "query": q, "variables": { "input": input } });
                    let answer = http.post(&url).bearer_auth(&token).json(&body).send().await;
                    let answer: Value = match answer {
                        Ok(resp) => resp
                            .json()
                            .await
                            .unwrap_or_else(|e| json!({ "errors": [{ "message": e.to_string() }] })),
                        Err(e) => json!({ "errors": [{ "message": e.to_string() }] }),
                    };
                    match answer["data"]["submitTask"]["id"].as_str() {
                        Some(id) => acknowledged.lock().await.push(id.to_owned()),
                        None => failed.lock().await.push(answer["errors"][0]["message"].to_string()),
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client");
    }
    let took = started.elapsed();
    let acknowledged = acknowledged.lock().await.clone();
    let failed = failed.lock().await.clone();
    report("  acknowledged", acknowledged.len() as f64, "writes");
    report("  failed", failed.len() as f64, "writes");
    if let Some(first) = failed.first() {
        println!("  first failure: {first}");
    }
    report(
        "  acknowledged per second",
        acknowledged.len() as f64 / took.as_secs_f64(),
        "tasks/s",
    );
    let (term_after, commit) = cluster(b.gql("{ cluster { term commitIndex } }", json!({})).await);
    report(
        "  elections during the load",
        (term_after - term_before) as f64,
        "elections",
    );
    report("  RSS of a after the load", rss_kib(a.pid()) as f64 / 1024.0, "MiB");
    report("  RSS of b after the load", rss_kib(b.pid()) as f64 / 1024.0, "MiB");

    // Every acknowledged task is in the log: a reads each one from its replica.
    let mut missing = 0;
    for id in &acknowledged {
        let task = a
            .gql("query($id: ID!) { task(id: $id) { id } }", json!({ "id": id }))
            .await;
        missing += usize::from(task["task"].is_null());
    }
    report("  acknowledged but missing on a", missing as f64, "tasks");

    // c starts again and catches up with the commit index b had after the load.
    // UP says a member runs its work, which c starts only once caught up: b's view of c is
    // watched while c starts (its `/healthz` says ok once its work runs).
    let restarted = Instant::now();
    let mut shown_up = None;
    {
        let restart = c.restart();
        tokio::pin!(restart);
        loop {
            tokio::select! {
                _ = &mut restart => break,
                state = c_state(&b) => {
                    if state == "UP" && shown_up.is_none() {
                        shown_up = Some(restarted.elapsed());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, here) = cluster(c.gql("{ cluster { term commitIndex } }", json!({})).await);
        if here >= commit {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "c applied {here} of {commit} entries in 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report("  c started again to caught up", restarted.elapsed().as_secs_f64(), "s");
    while shown_up.is_none() {
        assert!(Instant::now() < deadline, "c never shown UP on b");
        if c_state(&b).await == "UP" {
            shown_up = Some(restarted.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let shown_up = shown_up.unwrap_or_default();
    report("  c started again to first shown UP on b", shown_up.as_secs_f64(), "s");
    // A node gives the memory its allocator keeps free back every 10 s (the `trim` chore).
    report("  RSS of b once c caught up", rss_kib(b.pid()) as f64 / 1024.0, "MiB");
    let (term_end, _) = cluster(b.gql("{ cluster { term commitIndex } }", json!({})).await);
    report(
        "  elections from c's restart",
        (term_end - term_after) as f64,
        "elections",
    );
}

/// c's state in `node`'s view of the cluster.
async fn c_state(node: &Server) -> String {
    let view = node.gql("{ cluster { members { name state } } }", json!({})).await;
    view["cluster"]["members"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == "c")
        .and_then(|m| m["state"].as_str())
        .unwrap_or_default()
        .to_owned()
}

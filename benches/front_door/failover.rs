//! Failover through the front door, on fresh clusters of three on this machine: kill -9 of
//! a node to its agents all RUNNING on the survivors (with 1 and 1,000 agents on it),
//! SIGSTOP of a node to its being declared DOWN (from then on its writes are refused by
//! epoch and its work runs elsewhere), and kill -9 of the leader to its agent running
//! elsewhere (`failover`).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;

use super::server::Server;
use crate::report;

/// Three fresh nodes: a alone, b and c joining it.
async fn three() -> Vec<(&'static str, Server)> {
    three_with(&[]).await
}

/// Three fresh nodes started with `extra` flags: a alone, b and c joining it.
pub(super) async fn three_with(extra: &[&str]) -> Vec<(&'static str, Server)> {
    let a = Server::start("a", extra).await;
    let join = format!("127.0.0.1:{}", a.cluster_port);
    let joining = |join: &str| -> Vec<String> {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        args.extend(["--join".to_owned(), join.to_owned()]);
        args
    };
    let b_args = joining(&join);
    let b = Server::start("b", &b_args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let c = Server::start("c", &b_args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let nodes = vec![("a", a), ("b", b), ("c", c)];
    // Every member UP as the leader decided it.
    let started = Instant::now();
    loop {
        let view = nodes[0].1.gql("{ cluster { members { state } } }", json!({})).await;
        let up = view["cluster"]["members"]
            .as_array()
            .is_some_and(|m| m.len() == 3 && m.iter().all(|m| m["state"] == "UP"));
        if up {
            return nodes;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the cluster did not come up: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Spawns `n` echo agents on `server`, 16 requests at a time.
async fn spawn_agents(server: &Server, n: usize) {
    let q = "mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }";
    let body = move |_c: usize, i: usize| {
        json!({ "query": q, "variables": { "input": { "name": format!("moved-{i}"),
                "backend": { "builtin": { "kind": "echo" } }, "capabilities": ["echo"] } } })
    };
    server
        .load(16.min(n), n, body, |v| v["data"]["spawnAgent"]["id"].is_string())
        .await;
}

/// How many agents run on `servers`, as their `troupe_agents{state="running"}` gauges say.
async fn running(servers: &[&Server]) -> u64 {
    let mut n = 0;
    for server in servers {
        let url = format!("http://{}/metrics", server.addr);
        let Ok(answer) = server.http().get(&url).send().await else {
            continue;
        };
        let text = answer.text().await.unwrap_or_default();
        n += text
            .lines()
            .filter(|l| l.starts_with("troupe_agents{") && l.contains("state=\"running\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64;
    }
    n
}

/// Waits until `servers` run `n` agents between them (within two minutes); how long it took.
async fn until_running(servers: &[&Server], n: u64, since: Instant) -> Duration {
    loop {
        if running(servers).await >= n {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(120),
            "the agents did not run again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn summary(label: &str, h: &Histogram<u64>) {
    for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
        report(&format!("  {label} {name}"), h.value_at_quantile(q) as f64, "ms");
    }
}

pub async fn failover() {
    for (agents, rounds) in [(1usize, 5usize), (1_000, 2)] {
        println!("kill -9 of a node with {agents} agent(s) to all of them RUNNING on the survivors, {rounds} rounds");
        let mut h = Histogram::<u64>::new(3).expect("histogram");
        for _ in 0..rounds {
            let mut nodes = three().await;
            spawn_agents(&nodes[2].1, agents).await;
            until_running(&[&nodes[2].1], agents as u64, Instant::now()).await;
            let killed = Instant::now();
            nodes[2].1.kill9();
            let took = until_running(&[&nodes[0].1, &nodes[1].1], agents as u64, killed).await;
            h.record(took.as_millis() as u64).expect("record");
        }
        summary(&format!("{agents} agent(s) serving elsewhere after the kill"), &h);
    }

    println!("SIGSTOP of a node (one agent) to its being declared DOWN, 3 rounds");
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..3 {
        let nodes = three().await;
        spawn_agents(&nodes[2].1, 1).await;
        let pid = nodes[2].1.pid().to_string();
        let stopped = Instant::now();
        let _ = std::process::Command::new("kill").args(["-STOP", &pid]).status();
        loop {
            let view = nodes[0]
                .1
                .gql("{ cluster { members { name state } } }", json!({}))
                .await;
            let down = view["cluster"]["members"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["name"] == "c" && m["state"] == "DOWN"));
            if down {
                break;
            }
            assert!(stopped.elapsed() < Duration::from_secs(60), "c was not declared down");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        h.record(stopped.elapsed().as_millis() as u64).expect("record");
        let _ = std::process::Command::new("kill").args(["-CONT", &pid]).status();
    }
    summary("SIGSTOP to DOWN (fenced by epoch)", &h);

    println!("kill -9 of the leader (one agent on it) to its agent RUNNING elsewhere, 3 rounds");
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..3 {
        let mut nodes = three().await;
        let leader = nodes[1].1.gql("{ cluster { leader } }", json!({})).await["cluster"]["leader"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let at = nodes.iter().position(|(n, _)| *n == leader).expect("a leader");
        spawn_agents(&nodes[at].1, 1).await;
        until_running(&[&nodes[at].1], 1, Instant::now()).await;
        let killed = Instant::now();
        nodes[at].1.kill9();
        let survivors: Vec<&Server> = (0..3).filter(|i| *i != at).map(|i| &nodes[i].1).collect();
        h.record(until_running(&survivors, 1, killed).await.as_millis() as u64)
            .expect("record");
    }
    summary("leader lost to its agent serving elsewhere", &h);
}

//! Shared by the load drivers: an embedded node on a temp dir, echo agents, RSS.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use troupe_actors::agent::{BackendSpec, BuiltinKind, SpawnAgentRequest};
use troupe_actors::node::Node;
use troupe_actors::Api;
use troupe_runtime::config::Config;
use troupe_runtime::events::EventFilter;

/// An embedded node in a fresh temp dir (kept alive by the returned guard).
pub async fn node() -> (tempfile::TempDir, Node) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::embedded(dir.path());
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    config.cluster_listen = free.local_addr().expect("bound");
    drop(free);
    let node = Node::start(&config, Box::new(|_| vec![])).await.expect("node starts");
    (dir, node)
}

pub fn echo(name: String, max_concurrent: i64) -> SpawnAgentRequest {
    SpawnAgentRequest {
        capabilities: vec!["echo".into()],
        max_concurrent_tasks: Some(max_concurrent),
        ..SpawnAgentRequest::new(name, BackendSpec::Builtin(BuiltinKind::Echo))
    }
}

/// Waits until `n` events of `kind` after `after` have been committed.
pub async fn await_events(api: &Api, after: u64, kind: &str, n: usize, limit: Duration) {
    let filter = EventFilter {
        kinds: Some([kind.to_string()].into()),
        subject: None,
    };
    let mut stream = Box::pin(api.subscribe(after, filter));
    let deadline = Instant::now() + limit;
    let mut seen = 0;
    while seen < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(Ok(_))) => seen += 1,
            other => panic!("only {seen} of {n} {kind} events before the deadline: {other:?}"),
        }
    }
}

/// Resident set size of this process, in bytes.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

pub fn report(name: &str, value: f64, unit: &str) {
    println!("{name:<48} {value:>14.1} {unit}");
}

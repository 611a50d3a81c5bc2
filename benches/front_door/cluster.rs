//! Two nodes on loopback: this process is node `a` (embedded), a `troupe serve` process is
//! node `b`. A call is a request to b's node service and its answer, through ractor_cluster
//! as every cross-node request of Troupe travels: round-trip time one at a time, and
//! throughput with 64 calls in flight.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use troupe_actors::cluster::remote;
use troupe_actors::cluster::MemberStatus;
use troupe_actors::node::Node;
use troupe_actors::service::node::{NodeRequest, NodeService};
use troupe_runtime::config::Config;

use super::server::{cookie_file, free_port, Server};
use crate::{report, report_latency, Unit};

const SEQUENTIAL: usize = 20_000;
const IN_FLIGHT: usize = 64;
const PIPELINED: usize = 200_000;

pub async fn cluster() {
    let b = Server::start("b", &[]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::embedded(dir.path());
    config.node_name = "a".into();
    config.cluster_listen = format!("127.0.0.1:{}", free_port()).parse().expect("address");
    config.join = vec![format!("127.0.0.1:{}", b.cluster_port)];
    config.cookie_file = Some(cookie_file(dir.path()));
    let a = Node::start(&config, Box::new(|_| vec![])).await.expect("node a starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.api().cluster().status("b") != Some(MemberStatus::Up) {
        assert!(Instant::now() < deadline, "a never saw b");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let timeout = Duration::from_secs(5);
    let hello = remote::Call {
        key: None,
        request: NodeRequest::Hello {},
    };
    let call = || remote::call::<NodeService>("b", &hello, timeout);
    for _ in 0..1000 {
        call().await.expect("warm-up call");
    }
    let mut rtt = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..SEQUENTIAL {
        let t = Instant::now();
        call().await.expect("call");
        rtt.record(t.elapsed().as_nanos() as u64).expect("record");
    }
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let callers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (done, hello) = (done.clone(), hello.clone());
            tokio::spawn(async move {
                while done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < PIPELINED {
                    remote::call::<NodeService>("b", &hello, timeout).await.expect("call");
                }
            })
        })
        .collect();
    for c in callers {
        c.await.expect("caller");
    }
    let rate = PIPELINED as f64 / t.elapsed().as_secs_f64();
    println!("two nodes on loopback: calls to the peer's node service (request + answer)");
    report_latency("  round trip, one at a time", &rtt, Unit::Nanos);
    report(&format!("  calls with {IN_FLIGHT} in flight"), rate, "calls/s");
    report(
        &format!("  messages with {IN_FLIGHT} in flight (2 per call)"),
        rate * 2.0,
        "msgs/s",
    );
    a.shutdown(Duration::from_secs(5)).await;
}

//! Load drivers through the front door: a user's client talks GraphQL over HTTP and
//! WebSocket to a real `troupe serve` process on loopback, and the figures are what that
//! client sees. Two more measure what the node does inside: an agent's restart, and a call
//! between two nodes.
//!
//! `TROUPE_BENCH_BIN=<path>` runs the drivers against another build of `troupe` (a previous
//! release built beside this one, for a before/after in the same session).
//!
//! Run all: `cargo bench --bench front_door`; one: `cargo bench --bench front_door -- fanout`
//! (submit, reads, fanout, fanout-paced, restart, cluster, replicated, leader-loss, leader-stop, exec-vs-process, pause-restart,
//! vms-create, vms-evacuate, tasks-1k, messages, swarms-create, swarms-mesh, swarms-gather, faults,
//! big-payloads).

mod front_door {
    pub mod big;
    pub mod cluster;
    pub mod failover;
    pub mod fanout;
    pub mod faults;
    pub mod http;
    pub mod process;
    pub mod replicated;
    pub mod restart;
    pub mod server;
    pub mod swarms;
    pub mod vms;
    pub mod work;
}

use hdrhistogram::Histogram;

pub fn report(name: &str, value: f64, unit: &str) {
    println!("{name:<52} {value:>14.1} {unit}");
}

/// What a histogram's values count.
#[derive(Clone, Copy)]
pub enum Unit {
    Micros,
    Nanos,
}

/// p50, p99 and max of a latency histogram, in µs.
pub fn report_latency(name: &str, h: &Histogram<u64>, unit: Unit) {
    let scale = match unit {
        Unit::Micros => 1.0,
        Unit::Nanos => 1000.0,
    };
    for (label, q) in [("p50", 0.50), ("p99", 0.99), ("max", 1.0)] {
        report(&format!("{name} {label}"), h.value_at_quantile(q) as f64 / scale, "µs");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let wanted: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let run = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    if run("submit") {
        front_door::http::submit().await;
    }
    if run("reads") {
        front_door::http::fixed_rate_read().await;
    }
    if run("fanout") {
        front_door::fanout::fanout(false).await;
    }
    if run("fanout-paced") {
        front_door::fanout::fanout(true).await;
    }
    if run("faults") {
        front_door::faults::faults().await;
    }
    if run("restart") {
        front_door::restart::restart().await;
    }
    if run("cluster") {
        front_door::cluster::cluster().await;
    }
    if run("replicated") {
        front_door::replicated::replicated().await;
    }
    if run("big-payloads") {
        front_door::big::big_payloads().await;
    }
    if run("leader-loss") {
        front_door::replicated::leader_loss_idle().await;
    }
    if run("leader-stop") {
        front_door::replicated::leader_stop().await;
    }
    if run("failover") {
        front_door::failover::failover().await;
    }
    if run("exec-vs-process") {
        front_door::process::exec_vs_process().await;
    }
    if run("pause-restart") {
        front_door::process::pause_restart().await;
    }
    if run("vms-create") {
        front_door::vms::create_many().await;
    }
    if run("vms-evacuate") {
        front_door::vms::evacuate().await;
    }
    if run("tasks-1k") {
        front_door::work::tasks_many().await;
    }
    if run("messages") {
        front_door::work::messages().await;
    }
    if run("swarms-create") {
        front_door::swarms::create_many().await;
    }
    if run("swarms-mesh") {
        front_door::swarms::mesh().await;
    }
    if run("swarms-gather") {
        front_door::swarms::gather().await;
    }
}

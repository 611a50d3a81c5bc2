//! VMs through the front door, on simulated (test:///) hosts of a real `troupe serve`:
//! `vms-create` creates 10,000 VMs over 100 hosts with 64 concurrent GraphQL clients, then
//! measures the node's reconcile cost and memory per VM; `vms-evacuate` breaks the
//! connection of a host holding 1,000 VMs and times their re-creation elsewhere.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;

use super::server::{rss_kib, Server};
use crate::{report, report_latency, Unit};

const CLIENTS: usize = 64;
const VMS: usize = 10_000;
const HOSTS: usize = 100;

/// CPU time (user + system) a process has used, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Creates `n` VMs with `CLIENTS` concurrent clients; the latency of each create.
async fn create(server: &Server, n: usize, input: serde_json::Value) -> (Duration, Histogram<u64>) {
    let q = "mutation($input: CreateVmInput!) { createVm(input: $input) { state } }";
    let body = move |c: usize, i: usize| {
        let mut input = input.clone();
        input["name"] = json!(format!("vm-{c}-{i}"));
        json!({ "query": q, "variables": { "input": input } })
    };
    server
        .load(CLIENTS, n, body, |a| a["data"]["createVm"]["state"] == "RUNNING")
        .await
}

pub async fn create_many() {
    let hosts = HOSTS.to_string();
    let server = Server::start("vms", &["--simulated-hosts", &hosts, "--vm-reconcile-ms", "1000"]).await;
    let pid = server.pid();
    let before = rss_kib(pid);
    let (took, h) = create(&server, VMS, json!({ "vcpus": 1, "memoryMiB": 256 })).await;
    println!("createVm over HTTP: {CLIENTS} clients, {VMS} VMs over {HOSTS} simulated hosts");
    report(
        "  VMs created (each RUNNING when answered)",
        VMS as f64 / took.as_secs_f64(),
        "VMs/s",
    );
    report("  all created", took.as_secs_f64(), "s");
    report_latency("  createVm", &h, Unit::Micros);
    // Let the reconcile loops settle, then measure what they cost while nothing changes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid);
    let window = Duration::from_secs(10);
    let cpu0 = cpu_seconds(pid);
    tokio::time::sleep(window).await;
    let cpu = cpu_seconds(pid) - cpu0;
    let sweeps = window.as_secs_f64(); // one sweep per host per second
    report(
        "  reconcile CPU per 1,000 VMs per sweep",
        cpu * 1000.0 / sweeps / (VMS as f64 / 1000.0),
        "ms",
    );
    report(
        "  node CPU while reconciling 10,000 VMs each second",
        cpu / window.as_secs_f64() * 100.0,
        "% of a core",
    );
    report(
        "  node memory per VM (actor, records, simulated domain)",
        after.saturating_sub(before) as f64 / VMS as f64,
        "KiB",
    );
}

pub async fn evacuate() {
    let server = Server::start(
        "evac",
        &[
            "--simulated-hosts",
            "0",
            "--fault-injection",
            "--host-down-after-ms",
            "1000",
            "--vm-reconcile-ms",
            "200",
        ],
    )
    .await;
    // Three big simulated hosts: 128 CPUs and 512 GiB each.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ids = Vec::new();
    for i in 1..=3 {
        let file = dir.path().join(format!("big-{i}.xml"));
        std::fs::write(
            &file,
            "<node><cpu><mhz>2000</mhz><model>b</model><active>128</active><max>128</max><total>128</total>\
             <nodes>1</nodes><sockets>1</sockets><cores>128</cores><threads>1</threads></cpu>\
             <memory>536870912</memory></node>",
        )
        .expect("node file");
        let q = "mutation($input: AddHostInput!) { addHost(input: $input) { id } }";
        let input = json!({ "name": format!("big-{i}"), "uri": format!("test://{}", file.display()) });
        let data = server.gql(q, json!({ "input": input })).await;
        ids.push(data["addHost"]["id"].as_str().expect("id").to_string());
    }
    create(&server, 1000, json!({ "vcpus": 1, "memoryMiB": 256, "host": "big-1" })).await;
    let broke = Instant::now();
    server
        .gql(
            "mutation($t: ID!) { injectFault(target: $t, kind: HOST_DISCONNECT) }",
            json!({ "t": ids[0] }),
        )
        .await;
    let state = "query($id: ID!) { host(id: $id) { state allocated { vms } } }";
    let mut down_at = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let h = server.gql(state, json!({ "id": ids[0] })).await;
        if down_at.is_none() && h["host"]["state"] == "DOWN" {
            down_at = Some(Instant::now());
        }
        if down_at.is_some() && h["host"]["allocated"]["vms"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "evacuation did not finish: {h}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = Instant::now();
    let running = server
        .gql("{ vms(state: RUNNING, first: 0) { edges { cursor } } }", json!({}))
        .await;
    drop(running);
    let q = "query($id: ID!) { host(id: $id) { domains { state } } }";
    let mut elsewhere = 0;
    for id in &ids[1..] {
        let data = server.gql(q, json!({ "id": id })).await;
        elsewhere += data["host"]["domains"]
            .as_array()
            .expect("domains")
            .iter()
            .filter(|d| d["state"] == "RUNNING")
            .count();
    }
    assert_eq!(elsewhere, 1000, "every VM runs elsewhere, once");
    println!("evacuation of a host holding 1,000 VMs (host_down_after_ms 1000)");
    let down_at = down_at.expect("the host went DOWN");
    report("  connection lost to host DOWN", (down_at - broke).as_secs_f64(), "s");
    report(
        "  host DOWN to all 1,000 running elsewhere",
        (done - down_at).as_secs_f64(),
        "s",
    );
}

//! Hosts and VMs through the gateway, on the simulated hosts (libvirt's test:/// driver) every
//! node makes. What libvirt itself reports (`host.domains`) is checked, not only Troupe's
//! records.

use std::collections::HashMap;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::support::vms::{act, copies, create_vm, domains, host, vm, wait_vm, VM_FIELDS};
use super::support::{error_code, expect_code, int, metric, text, Node, NodeOpts};

#[tokio::test]
async fn a_vm_lives_through_its_whole_lifecycle_on_a_simulated_host() -> Result<()> {
    let node = Node::start(NodeOpts::named("vm-life")).await?;
    let hosts = node
        .gql_ok(
            "{ hosts { name state simulated capacity { cpus memoryMiB } } }",
            json!({}),
        )
        .await?;
    let hosts = hosts["hosts"].as_array().context("hosts")?;
    ensure!(hosts.len() == 3, "a fresh node has 3 simulated hosts: {hosts:?}");
    ensure!(hosts
        .iter()
        .all(|h| h["state"] == "UP" && h["simulated"] == true && h["capacity"]["cpus"] == 32));

    let v = create_vm(&node, json!({ "name": "web-1", "vcpus": 2, "memoryMiB": 1024 })).await?;
    let id = text(&v, "/id")?;
    ensure!(v["state"] == "RUNNING" && v["spec"]["runPolicy"] == "ALWAYS", "{v}");
    // Created, it was started: told without a passing stop of the domain just defined.
    let told: Vec<String> = node
        .events_after(None, &[])
        .await?
        .iter()
        .filter(|e| e["subject"] == id.as_str())
        .filter_map(|e| e["kind"].as_str().map(str::to_owned))
        .collect();
    ensure!(told == ["VM_CREATED", "VM_STARTED", "VM_RUNNING"], "{told:?}");
    let domain = text(&v, "/spec/domain")?;
    let on = text(&v, "/host/name")?;
    let h = host(&node, &on).await?;
    ensure!(
        h["allocated"]["vcpus"] == 2 && h["allocated"]["memoryMiB"] == 1024,
        "{h}"
    );
    ensure!(
        h["domains"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == domain && d["state"] == "RUNNING" && d["memoryKiB"] == 1024 * 1024),
        "libvirt runs the domain: {h}"
    );

    let paused = act(&node, "pauseVm", &id).await?;
    ensure!(paused["data"]["pauseVm"]["state"] == "PAUSED", "{paused}");
    expect_code(&act(&node, "rebootVm", &id).await?, "CONFLICT")?;
    let resumed = act(&node, "resumeVm", &id).await?;
    ensure!(resumed["data"]["resumeVm"]["state"] == "RUNNING", "{resumed}");
    let rebooted = act(&node, "rebootVm", &id).await?;
    ensure!(rebooted["data"]["rebootVm"]["state"] == "RUNNING", "{rebooted}");
    let stopped = node
        .gql_ok(
            &format!("mutation($id: ID!) {{ stopVm(id: $id, timeoutMs: 5000) {{ {VM_FIELDS} }} }}"),
            json!({ "id": id }),
        )
        .await?;
    let stopped = &stopped["stopVm"];
    // A stop makes an ALWAYS VM HALTED, as KubeVirt does: it stays stopped.
    ensure!(
        stopped["state"] == "STOPPED" && stopped["reason"] == "shutdown",
        "{stopped}"
    );
    ensure!(
        stopped["spec"]["runPolicy"] == "HALTED" && stopped["spec"]["running"] == false,
        "{stopped}"
    );
    let started = act(&node, "startVm", &id).await?;
    ensure!(started["data"]["startVm"]["state"] == "RUNNING", "{started}");
    ensure!(started["data"]["startVm"]["spec"]["runPolicy"] == "ALWAYS", "{started}");

    let stats = node
        .gql_ok(
            "query($id: ID!) { vm(id: $id) { stats { memoryKiB sampledAt } } }",
            json!({ "id": id }),
        )
        .await?;
    ensure!(stats["vm"]["stats"]["memoryKiB"] == 1024 * 1024, "{stats}");

    let deleted = act(&node, "deleteVm", &id).await?;
    ensure!(deleted["errors"].is_null(), "{deleted}");
    ensure!(vm(&node, &id).await?.is_null());
    let h = host(&node, &on).await?;
    ensure!(h["allocated"]["vms"] == 0, "the claim went back: {h}");
    ensure!(
        h["domains"].as_array().unwrap().iter().all(|d| d["name"] != domain),
        "libvirt forgot it: {h}"
    );

    let kinds: Vec<String> = node
        .events(&[])
        .await?
        .into_iter()
        .filter(|e| e["subject"] == id)
        .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    for kind in [
        "VM_CREATED",
        "VM_RUNNING",
        "VM_PAUSED",
        "VM_REBOOTED",
        "VM_STOPPED",
        "VM_DELETED",
    ] {
        ensure!(kinds.iter().any(|k| k == kind), "no {kind} among {kinds:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_domain_destroyed_or_undefined_behind_troupes_back_is_handled_per_run_policy() -> Result<()> {
    let node = Node::start(
        NodeOpts::named("vm-policy")
            .arg("--fault-injection", "true")
            .arg("--vm-reconcile-ms", 100),
    )
    .await?;
    let mut ids = HashMap::new();
    for policy in ["ALWAYS", "RERUN_ON_FAILURE", "MANUAL"] {
        let v = create_vm(&node, json!({ "name": policy.to_lowercase().replace('_', "-"), "vcpus": 1, "memoryMiB": 256, "runPolicy": policy })).await?;
        ids.insert(policy, text(&v, "/id")?);
    }
    // MANUAL is not started at creation.
    ensure!(vm(&node, &ids["MANUAL"]).await?["state"] == "STOPPED");
    let started = act(&node, "startVm", &ids["MANUAL"]).await?;
    ensure!(started["data"]["startVm"]["state"] == "RUNNING", "{started}");

    let fault = "mutation($t: ID!, $k: FaultKind!) { injectFault(target: $t, kind: $k) }";
    for id in ids.values() {
        node.gql_ok(fault, json!({ "t": id, "k": "DOMAIN_DESTROY" })).await?;
    }
    for policy in ["ALWAYS", "RERUN_ON_FAILURE"] {
        let v = wait_vm(&node, &ids[policy], "restarted", |v| {
            v["state"] == "RUNNING" && v["restarts"] == 1
        })
        .await?;
        ensure!(v["spec"]["running"] == true, "{v}");
    }
    // MANUAL: Troupe does not restart it; its state is what libvirt says.
    let manual = wait_vm(&node, &ids["MANUAL"], "left stopped", |v| v["spec"]["running"] == false).await?;
    ensure!(
        manual["state"] == "STOPPED" && manual["reason"] == "destroyed" && manual["restarts"] == 0,
        "{manual}"
    );
    ensure!(!node.events_for("VM_LEFT_STOPPED", &ids["MANUAL"]).await?.is_empty());

    // Undefined behind Troupe's back: defined again from the spec and started.
    node.gql_ok(fault, json!({ "t": ids["ALWAYS"], "k": "DOMAIN_UNDEFINE" }))
        .await?;
    wait_vm(&node, &ids["ALWAYS"], "re-created", |v| {
        v["state"] == "RUNNING" && v["restarts"] == 2
    })
    .await?;
    ensure!(!node.events_for("VM_DOMAIN_MISSING", &ids["ALWAYS"]).await?.is_empty());
    let all = domains(&node).await?;
    let domain = text(&vm(&node, &ids["ALWAYS"]).await?, "/spec/domain")?;
    ensure!(
        copies(&all, &domain) == (vec![text(&vm(&node, &ids["ALWAYS"]).await?, "/host/name")?], 1),
        "{all:?}"
    );
    Ok(())
}

#[tokio::test]
async fn two_hundred_concurrent_creates_over_four_hosts_never_over_commit() -> Result<()> {
    let node = Node::start(NodeOpts::named("vm-many").arg("--simulated-hosts", 4)).await?;
    // Each host may promise (64 GiB - 1 GiB reserved) x 1.5 = 96,768 MiB: 23 VMs of 4 GiB.
    let creates = (0..200).map(|i| {
        let node = &node;
        async move {
            let input = json!({ "name": format!("vm-{i}"), "vcpus": 2, "memoryMiB": 4096,
                                "antiAffinityGroup": if i % 50 == 0 { Some("pair") } else { None } });
            node.gql(
                "mutation($input: CreateVmInput!) { createVm(input: $input) { id state host { name } } }",
                json!({ "input": input }),
            )
            .await
        }
    });
    let answers = futures::future::join_all(creates).await;
    let mut created = 0;
    for a in answers {
        let a = a?;
        match error_code(&a) {
            None => {
                ensure!(a["data"]["createVm"]["state"] == "RUNNING", "{a}");
                created += 1;
            }
            Some(code) => ensure!(code == "NO_VALID_HOST", "{a}"),
        }
    }
    ensure!(created == 4 * 23, "{created} VMs placed, 92 fit");
    let data = node
        .gql_ok(
            "{ hosts { name allocated { vcpus memoryMiB memoryLimitMiB vms } domains { name state memoryKiB } } }",
            json!({}),
        )
        .await?;
    let mut total = 0;
    for h in data["hosts"].as_array().context("hosts")? {
        let a = &h["allocated"];
        ensure!(
            int(a, "/memoryMiB")? <= int(a, "/memoryLimitMiB")?,
            "over-committed: {h}"
        );
        // libvirt agrees with the ledger.
        let domains = h["domains"].as_array().context("domains")?;
        let memory_mib: i64 = domains
            .iter()
            .map(|d| d["memoryKiB"].as_i64().unwrap_or(0) / 1024)
            .sum();
        ensure!(
            domains.len() as i64 == int(a, "/vms")? && memory_mib == int(a, "/memoryMiB")?,
            "{h}"
        );
        ensure!(domains.iter().all(|d| d["state"] == "RUNNING"), "{h}");
        total += domains.len();
    }
    ensure!(total == created, "{total} domains for {created} VMs");
    // A VM being created whose host swept before its first definition is not "re-created".
    ensure!(node.events(&["VM_RECREATED", "VM_DOMAIN_MISSING"]).await?.is_empty());
    // The anti-affinity group's VMs are on different hosts.
    let listed = node
        .gql_ok("{ vms(first: 500) { edges { node { name hostId } } } }", json!({}))
        .await?;
    let pair: Vec<&Value> = listed["vms"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| ["vm-0", "vm-50", "vm-100", "vm-150"].contains(&e["node"]["name"].as_str().unwrap_or_default()))
        .map(|e| &e["node"]["hostId"])
        .collect();
    let distinct: std::collections::HashSet<String> = pair.iter().map(|h| h.to_string()).collect();
    ensure!(distinct.len() == pair.len(), "anti-affinity broken: {pair:?}");
    let metrics = node.metrics().await?;
    ensure!(
        metric(&metrics, "troupe_vms", &["state=\"RUNNING\""]) >= created as f64,
        "troupe_vms"
    );
    Ok(())
}

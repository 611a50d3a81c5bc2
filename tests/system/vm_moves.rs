//! VMs that move or outlive a failure, through the gateway on simulated hosts: migration with
//! its phases, drain, evacuation of a failed host, adoption after a driver crash and
//! re-creation after a node restart. Each is checked against what libvirt reports.

use std::collections::BTreeMap;

use anyhow::{ensure, Context, Result};
use serde_json::json;

use super::support::vms::{copies, create_vm, domains, host, host_id, vm, wait_host, wait_vm};
use super::support::{expect_code, int, metric, text, Deadline, Node, NodeOpts, Subscription, WAIT};

#[tokio::test]
async fn a_migration_moves_a_vm_through_its_phases_and_a_failed_one_leaves_it_running() -> Result<()> {
    let node = Node::start(NodeOpts::named("vm-move")).await?;
    let v = create_vm(
        &node,
        json!({ "name": "mover", "vcpus": 1, "memoryMiB": 512, "host": "sim-1" }),
    )
    .await?;
    let id = text(&v, "/id")?;
    let domain = text(&v, "/spec/domain")?;
    let mut updates = Subscription::start(
        &node,
        "subscription($id: ID!) { vmUpdates(id: $id) { state host { name } migration { phase kind } } }",
        json!({ "id": id }),
    )
    .await?;
    let first = updates.next_with_deadline().await?.context("no current state")?;
    ensure!(first["vmUpdates"]["host"]["name"] == "sim-1", "{first}");
    let q = "mutation($id: ID!, $t: ID) { migrateVm(id: $id, targetHost: $t) { \
             migration { phase kind sourceHost targetHost error } vm { state host { name } } } }";
    let moved = node.gql_ok(q, json!({ "id": id, "t": "sim-2" })).await?;
    let m = &moved["migrateVm"];
    ensure!(
        m["migration"]["phase"] == "SUCCEEDED" && m["migration"]["kind"] == "ORCHESTRATED",
        "{m}"
    );
    ensure!(
        m["vm"]["state"] == "RUNNING" && m["vm"]["host"]["name"] == "sim-2",
        "{m}"
    );
    let all = domains(&node).await?;
    ensure!(copies(&all, &domain) == (vec!["sim-2".to_string()], 1), "{all:?}");
    // The phases, in order, as events.
    let phases: Vec<String> = node
        .events(&[])
        .await?
        .into_iter()
        .filter(|e| e["subject"] == id && e["kind"].as_str().unwrap_or_default().starts_with("VM_MIGRATION_"))
        .map(|e| {
            e["kind"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches("VM_MIGRATION_")
                .to_owned()
        })
        .collect();
    let expected: Vec<String> = ["PENDING", "SCHEDULING", "PREPARING_TARGET", "RUNNING", "SUCCEEDED"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    ensure!(phases == expected, "phases {phases:?}");
    // ... and as progress on the subscription.
    let deadline = Deadline::after(WAIT, "vmUpdates to show the finished migration");
    loop {
        let update = updates.next_with_deadline().await?.context("vmUpdates ended")?;
        let u = &update["vmUpdates"];
        if u["migration"]["phase"] == "SUCCEEDED" && u["host"]["name"] == "sim-2" {
            break;
        }
        deadline.tick(&update).await?;
    }

    // The placer picks when no target is given; a target that cannot take it fails the
    // migration and the VM stays, running, where it was.
    let id3 = host_id(&node, "sim-3").await?;
    node.gql_ok(
        "mutation($id: ID!) { setHostMaintenance(id: $id, enabled: true) { state } }",
        json!({ "id": id3 }),
    )
    .await?;
    let failed = node.gql_ok(q, json!({ "id": id, "t": "sim-3" })).await?;
    let m = &failed["migrateVm"];
    ensure!(m["migration"]["phase"] == "FAILED", "{m}");
    ensure!(
        m["migration"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("MAINTENANCE"),
        "{m}"
    );
    ensure!(
        m["vm"]["state"] == "RUNNING" && m["vm"]["host"]["name"] == "sim-2",
        "{m}"
    );
    let picked = node.gql_ok(q, json!({ "id": id, "t": null })).await?;
    ensure!(
        picked["migrateVm"]["vm"]["host"]["name"] == "sim-1",
        "only sim-1 can take it: {picked}"
    );
    let all = domains(&node).await?;
    ensure!(copies(&all, &domain) == (vec!["sim-1".to_string()], 1), "{all:?}");
    let metrics = node.metrics().await?;
    ensure!(
        metric(&metrics, "troupe_migrations_total", &["outcome=\"SUCCEEDED\""]) >= 2.0,
        "{metrics}"
    );
    ensure!(metric(&metrics, "troupe_migrations_total", &["outcome=\"FAILED\""]) >= 1.0);
    ensure!(
        metrics.contains("troupe_host_allocation_ratio{"),
        "allocation ratios exported"
    );
    Ok(())
}

#[tokio::test]
async fn drain_moves_every_vm_away_two_at_a_time_then_the_host_is_in_maintenance() -> Result<()> {
    let node = Node::start(NodeOpts::named("vm-drain")).await?;
    let mut domains_of = Vec::new();
    for i in 0..6 {
        let v = create_vm(
            &node,
            json!({ "name": format!("d{i}"), "vcpus": 1, "memoryMiB": 256, "host": "sim-1" }),
        )
        .await?;
        domains_of.push(text(&v, "/spec/domain")?);
    }
    let id = host_id(&node, "sim-1").await?;
    let mut updates = Subscription::start(
        &node,
        "subscription($id: ID) { hostUpdates(id: $id) { name state drain { moved } } }",
        json!({ "id": id }),
    )
    .await?;
    let after = node.gql_ok("{ node { lastSeq } }", json!({})).await?;
    let after = int(&after, "/node/lastSeq")?;
    let drained = node
        .gql_ok(
            "mutation($id: ID!) { drainHost(id: $id) { state drain { total moved failed } } }",
            json!({ "id": id }),
        )
        .await?;
    ensure!(
        drained["drainHost"]["state"] == "DRAINING" && drained["drainHost"]["drain"]["total"] == 6,
        "{drained}"
    );
    let h = wait_host(&node, "sim-1", "MAINTENANCE").await?;
    ensure!(h["lastError"].is_null(), "{h}");
    // hostUpdates showed the drain as it went: DRAINING with progress, then MAINTENANCE.
    let mut seen = Vec::new();
    while seen.last().map(|(s, _): &(String, i64)| s.as_str()) != Some("MAINTENANCE") {
        let u = updates.next_with_deadline().await?.context("hostUpdates ended")?;
        seen.push((
            text(&u, "/hostUpdates/state")?,
            u["hostUpdates"]["drain"]["moved"].as_i64().unwrap_or(0),
        ));
    }
    ensure!(seen.iter().any(|(s, moved)| s == "DRAINING" && *moved > 0), "{seen:?}");
    let h = host(&node, "sim-1").await?;
    ensure!(
        h["drain"]["moved"] == 6 && h["drain"]["failed"] == 0 && h["drain"]["done"] == true,
        "{h}"
    );
    ensure!(
        h["domains"].as_array().unwrap().is_empty() && h["allocated"]["vms"] == 0,
        "{h}"
    );
    let all = domains(&node).await?;
    for d in &domains_of {
        let (on, running) = copies(&all, d);
        ensure!(on.len() == 1 && on[0] != "sim-1" && running == 1, "{d}: {on:?}");
    }
    // Never more than max_outbound_migrations (2) out of the host at once.
    let events = node.events_after(Some(after), &[]).await?;
    let mut moving = 0;
    let mut most = 0;
    for e in &events {
        match e["kind"].as_str().unwrap_or_default() {
            "VM_MIGRATION_SCHEDULING" => moving += 1,
            "VM_MIGRATION_SUCCEEDED" | "VM_MIGRATION_FAILED" => moving -= 1,
            _ => {}
        }
        most = most.max(moving);
    }
    ensure!((1..=2).contains(&most), "{most} migrations at once");
    ensure!(events.iter().filter(|e| e["kind"] == "HOST_DRAIN_PROGRESS").count() == 6);
    // A host in maintenance takes nothing; out of it, it does again.
    let body = node
        .gql(
            "mutation($input: CreateVmInput!) { createVm(input: $input) { id } }",
            json!({ "input": { "name": "late", "vcpus": 1, "memoryMiB": 256, "host": "sim-1" } }),
        )
        .await?;
    expect_code(&body, "NO_VALID_HOST")?;
    let up = node
        .gql_ok(
            "mutation($id: ID!) { setHostMaintenance(id: $id, enabled: false) { state } }",
            json!({ "id": id }),
        )
        .await?;
    ensure!(up["setHostMaintenance"]["state"] == "UP", "{up}");
    create_vm(
        &node,
        json!({ "name": "late", "vcpus": 1, "memoryMiB": 256, "host": "sim-1" }),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_host_failure_evacuates_every_vm_once_and_its_stale_copies_go_when_it_returns() -> Result<()> {
    let node = Node::start(
        NodeOpts::named("vm-evac")
            .arg("--fault-injection", "true")
            .arg("--vm-reconcile-ms", 100)
            .arg("--host-down-after-ms", 500),
    )
    .await?;
    let mut evacuees = Vec::new();
    for (i, policy) in [
        "ALWAYS",
        "ALWAYS",
        "ALWAYS",
        "ALWAYS",
        "RERUN_ON_FAILURE",
        "RERUN_ON_FAILURE",
    ]
    .iter()
    .enumerate()
    {
        let v = create_vm(
            &node,
            json!({ "name": format!("e{i}"), "vcpus": 1, "memoryMiB": 256, "host": "sim-1", "runPolicy": policy }),
        )
        .await?;
        evacuees.push((text(&v, "/id")?, text(&v, "/spec/domain")?));
    }
    let stays = create_vm(
        &node,
        json!({ "name": "manual", "vcpus": 1, "memoryMiB": 256, "host": "sim-1", "runPolicy": "MANUAL" }),
    )
    .await?;
    let stays = text(&stays, "/id")?;
    let sim1 = host_id(&node, "sim-1").await?;
    let fault = "mutation($t: ID!, $k: FaultKind!) { injectFault(target: $t, kind: $k) }";
    node.gql_ok(fault, json!({ "t": sim1, "k": "HOST_DISCONNECT" })).await?;
    wait_host(&node, "sim-1", "DOWN").await?;
    for (id, _) in &evacuees {
        wait_vm(&node, id, "running elsewhere", |v| {
            v["state"] == "RUNNING" && v["host"]["name"] != "sim-1"
        })
        .await?;
    }
    // A MANUAL VM is not Troupe's to move: it stays, and nothing is claimed about it.
    let manual = vm(&node, &stays).await?;
    ensure!(
        manual["state"] == "UNKNOWN" && manual["host"]["name"] == "sim-1",
        "{manual}"
    );
    // libvirt on the reachable hosts: one running copy of each.
    let all = domains(&node).await;
    ensure!(all.is_err(), "sim-1 cannot be asked while DOWN");
    for name in ["sim-2", "sim-3"] {
        let h = host(&node, name).await?;
        ensure!(h["state"] == "UP", "{h}");
    }
    let reachable = |all: &BTreeMap<String, Vec<(String, String)>>| -> Result<()> {
        for (_, domain) in &evacuees {
            let (on, running) = copies(all, domain);
            ensure!(on.len() == 1 && running == 1, "{domain} on {on:?}");
        }
        Ok(())
    };
    let mut partial = BTreeMap::new();
    for name in ["sim-2", "sim-3"] {
        let h = host(&node, name).await?;
        let list = h["domains"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["name"].as_str().unwrap().to_owned(),
                    d["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        partial.insert(name.to_owned(), list);
    }
    reachable(&partial)?;

    // The host comes back: its stale copies are destroyed before it is UP, so no VM ever has
    // two copies on reachable hosts.
    node.gql_ok(fault, json!({ "t": sim1, "k": "HOST_RECONNECT" })).await?;
    wait_host(&node, "sim-1", "UP").await?;
    let all = domains(&node).await?;
    reachable(&all)?;
    ensure!(
        all["sim-1"].len() == 1,
        "only the MANUAL VM's domain is left on sim-1: {:?}",
        all["sim-1"]
    );
    ensure!(node.events(&["VM_STALE_COPY_DESTROYED"]).await?.len() == evacuees.len());
    ensure!(node.events(&["VM_EVACUATED"]).await?.len() == evacuees.len());
    wait_vm(&node, &stays, "seen again", |v| v["state"] != "UNKNOWN").await?;
    Ok(())
}

#[tokio::test]
async fn vms_survive_a_driver_crash_by_adoption_and_a_node_restart_by_re_creation() -> Result<()> {
    let mut node = Node::start(NodeOpts::named("vm-adopt").arg("--fault-injection", "true")).await?;
    let mut ids = Vec::new();
    for i in 0..3 {
        let v = create_vm(
            &node,
            json!({ "name": format!("a{i}"), "vcpus": 1, "memoryMiB": 256, "host": "sim-1" }),
        )
        .await?;
        ids.push((text(&v, "/id")?, text(&v, "/spec/domain")?));
    }
    let sim1 = host_id(&node, "sim-1").await?;
    // A crashed driver is restarted; its VMs' new actors find their domains and adopt them.
    node.gql_ok(
        "mutation($t: ID!) { injectFault(target: $t, kind: DRIVER_CRASH) }",
        json!({ "t": sim1 }),
    )
    .await?;
    let deadline = Deadline::after(WAIT, "the VMs to be adopted");
    loop {
        let adopted = node.events(&["VM_ADOPTED"]).await?;
        if adopted.len() == ids.len() {
            break;
        }
        deadline.tick(adopted.len()).await?;
    }
    ensure!(!node.events_for("HOST_RESTARTED", &sim1).await?.is_empty());
    ensure!(
        node.events(&["VM_RECREATED"]).await?.is_empty(),
        "nothing was re-created"
    );
    let all = domains(&node).await?;
    for (_, d) in &ids {
        ensure!(copies(&all, d) == (vec!["sim-1".to_string()], 1), "{all:?}");
    }

    // kill -9: a simulated host's domains lived in the process, so they are re-created from
    // their specs on the same hosts, under the same ids.
    node.restart().await?;
    for (id, domain) in &ids {
        let v = wait_vm(&node, id, "running again", |v| v["state"] == "RUNNING").await?;
        ensure!(v["host"]["name"] == "sim-1" && v["spec"]["domain"] == *domain, "{v}");
    }
    let all = domains(&node).await?;
    for (_, d) in &ids {
        ensure!(copies(&all, d) == (vec!["sim-1".to_string()], 1), "{all:?}");
    }
    let h = host(&node, "sim-1").await?;
    ensure!(h["allocated"]["vms"] == 3, "claims restored: {h}");
    ensure!(node.events(&["VM_RECREATED"]).await?.len() == ids.len());
    Ok(())
}

/// A drain that could not move every VM leaves the host DRAINING with the failures as its
/// error; taken out of maintenance, the host is UP with no error left over (the drain's
/// figures stay in `drain`).
#[tokio::test]
async fn a_host_taken_out_of_an_incomplete_drain_is_up_without_the_drains_error() -> Result<()> {
    let node = Node::start(NodeOpts::named("vm-drain-stuck")).await?;
    let v = create_vm(
        &node,
        json!({ "name": "stuck", "vcpus": 1, "memoryMiB": 256, "host": "sim-1" }),
    )
    .await?;
    let _ = text(&v, "/id")?;
    // Nowhere to go: the other hosts are in maintenance.
    let maintenance =
        "mutation($id: ID!, $on: Boolean!) { setHostMaintenance(id: $id, enabled: $on) { state lastError } }";
    for other in ["sim-2", "sim-3"] {
        let id = host_id(&node, other).await?;
        node.gql_ok(maintenance, json!({ "id": id, "on": true })).await?;
    }
    let sim1 = host_id(&node, "sim-1").await?;
    node.gql_ok(
        "mutation($id: ID!) { drainHost(id: $id) { state } }",
        json!({ "id": sim1 }),
    )
    .await?;
    let ended = node.wait_event("HOST_DRAIN_ENDED", &sim1).await?;
    ensure!(
        ended["data"]["failed"] == 1 && ended["data"]["state"] == "DRAINING",
        "{ended}"
    );
    let stuck = host(&node, "sim-1").await?;
    ensure!(stuck["lastError"] == "1 of 1 VMs could not be moved", "{stuck}");
    let up = node.gql_ok(maintenance, json!({ "id": sim1, "on": false })).await?;
    ensure!(
        up["setHostMaintenance"]["state"] == "UP" && up["setHostMaintenance"]["lastError"].is_null(),
        "{up}"
    );
    let h = host(&node, "sim-1").await?;
    ensure!(h["lastError"].is_null() && h["drain"]["failed"] == 1, "{h}");
    Ok(())
}

/// `troupe_host_allocation_ratio` names each host by its qualified name (every node has a
/// `sim-1`), and holds what the host's claims promise after a restart too (the claims are
/// restored before the host's capacity is known).
#[tokio::test]
async fn allocation_ratios_name_hosts_apart_and_hold_after_a_restart() -> Result<()> {
    let mut node = Node::start(NodeOpts::named("vm-ratio")).await?;
    let v = create_vm(
        &node,
        json!({ "name": "weighed", "vcpus": 2, "memoryMiB": 1024, "host": "sim-1" }),
    )
    .await?;
    let id = text(&v, "/id")?;
    let labels = ["host=\"sim-1@vm-ratio\"", "resource=\"cpu\""];
    let before = metric(&node.metrics().await?, "troupe_host_allocation_ratio", &labels);
    ensure!(before > 0.0, "{}", node.metrics().await?);
    node.restart().await?;
    wait_vm(&node, &id, "running again", |v| v["state"] == "RUNNING").await?;
    let deadline = Deadline::after(WAIT, "sim-1's ratio as before the restart");
    loop {
        let metrics = node.metrics().await?;
        if metric(&metrics, "troupe_host_allocation_ratio", &labels) == before {
            break;
        }
        deadline.tick(metrics).await?;
    }
    Ok(())
}

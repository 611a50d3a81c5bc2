//! Hosts removed, drained or black-holed while a VM moves: a migration is held at its target
//! by hanging the target's libvirt (`injectFault(HOST_HANG)`), so each race is played out in
//! a known order.

use anyhow::{ensure, Context, Result};
use serde_json::json;

use super::support::vms::{create_vm, host, host_id, vm, wait_host, wait_vm};
use super::support::{expect_code, text, Node, NodeOpts};

const FAULT: &str = "mutation($t: ID!, $k: FaultKind!) { injectFault(target: $t, kind: $k) }";
const REMOVE: &str = "mutation($id: ID!) { removeHost(id: $id, force: true) { name } }";
const MIGRATE: &str =
    "mutation($id: ID!, $t: ID) { migrateVm(id: $id, targetHost: $t) { migration { phase error } vm { host { name } } } }";

/// A node whose libvirt calls wait long enough that a held migration is released by the
/// test, never by a timeout.
async fn node(name: &str) -> Result<Node> {
    Node::start(
        NodeOpts::named(name)
            .arg("--fault-injection", "true")
            .arg("--libvirt-timeout-ms", 120_000),
    )
    .await
}

/// sim-3 in MAINTENANCE and sim-2 hung: a VM leaving sim-1 can only go to sim-2, and waits
/// there in PREPARING_TARGET until sim-2 is healed.
async fn hold_moves_to_sim2(node: &Node) -> Result<String> {
    let sim3 = host_id(node, "sim-3").await?;
    node.gql_ok(
        "mutation($id: ID!) { setHostMaintenance(id: $id, enabled: true) { state } }",
        json!({ "id": sim3 }),
    )
    .await?;
    let sim2 = host_id(node, "sim-2").await?;
    node.gql_ok(FAULT, json!({ "t": sim2, "k": "HOST_HANG" })).await?;
    Ok(sim2)
}

async fn wait_held(node: &Node, id: &str) -> Result<()> {
    wait_vm(node, id, "held migrating to sim-2", |v| {
        v["migration"]["phase"] == "PREPARING_TARGET"
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_host_a_vm_is_moving_to_or_from_cannot_be_removed_and_the_vm_is_never_lost() -> Result<()> {
    let node = node("vm-race-remove").await?;
    let v = create_vm(
        &node,
        json!({ "name": "mover", "vcpus": 1, "memoryMiB": 256, "host": "sim-1" }),
    )
    .await?;
    let id = text(&v, "/id")?;
    let sim1 = host_id(&node, "sim-1").await?;
    let sim2 = hold_moves_to_sim2(&node).await?;
    let migrate = node.gql_ok(MIGRATE, json!({ "id": id, "t": "sim-2" }));
    let race = async {
        wait_held(&node, &id).await?;
        // The target of a migration under way is not removed ...
        expect_code(&node.gql(REMOVE, json!({ "id": sim2 })).await?, "CONFLICT")?;
        // ... nor is its source: the VM it could not delete keeps its records.
        expect_code(&node.gql(REMOVE, json!({ "id": sim1 })).await?, "CONFLICT")?;
        ensure!(host(&node, "sim-1").await?["state"] == "UP");
        node.gql_ok(FAULT, json!({ "t": sim2, "k": "HOST_RECONNECT" })).await?;
        Ok(())
    };
    let (moved, raced) = tokio::join!(migrate, race);
    raced?;
    let moved = moved?;
    ensure!(
        moved["migrateVm"]["migration"]["phase"] == "SUCCEEDED" && moved["migrateVm"]["vm"]["host"]["name"] == "sim-2",
        "{moved}"
    );
    let there = wait_vm(&node, &id, "running on sim-2", |v| {
        v["state"] == "RUNNING" && v["host"]["name"] == "sim-2"
    })
    .await?;
    ensure!(there["migration"]["phase"] == "SUCCEEDED", "{there}");
    // The VM is held by its new host: removing that host deletes it.
    node.gql_ok(REMOVE, json!({ "id": sim2 })).await?;
    ensure!(vm(&node, &id).await?.is_null(), "the VM went with its host");
    Ok(())
}

#[tokio::test]
async fn a_drain_called_off_leaves_the_host_up() -> Result<()> {
    let node = node("vm-race-drain").await?;
    let v = create_vm(
        &node,
        json!({ "name": "drained", "vcpus": 1, "memoryMiB": 256, "host": "sim-1" }),
    )
    .await?;
    let id = text(&v, "/id")?;
    let sim1 = host_id(&node, "sim-1").await?;
    let sim2 = hold_moves_to_sim2(&node).await?;
    node.gql_ok(
        "mutation($id: ID!) { drainHost(id: $id) { state } }",
        json!({ "id": sim1 }),
    )
    .await?;
    wait_held(&node, &id).await?;
    let up = node
        .gql_ok(
            "mutation($id: ID!) { setHostMaintenance(id: $id, enabled: false) { state } }",
            json!({ "id": sim1 }),
        )
        .await?;
    ensure!(up["setHostMaintenance"]["state"] == "UP", "{up}");
    node.gql_ok(FAULT, json!({ "t": sim2, "k": "HOST_RECONNECT" })).await?;
    let ended = node.wait_event("HOST_DRAIN_ENDED", &sim1).await?;
    ensure!(ended["data"]["state"] == "UP", "{ended}");
    ensure!(host(&node, "sim-1").await?["state"] == "UP");
    Ok(())
}

#[tokio::test]
async fn a_black_holed_host_is_unreachable_then_down_and_evacuated_while_others_answer() -> Result<()> {
    let node = Node::start(
        NodeOpts::named("vm-race-hang")
            .arg("--fault-injection", "true")
            .arg("--libvirt-timeout-ms", 500)
            .arg("--host-down-after-ms", 1500),
    )
    .await?;
    let v = create_vm(
        &node,
        json!({ "name": "keeper", "vcpus": 1, "memoryMiB": 256, "host": "sim-1", "runPolicy": "ALWAYS" }),
    )
    .await?;
    let id = text(&v, "/id")?;
    let sim1 = host_id(&node, "sim-1").await?;
    node.gql_ok(FAULT, json!({ "t": sim1, "k": "HOST_HANG" })).await?;
    let lost = wait_host(&node, "sim-1", "UNREACHABLE").await?;
    ensure!(
        lost["lastError"]
            .as_str()
            .unwrap_or_default()
            .contains("did not answer"),
        "{lost}"
    );
    // The other hosts answer meanwhile.
    let other = create_vm(
        &node,
        json!({ "name": "elsewhere", "vcpus": 1, "memoryMiB": 256, "host": "sim-2" }),
    )
    .await?;
    ensure!(other["state"] == "RUNNING", "{other}");
    wait_host(&node, "sim-1", "DOWN").await?;
    wait_vm(&node, &id, "evacuated and running", |v| {
        v["state"] == "RUNNING" && v["host"]["name"] != "sim-1"
    })
    .await?;
    node.gql_ok(FAULT, json!({ "t": sim1, "k": "HOST_RECONNECT" })).await?;
    wait_host(&node, "sim-1", "UP").await?;
    Ok(())
}

/// A peer's VM stop may take longer than a plain peer call: alpha waits for beta's own
/// answer (here: beta's hung host did not answer within its libvirt timeout) instead of
/// giving up first.
#[tokio::test]
async fn a_stop_through_a_peer_waits_for_the_peers_answer() -> Result<()> {
    // injectFault is an experiment: the node asked must allow them too.
    let (alpha, _beta) = super::cluster::start_pair_of(
        NodeOpts::named("alpha").arg("--fault-injection", "true"),
        NodeOpts::named("beta")
            .arg("--fault-injection", "true")
            .arg("--libvirt-timeout-ms", 7000),
    )
    .await?;
    let v = create_vm(
        &alpha,
        json!({ "name": "far", "vcpus": 1, "memoryMiB": 256, "node": "beta" }),
    )
    .await?;
    let id = text(&v, "/id")?;
    let host = text(&v, "/hostId")?;
    alpha.gql_ok(FAULT, json!({ "t": host, "k": "HOST_HANG" })).await?;
    let stopped = alpha
        .gql(
            "mutation($id: ID!) { stopVm(id: $id, timeoutMs: 1000) { state } }",
            json!({ "id": id }),
        )
        .await?;
    expect_code(&stopped, "UNAVAILABLE")?;
    let message = stopped["errors"][0]["message"].as_str().unwrap_or_default();
    ensure!(message.contains("did not answer within 7000 ms"), "{stopped}");
    alpha.gql_ok(FAULT, json!({ "t": host, "k": "HOST_RECONNECT" })).await?;
    Ok(())
}

/// A migration under way when its node is killed ends FAILED at the node's start, told as
/// one that fails while its node runs is: a `VM_MIGRATION_FAILED` event and its count.
#[tokio::test]
async fn a_migration_cut_short_by_its_nodes_death_is_told_as_failed_when_it_starts_again() -> Result<()> {
    let mut node = node("vm-race-kill").await?;
    let v = create_vm(
        &node,
        json!({ "name": "cut", "vcpus": 1, "memoryMiB": 256, "host": "sim-1" }),
    )
    .await?;
    let id = text(&v, "/id")?;
    hold_moves_to_sim2(&node).await?;
    let migrate = node.gql(MIGRATE, json!({ "id": id, "t": "sim-2" }));
    let held = async {
        wait_held(&node, &id).await?;
        // SIGKILL; `restart` below waits for the process to be gone.
        let killed = std::process::Command::new("kill")
            .args(["-9", &node.pid()?.to_string()])
            .status()?;
        ensure!(killed.success(), "kill -9 failed");
        Ok(())
    };
    let (_, held) = tokio::join!(migrate, held);
    held?;
    node.restart().await?;
    let back = wait_vm(&node, &id, "its migration failed, on sim-1", |v| {
        v["migration"]["phase"] == "FAILED" && v["host"]["name"] == "sim-1"
    })
    .await?;
    ensure!(
        back["migration"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("stopped or was lost"),
        "{back}"
    );
    let failed = node.wait_event("VM_MIGRATION_FAILED", &id).await?;
    ensure!(
        failed["data"]["phase"] == "FAILED" && failed["data"]["name"] == "cut",
        "{failed}"
    );
    let metrics = node.metrics().await?;
    ensure!(
        super::support::metric(&metrics, "troupe_migrations_total", &["outcome=\"FAILED\""]) == 1.0,
        "{metrics}"
    );
    Ok(())
}

/// A node's stop answers what it was asked before it goes: a migration under way when
/// SIGTERM comes (held at its hung target until libvirt's timeout) gets its answer, not a
/// dropped connection.
#[tokio::test]
async fn a_migration_under_way_when_its_node_is_stopped_is_answered() -> Result<()> {
    let mut node = Node::start(
        NodeOpts::named("vm-race-term")
            .arg("--fault-injection", "true")
            .arg("--libvirt-timeout-ms", 2000),
    )
    .await?;
    let v = create_vm(
        &node,
        json!({ "name": "leaving", "vcpus": 1, "memoryMiB": 256, "host": "sim-1" }),
    )
    .await?;
    let id = text(&v, "/id")?;
    hold_moves_to_sim2(&node).await?;
    let migrate = node.gql(MIGRATE, json!({ "id": id, "t": "sim-2" }));
    let stop = async {
        wait_held(&node, &id).await?;
        node.sigterm()
    };
    let (answer, stopped) = tokio::join!(migrate, stop);
    stopped?;
    // An answer, whatever it says (the migration's end, or why it could not end).
    let answer = answer.context("the request in flight was cut off")?;
    ensure!(
        answer["data"]["migrateVm"]["migration"]["phase"].is_string() || answer["errors"].is_array(),
        "{answer}"
    );
    ensure!(node.wait_exit(std::time::Duration::from_secs(60)).await?.success());
    Ok(())
}

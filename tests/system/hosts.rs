//! Hosts through the gateway: bad input, hosts added and removed, a peer's hosts and VMs,
//! simulated hosts across restarts.

use anyhow::{ensure, Context, Result};
use serde_json::json;

use super::support::vms::{act, create_vm, host_id, vm, wait_host};
use super::support::{error_code, expect_code, text, Node, NodeOpts};

#[tokio::test]
async fn bad_vm_and_host_input_is_refused_with_its_reason() -> Result<()> {
    let node = Node::start(NodeOpts::named("vm-bad")).await?;
    let q = "mutation($input: CreateVmInput!) { createVm(input: $input) { id } }";
    for input in [
        json!({ "name": "zero", "vcpus": 0, "memoryMiB": 512 }),
        json!({ "name": "bad name", "vcpus": 1, "memoryMiB": 512 }),
        json!({ "name": "tiny", "vcpus": 1, "memoryMiB": 1 }),
        json!({ "name": "nohost", "vcpus": 1, "memoryMiB": 512, "host": "sim-9" }),
    ] {
        let body = node.gql(q, json!({ "input": input })).await?;
        let code = error_code(&body);
        ensure!(
            matches!(code.as_deref(), Some("INVALID_INPUT" | "NOT_FOUND")),
            "{input}: {body}"
        );
    }
    // Too big for any host: each host's reason is named.
    let body = node
        .gql(
            q,
            json!({ "input": { "name": "huge", "vcpus": 2, "memoryMiB": 500000 } }),
        )
        .await?;
    expect_code(&body, "NO_VALID_HOST")?;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    for h in ["sim-1", "sim-2", "sim-3"] {
        ensure!(message.contains(&format!("{h}: not enough memory")), "{message}");
    }
    let body = node
        .gql(
            q,
            json!({ "input": { "name": "gpu", "vcpus": 1, "memoryMiB": 512, "hostSelector": [{ "key": "gpu", "value": "yes" }] } }),
        )
        .await?;
    expect_code(&body, "NO_VALID_HOST")?;
    ensure!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("lacks label gpu=yes"),
        "{body}"
    );

    let add = "mutation($input: AddHostInput!) { addHost(input: $input) { id state } }";
    for uri in ["http://example.com", "test:///no/such/node.xml", "test:///relative"] {
        let body = node.gql(add, json!({ "input": { "name": "h", "uri": uri } })).await?;
        expect_code(&body, "INVALID_INPUT")?;
    }
    // Without --fault-injection there is no injectFault.
    let id = host_id(&node, "sim-1").await?;
    let body = node
        .gql(
            "mutation($t: ID!) { injectFault(target: $t, kind: HOST_DISCONNECT) }",
            json!({ "t": id }),
        )
        .await?;
    expect_code(&body, "FORBIDDEN")?;
    Ok(())
}

#[tokio::test]
async fn an_added_host_takes_labelled_vms_and_is_removed_only_when_empty_or_forced() -> Result<()> {
    let node = Node::start(NodeOpts::named("vm-hosts").arg("--simulated-hosts", 0)).await?;
    let file = node.data_dir().join("big.xml");
    std::fs::write(
        &file,
        "<node><cpu><mhz>2000</mhz><model>t</model><active>8</active><max>8</max><total>8</total>\
         <nodes>1</nodes><sockets>1</sockets><cores>8</cores><threads>1</threads></cpu><memory>8388608</memory></node>",
    )?;
    let add = "mutation($input: AddHostInput!) { addHost(input: $input) { id name state capacity { cpus memoryMiB } \
               allocated { vcpuLimit memoryLimitMiB } } }";
    let added = node
        .gql_ok(
            add,
            json!({ "input": { "name": "gpu-1", "uri": format!("test://{}", file.display()),
                    "labels": [{ "key": "gpu", "value": "yes" }], "overcommit": { "cpu": 2.0, "memory": 1.0 },
                    "reservedMemoryMiB": 1024 } }),
        )
        .await?;
    let h = &added["addHost"];
    ensure!(
        h["state"] == "UP" && h["capacity"]["cpus"] == 8 && h["capacity"]["memoryMiB"] == 8192,
        "{h}"
    );
    ensure!(
        h["allocated"]["vcpuLimit"] == 16 && h["allocated"]["memoryLimitMiB"] == 7168,
        "{h}"
    );
    let id = text(h, "/id")?;
    let dup = node
        .gql(add, json!({ "input": { "name": "gpu-1", "uri": "test:///default" } }))
        .await?;
    expect_code(&dup, "CONFLICT")?;
    // Nor does a second host of this node drive the same hypervisor: each took the other's
    // VMs for stale copies and destroyed them, every second.
    let twin = node
        .gql(
            add,
            json!({ "input": { "name": "gpu-2", "uri": format!("test://{}", file.display()) } }),
        )
        .await?;
    expect_code(&twin, "CONFLICT")?;
    ensure!(twin.to_string().contains("gpu-1"), "{twin}");
    let v = create_vm(
        &node,
        json!({ "name": "trainer", "vcpus": 4, "memoryMiB": 4096, "hostSelector": [{ "key": "gpu", "value": "yes" }] }),
    )
    .await?;
    ensure!(v["host"]["name"] == "gpu-1" && v["state"] == "RUNNING", "{v}");
    let remove = "mutation($id: ID!, $force: Boolean) { removeHost(id: $id, force: $force) { name } }";
    expect_code(
        &node.gql(remove, json!({ "id": id, "force": false })).await?,
        "CONFLICT",
    )?;
    node.gql_ok(remove, json!({ "id": id, "force": true })).await?;
    ensure!(vm(&node, &text(&v, "/id")?).await?.is_null(), "its VM went with it");
    let left = node.gql_ok("{ hosts { name } }", json!({})).await?;
    ensure!(left["hosts"].as_array().unwrap().is_empty(), "{left}");
    // A reservation of all the host's memory is taken, and said: no VM would fit.
    let full =
        "mutation($input: AddHostInput!) { addHost(input: $input) { state lastError allocated { memoryLimitMiB } } }";
    let added = node
        .gql_ok(
            full,
            json!({ "input": { "name": "tiny", "uri": format!("test://{}", file.display()), "reservedMemoryMiB": 8192 } }),
        )
        .await?;
    let h = &added["addHost"];
    ensure!(
        h["state"] == "UP"
            && h["allocated"]["memoryLimitMiB"] == 0
            && h["lastError"] == "reservedMemoryMiB 8192 leaves none of the host's 8192 MiB for VMs",
        "{h}"
    );
    Ok(())
}

#[tokio::test]
async fn a_peers_hosts_and_vms_are_reached_through_any_node() -> Result<()> {
    let (alpha, _beta) = super::cluster::start_pair().await?;
    let listed = alpha.gql_ok("{ hosts { name node state } }", json!({})).await?;
    let hosts = listed["hosts"].as_array().context("hosts")?;
    ensure!(hosts.len() == 6, "three simulated hosts per node: {hosts:?}");
    ensure!(hosts.iter().filter(|h| h["node"] == "beta").count() == 3);
    let added = alpha
        .gql_ok(
            "mutation($input: AddHostInput!) { addHost(input: $input) { id node state } }",
            json!({ "input": { "name": "lab", "uri": "test:///default", "node": "beta",
                                "labels": [{ "key": "room", "value": "lab" }] } }),
        )
        .await?;
    ensure!(
        added["addHost"]["node"] == "beta" && added["addHost"]["state"] == "UP",
        "{added}"
    );
    // A VM none of alpha's hosts can take is placed on a peer's, as its beats report them
    // (it was NO_VALID_HOST "this node has no hosts" on a node whose hosts had all moved).
    wait_host(&alpha, "lab", "UP").await?;
    let keyed = "mutation($input: CreateVmInput!) { createVm(input: $input, idempotencyKey: \"lab-1\") { id host { name node } } }";
    let input = json!({ "input": { "name": "lab-1", "vcpus": 1, "memoryMiB": 256, "hostSelector": [{ "key": "room", "value": "lab" }] } });
    let first = alpha.gql_ok(keyed, input.clone()).await?;
    ensure!(
        first["createVm"]["host"]["name"] == "lab" && first["createVm"]["host"]["node"] == "beta",
        "{first}"
    );
    let again = alpha.gql_ok(keyed, input).await?;
    ensure!(
        again["createVm"]["id"] == first["createVm"]["id"],
        "{again} after {first}"
    );
    let nowhere = alpha
        .gql(
            "mutation($input: CreateVmInput!) { createVm(input: $input) { id } }",
            json!({ "input": { "name": "nowhere", "vcpus": 1, "memoryMiB": 256, "hostSelector": [{ "key": "room", "value": "attic" }] } }),
        )
        .await?;
    expect_code(&nowhere, "NO_VALID_HOST")?;
    ensure!(
        nowhere.to_string().contains("sim-1: lacks label room=attic")
            && nowhere.to_string().contains("lab@beta: lacks label room=attic"),
        "each host of both nodes with its reason: {nowhere}"
    );
    // Host names are unique in the cluster: `lab` is beta's, so alpha cannot have one.
    let dup = alpha
        .gql(
            "mutation($input: AddHostInput!) { addHost(input: $input) { id } }",
            json!({ "input": { "name": "lab", "uri": "test:///default" } }),
        )
        .await?;
    expect_code(&dup, "CONFLICT")?;
    ensure!(dup.to_string().contains("on node beta"), "{dup}");
    // Every node's simulated hosts share names: a bare one is ambiguous, `name@node` is not.
    let q = "query($id: ID!) { host(id: $id) { node qualifiedName } }";
    expect_code(&alpha.gql(q, json!({ "id": "sim-1" })).await?, "INVALID_INPUT")?;
    let one = alpha.gql_ok(q, json!({ "id": "sim-1@beta" })).await?;
    ensure!(
        one["host"]["node"] == "beta" && one["host"]["qualifiedName"] == "sim-1@beta",
        "{one}"
    );
    let v = create_vm(
        &alpha,
        json!({ "name": "far", "vcpus": 1, "memoryMiB": 256, "node": "beta" }),
    )
    .await?;
    let id = text(&v, "/id")?;
    ensure!(id.ends_with("@beta") && v["state"] == "RUNNING", "{v}");
    let from = text(&v, "/host/name")?;
    let moved = alpha
        .gql_ok(
            "mutation($id: ID!) { migrateVm(id: $id) { migration { phase } vm { state host { name node } } } }",
            json!({ "id": id }),
        )
        .await?;
    let m = &moved["migrateVm"];
    ensure!(
        m["migration"]["phase"] == "SUCCEEDED" && m["vm"]["host"]["node"] == "beta",
        "{m}"
    );
    ensure!(m["vm"]["host"]["name"] != from.as_str(), "{m}");
    let stopped = act(&alpha, "pauseVm", &id).await?;
    ensure!(stopped["data"]["pauseVm"]["state"] == "PAUSED", "{stopped}");
    let listed = alpha
        .gql_ok("{ vms { edges { node { id state } } missingNodes } }", json!({}))
        .await?;
    ensure!(
        listed["vms"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["node"]["id"] == id.as_str()),
        "{listed}"
    );
    Ok(())
}

#[tokio::test]
async fn removed_simulated_hosts_stay_removed_after_a_restart() -> Result<()> {
    let mut node = Node::start(NodeOpts::named("vm-sims").arg("--simulated-hosts", 1)).await?;
    let id = host_id(&node, "sim-1").await?;
    node.gql_ok(
        "mutation($id: ID!) { removeHost(id: $id) { name } }",
        json!({ "id": id }),
    )
    .await?;
    node.restart().await?;
    let hosts = node.gql_ok("{ hosts { name } }", json!({})).await?;
    ensure!(hosts["hosts"].as_array().is_some_and(Vec::is_empty), "{hosts}");
    Ok(())
}

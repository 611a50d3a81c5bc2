//! Two nodes on loopback: membership, spawning on a peer, and tasks visible through
//! either node.

use std::collections::BTreeMap;

use anyhow::{ensure, Result};
use serde_json::{json, Value};

use super::support::{expect_code, text, Deadline, Node, NodeOpts, Subscription, WAIT};

/// name -> status of every member `node` reports.
async fn members(node: &Node) -> Result<BTreeMap<String, String>> {
    let data = node
        .gql_ok("{ node { name members { name address status } } }", json!({}))
        .await?;
    let list = data["node"]["members"].as_array().cloned().unwrap_or_default();
    list.iter()
        .map(|m| -> Result<(String, String)> { Ok((text(m, "/name")?, text(m, "/status")?)) })
        .collect()
}

/// Starts "alpha", then "beta" joining it, and waits until each lists both as UP.
async fn start_pair() -> Result<(Node, Node)> {
    let alpha = Node::start(NodeOpts::named("alpha")).await?;
    let join = format!("127.0.0.1:{}", alpha.cluster_port);
    let beta = Node::start(NodeOpts::named("beta").arg("--join", join)).await?;
    let want: BTreeMap<String, String> = [("alpha", "UP"), ("beta", "UP")]
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect();
    let deadline = Deadline::after(WAIT, "alpha and beta to list each other UP");
    loop {
        let (a, b) = (members(&alpha).await?, members(&beta).await?);
        if a == want && b == want {
            return Ok((alpha, beta));
        }
        deadline.tick(format!("alpha sees {a:?}, beta sees {b:?}")).await?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_nodes_list_each_other_up_with_addresses() -> Result<()> {
    let (alpha, beta) = start_pair().await?;
    for node in [&alpha, &beta] {
        let data = node
            .gql_ok("{ node { name members { name address status } } }", json!({}))
            .await?;
        ensure!(data["node"]["name"] == node.name.as_str(), "{data}");
        for member in data["node"]["members"].as_array().into_iter().flatten() {
            let address = text(member, "/address")?;
            ensure!(!address.is_empty(), "member without an address: {member}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_spawned_on_peer_runs_tasks_visible_through_both_nodes() -> Result<()> {
    let (alpha, beta) = start_pair().await?;
    let input = json!({
        "name": "remote-echo",
        "backend": { "builtin": { "kind": "echo" } },
        "node": "beta",
    });
    let agent = alpha.spawn_agent(input).await?;
    ensure!(agent["node"] == "beta", "spawned through alpha for beta: {agent}");
    let agent = text(&agent, "/id")?;
    let on_beta = beta.wait_agent_state(&agent, "RUNNING").await?;
    ensure!(on_beta["node"] == "beta", "{on_beta}");

    let payload = json!({ "across": ["the", "cluster"] });
    let id = alpha.submit_to(&agent, payload.clone()).await?;
    let done = alpha.wait_task_state(&id, "SUCCEEDED").await?;
    ensure!(
        done["result"] == payload && done["agentId"] == agent.as_str(),
        "through alpha: {done}"
    );
    let seen: Value = beta.task(&id).await?;
    ensure!(
        seen["state"] == "SUCCEEDED" && seen["result"] == payload,
        "through beta: {seen}"
    );
    let remote = alpha.agent(&agent).await?;
    ensure!(remote["node"] == "beta", "agent looked up through alpha: {remote}");

    // Lists are the cluster's: an agent of alpha's own, paged one at a time, comes with beta's.
    let local = alpha.spawn_builtin("echo", &[]).await?;
    let mut seen_agents = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let q = "query($after: String) { agents(first: 1, after: $after) { totalCount nodes { id node } pageInfo { hasNextPage endCursor } } }";
        let data = alpha.gql_ok(q, json!({ "after": after })).await?;
        let page = &data["agents"];
        ensure!(page["totalCount"] == 2, "totalCount through alpha: {page}");
        for a in page["nodes"].as_array().into_iter().flatten() {
            seen_agents.push(text(a, "/id")?);
        }
        if page["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = Some(text(page, "/pageInfo/endCursor")?);
    }
    let mut want = vec![agent.clone(), local];
    want.sort();
    ensure!(
        seen_agents == want,
        "agents through alpha: {seen_agents:?}, want {want:?}"
    );
    // The task lives on beta (it was forwarded there); alpha lists it all the same.
    let tasks = alpha
        .gql_ok("{ tasks(state: SUCCEEDED) { totalCount nodes { id } } }", json!({}))
        .await?;
    ensure!(
        tasks["tasks"]["totalCount"] == 1 && tasks["tasks"]["nodes"][0]["id"] == id.as_str(),
        "tasks through alpha: {tasks}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawning_on_an_unknown_node_is_invalid_input() -> Result<()> {
    let node = Node::start(NodeOpts::named("alpha")).await?;
    let q = "mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }";
    let input = json!({ "name": "lost", "backend": { "builtin": { "kind": "echo" } }, "node": "nope" });
    expect_code(&node.gql(q, json!({ "input": input })).await?, "INVALID_INPUT")?;
    let data = node.gql_ok("{ agents { totalCount } }", json!({})).await?;
    ensure!(data["agents"]["totalCount"] == 0, "{data}");
    Ok(())
}

/// Waits until `node` reports `peer` with `status`.
async fn wait_member(node: &Node, peer: &str, status: &str) -> Result<()> {
    let deadline = Deadline::after(WAIT, format!("{} to report {peer} {status}", node.name));
    loop {
        let seen = members(node).await?;
        if seen.get(peer).map(String::as_str) == Some(status) {
            return Ok(());
        }
        deadline.tick(format!("{} sees {seen:?}", node.name)).await?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_peer_is_reported_down_then_up_again_when_it_resumes() -> Result<()> {
    let (alpha, beta) = start_pair().await?;
    // A stopped process keeps its TCP session open: only the heartbeat can tell.
    beta.freeze()?;
    wait_member(&alpha, "beta", "DOWN").await?;
    let data = alpha.gql_ok("{ node { members { name status } } }", json!({})).await?;
    ensure!(
        members(&alpha).await?.get("alpha").map(String::as_str) == Some("UP"),
        "alpha should still list itself UP: {data}"
    );
    beta.thaw()?;
    wait_member(&alpha, "beta", "UP").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_updates_follow_a_task_queued_on_a_peer_to_its_end() -> Result<()> {
    let (alpha, _beta) = start_pair().await?;
    let input = json!({ "name": "napper", "backend": { "builtin": { "kind": "sleep" } }, "node": "beta" });
    let napper = text(&alpha.spawn_agent(input).await?, "/id")?;
    // The napper has one slot: the second task waits on beta while we subscribe through alpha.
    alpha.submit_to(&napper, json!({ "ms": 1500 })).await?;
    let id = alpha.submit_to(&napper, json!({ "ms": 10 })).await?;
    let q = "subscription($id: ID!) { taskUpdates(id: $id) { state } }";
    let mut sub = Subscription::start(&alpha, q, json!({ "id": id })).await?;
    let mut states = Vec::new();
    while let Some(data) = sub.next_with_deadline().await? {
        states.push(text(&data, "/taskUpdates/state")?);
    }
    ensure!(
        states.first().map(String::as_str) == Some("QUEUED"),
        "states: {states:?}"
    );
    ensure!(
        states.last().map(String::as_str) == Some("SUCCEEDED"),
        "states: {states:?}"
    );
    Ok(())
}

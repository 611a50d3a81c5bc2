//! Failover: a member that dies or freezes is declared DOWN by the leader once its lease has
//! lapsed, and what it ran serves on the survivors, once.

use std::time::Instant;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::replicated::{start_cluster, CLUSTER};
use super::support::{pid_alive, python_agent, text, wait_pid_gone, Deadline, Gate, Node, NodeOpts, WAIT};

/// The member `name` as `node`'s cluster view shows it.
async fn member(node: &Node, name: &str) -> Result<Value> {
    let view = node.gql_ok(CLUSTER, json!({})).await?;
    view["cluster"]["members"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == name)
        .cloned()
        .with_context(|| format!("{name} is not in {view}"))
}

async fn wait_member_state(node: &Node, name: &str, state: &str) -> Result<Value> {
    let deadline = Deadline::after(WAIT, format!("{name} to be {state} on {}", node.name));
    loop {
        let m = member(node, name).await?;
        if m["state"] == state {
            return Ok(m);
        }
        deadline.tick(&m).await?;
    }
}

/// Waits until `node` says the agent runs on a node other than `not`; that node's name.
async fn wait_moved(node: &Node, id: &str, not: &str) -> Result<String> {
    let q = "query($id: ID!) { agent(id: $id) { node state } }";
    let deadline = Deadline::after(WAIT, format!("agent {id} to run off {not}"));
    loop {
        let body = node.gql(q, json!({ "id": id })).await?;
        let agent = &body["data"]["agent"];
        if agent["state"] == "RUNNING" && agent["node"].as_str().is_some_and(|n| n != not) {
            return text(agent, "/node");
        }
        deadline.tick(&body).await?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_agents_and_tasks_serve_on_the_survivors_once() -> Result<()> {
    let mut nodes = start_cluster(
        NodeOpts::named("alpha"),
        vec![NodeOpts::named("beta"), NodeOpts::named("gamma")],
    )
    .await?;
    let mut agents = Vec::new();
    for i in 0..4 {
        let caps = [format!("echo-{i}")];
        let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
        let id = nodes[2].spawn_builtin("echo", &caps).await?;
        nodes[2].wait_agent_state(&id, "RUNNING").await?;
        agents.push(id);
    }
    // A task running on gamma when it dies, held there by a gate.
    let gate = Gate::new()?;
    let held = nodes[2].spawn_gated(&gate, &["slow"], 1).await?;
    nodes[2].wait_agent_state(&held, "RUNNING").await?;
    let running = text(
        &nodes[2]
            .submit(json!({ "capability": "slow", "payload": { "n": 1 } }))
            .await?,
        "/id",
    )?;
    nodes[2].wait_task_state(&running, "RUNNING").await?;
    for m in ["alpha", "beta", "gamma"] {
        wait_member_state(&nodes[0], m, "UP").await?;
    }

    let killed = Instant::now();
    nodes[2].kill9().await?;
    let mut homes = Vec::new();
    for id in agents.iter().chain([&held]) {
        homes.push(wait_moved(&nodes[0], id, "gamma").await?);
    }
    eprintln!("gamma's agents served elsewhere {:?} after the kill", killed.elapsed());
    ensure!(
        homes.iter().any(|h| h == "alpha") && homes.iter().any(|h| h == "beta"),
        "{homes:?}"
    );
    let down = wait_member_state(&nodes[1], "gamma", "DOWN").await?;
    ensure!(down["lastHeartbeat"].is_string(), "{down}");

    // The leader told the story: gamma suspect, down, each of its agents moved.
    let events = nodes[1]
        .events_after(None, &["MEMBER_SUSPECT", "MEMBER_DOWN", "AGENT_MOVED", "TASKS_MOVED"])
        .await?;
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    let down_at = kinds
        .iter()
        .position(|k| *k == "MEMBER_DOWN")
        .context("no MEMBER_DOWN")?;
    ensure!(kinds[..down_at].contains(&"MEMBER_SUSPECT"), "{kinds:?}");
    let moved: Vec<&Value> = events.iter().filter(|e| e["kind"] == "AGENT_MOVED").collect();
    ensure!(moved.len() == 5, "{moved:?}");
    for e in &moved {
        ensure!(e["data"]["from"] == "gamma" && e["data"]["reason"].is_string(), "{e}");
    }

    // The task that was running is queued again on the agent's new node, not charged an
    // attempt, and ends there once the gate opens.
    let task = nodes[0].wait_task_state(&running, "RUNNING").await?;
    ensure!(task["failedAttempts"] == 0, "{task}");
    gate.open()?;
    let done = nodes[1].wait_task_state(&running, "SUCCEEDED").await?;
    ensure!(done["agentId"] == held.as_str(), "{done}");

    // A moved agent takes new work wherever it is asked.
    for (i, id) in agents.iter().enumerate() {
        let task = nodes[i % 2].submit_to(id, json!({ "i": i })).await?;
        nodes[(i + 1) % 2].wait_task_state(&task, "SUCCEEDED").await?;
    }
    Ok(())
}

/// The process groups `node` says the agent runs now.
async fn groups(node: &Node, id: &str) -> Result<Vec<i64>> {
    let q = "query($id: ID!) { agent(id: $id) { processGroups } }";
    let seen = node.gql_ok(q, json!({ "id": id })).await?;
    Ok(seen["agent"]["processGroups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_i64)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_is_declared_down_then_finds_itself_fenced_and_rejoins_without_duplicates() -> Result<()> {
    let nodes = start_cluster(
        NodeOpts::named("alpha"),
        vec![NodeOpts::named("beta"), NodeOpts::named("gamma")],
    )
    .await?;
    let agent = text(
        &nodes[2]
            .spawn_agent(json!({ "name": "worker", "backend": { "process": { "command": python_agent() } } }))
            .await?,
        "/id",
    )?;
    nodes[2].wait_agent_state(&agent, "RUNNING").await?;
    for m in ["alpha", "beta", "gamma"] {
        wait_member_state(&nodes[0], m, "UP").await?;
    }
    let first = groups(&nodes[2], &agent).await?;
    ensure!(first.len() == 1, "{first:?}");

    nodes[2].freeze()?;
    let home = wait_moved(&nodes[0], &agent, "gamma").await?;
    wait_member_state(&nodes[0], "gamma", "DOWN").await?;
    let at = if home == "alpha" { 0 } else { 1 };
    let second = groups(&nodes[at], &agent).await?;
    ensure!(second.len() == 1 && second != first, "{first:?} then {second:?}");

    nodes[2].thaw()?;
    // Back, gamma finds its lease lapsed: it stops its work, the old process included,
    // and starts again as UP, without the agent that moved.
    wait_pid_gone(first[0] as i32).await?;
    wait_member_state(&nodes[0], "gamma", "UP").await?;
    let deadline = Deadline::after(WAIT, "gamma to record its fencing");
    loop {
        let fenced = nodes[2].events_after(None, &["NODE_FENCED"]).await?;
        if fenced.iter().any(|e| e["subject"] == "gamma") {
            break;
        }
        deadline.tick(format!("{fenced:?}")).await?;
    }
    let q = "query($id: ID!) { agent(id: $id) { node state } }";
    let seen = nodes[2].gql_ok(q, json!({ "id": agent })).await?;
    ensure!(seen["agent"]["node"] == home.as_str(), "{seen}");
    ensure!(seen["agent"]["state"] == "RUNNING", "{seen}");
    // gamma started no copy after it came back: the moved one still runs, alone.
    ensure!(groups(&nodes[at], &agent).await? == second, "the moved agent restarted");
    ensure!(pid_alive(second[0] as i32), "the moved agent's process stopped");
    ensure!(groups(&nodes[2], &agent).await? == second, "gamma sees another process");
    // gamma takes writes again, under its new epoch.
    let task = nodes[2]
        .submit_to(&agent, json!({ "op": "echo", "value": "after thaw" }))
        .await?;
    nodes[0].wait_task_state(&task, "SUCCEEDED").await?;
    Ok(())
}

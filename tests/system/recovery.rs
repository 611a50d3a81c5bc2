//! Crash: after kill -9 the node restarts on the same data dir and finishes every task, the
//! event log keeps its order, and the admin token survives.

use std::collections::HashSet;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::support::{int, text, Deadline, Gate, Node, NodeOpts, WAIT};

/// The ids of the tasks in `state`.
async fn ids_in_state(node: &Node, state: &str) -> Result<HashSet<String>> {
    let q = "query($state: TaskState) { tasks(state: $state, first: 100) { nodes { id } } }";
    let data = node.gql_ok(q, json!({ "state": state })).await?;
    let nodes = data["tasks"]["nodes"].as_array().context("tasks.nodes")?;
    nodes.iter().map(|t| text(t, "/id")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_run_then_restart_completes_every_task_and_keeps_the_log() -> Result<()> {
    let mut node = Node::start(NodeOpts::named("solo").arg("--retry-base-ms", 100)).await?;
    // Tasks wait for the gate, so some are surely RUNNING when the node is killed.
    let gate = Gate::new()?;
    let agent = node.spawn_gated(&gate, &[], 4).await?;
    let mut ids = Vec::new();
    for n in 0..8 {
        ids.push(node.submit_to(&agent, json!({ "n": n })).await?);
    }

    let deadline = Deadline::after(WAIT, "a task RUNNING before the kill");
    let running = loop {
        let running = ids_in_state(&node, "RUNNING").await?;
        if !running.is_empty() {
            break running;
        }
        deadline.tick("none yet").await?;
    };
    let before = node.events(&[]).await?;
    let token = node.token.clone();
    // The README's `kill -9 "$(cat troupe-data/troupe.pid)"` names this node and no other.
    let pid_file = std::fs::read_to_string(node.data_dir().join("troupe.pid"))?;
    ensure!(
        pid_file.trim() == node.pid()?.to_string(),
        "troupe.pid holds {pid_file:?}"
    );
    node.kill9().await?;

    node.restart().await?;
    gate.open()?;
    ensure!(node.token == token, "admin.token changed across restart");
    for (n, id) in ids.iter().enumerate() {
        let done = node.wait_task_state(id, "SUCCEEDED").await?;
        ensure!(done["result"] == json!({ "n": n }), "task {n} after restart: {done}");
        ensure!(int(&done, "/attempts")? <= int(&done, "/maxAttempts")?, "{done}");
    }
    let mut rerun = 0;
    for id in &running {
        let task = node.task(id).await?;
        if int(&task, "/attempts")? >= 2 {
            rerun += 1;
        }
    }
    ensure!(
        rerun >= 1,
        "none of the tasks running at the kill ({running:?}) was started again"
    );
    node.wait_agent_state(&agent, "RUNNING").await?;
    node.gql_ok_as(&token, "{ node { name } }", json!({})).await?;

    // Events read before the kill are still there unchanged, and everything logged since has
    // a higher seq: the sequence did not restart.
    let after = node.events(&[]).await?;
    let seqs: Vec<i64> = after.iter().filter_map(|e| e["seq"].as_i64()).collect();
    ensure!(seqs.len() == after.len(), "event without seq: {after:?}");
    ensure!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq not strictly increasing: {seqs:?}"
    );
    let old_max = before
        .iter()
        .filter_map(|e| e["seq"].as_i64())
        .max()
        .context("no events before kill")?;
    for old in &before {
        if let Some(now) = after.iter().find(|e| e["seq"] == old["seq"]) {
            ensure!(now == old, "event rewritten across restart: {old} became {now}");
        } else {
            ensure!(old["kind"] != "TASK_QUEUED", "lost {old}");
        }
    }
    let rerun_starts: Vec<&Value> = after
        .iter()
        .filter(|e| e["kind"] == "TASK_STARTED" && e["data"]["attempt"].as_i64().is_some_and(|a| a >= 2))
        .collect();
    ensure!(
        !rerun_starts.is_empty(),
        "no TASK_STARTED with attempt >= 2 after restart: {after:?}"
    );
    for event in rerun_starts {
        ensure!(
            int(event, "/seq")? > old_max,
            "post-restart event {event} has seq <= {old_max}"
        );
    }
    Ok(())
}

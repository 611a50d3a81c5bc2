//! Store faults, injected through the fault-injection files of a real node: a batch the
//! store refuses fails alone while the node keeps serving; a commit that fails stops the
//! node with a clear error, and its restart recovers from what is on disk.

use anyhow::{ensure, Result};
use serde_json::json;

use super::support::{expect_code, text, Node, NodeOpts, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_fails_its_own_request_and_the_node_keeps_serving() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let echo = node.spawn_builtin("echo", &["echo"]).await?;
    node.inject_fault("reject-tasks")?;
    let submit = "mutation { submitTask(input: { capability: \"echo\", payload: 1 }) { id } }";
    let spawn = "mutation { spawnAgent(input: { name: \"more\", backend: { builtin: { kind: \"echo\" } } }) { id } }";
    // Both at once: the refused submit must not take the spawn down with it.
    let (refused, spawned) = tokio::join!(node.gql(submit, json!({})), node.gql_ok(spawn, json!({})));
    expect_code(&refused?, "INVALID_INPUT")?;
    let spawned = text(&spawned?, "/spawnAgent/id")?;
    node.wait_agent_state(&spawned, "RUNNING").await?;
    let (status, body) = node.get("/healthz").await?;
    ensure!(status == 200, "a refused batch made the node unready: {status} {body}");

    node.clear_fault("reject-tasks")?;
    let id = node.submit_to(&echo, json!("after")).await?;
    node.wait_task_state(&id, "SUCCEEDED").await?;
    let all = node.gql_ok("{ tasks { totalCount } }", json!({})).await?;
    ensure!(
        all["tasks"]["totalCount"] == 1,
        "the refused task was stored anyway: {all}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_stops_the_node_non_zero_and_a_restart_recovers_from_disk() -> Result<()> {
    let mut node = Node::start(NodeOpts::named("solo")).await?;
    let echo = node.spawn_builtin("echo", &["echo"]).await?;
    let kept = node.submit_to(&echo, json!("kept")).await?;
    node.wait_task_state(&kept, "SUCCEEDED").await?;

    node.inject_fault("commit-fail")?;
    // The write that meets the broken store: its answer may never come, the node stops.
    let _ = node
        .gql(
            "mutation { submitTask(input: { capability: \"echo\", payload: 2 }) { id } }",
            json!({}),
        )
        .await;
    let status = node.wait_exit(WAIT).await?;
    ensure!(!status.success(), "a node whose store failed exited with {status}");
    let log = std::fs::read_to_string(node.data_dir().join("stderr.log"))?;
    let last = log.lines().last().unwrap_or_default();
    ensure!(
        last.contains("troupe: error: the store failed") && last.contains("injected fault"),
        "the last line is not a clear error: {last}"
    );

    node.clear_fault("commit-fail")?;
    node.restart().await?;
    let task = node.task(&kept).await?;
    ensure!(task["state"] == "SUCCEEDED" && task["result"] == "kept", "{task}");
    node.wait_agent_state(&echo, "RUNNING").await?;
    let id = node.submit_to(&echo, json!("again")).await?;
    node.wait_task_state(&id, "SUCCEEDED").await?;
    Ok(())
}

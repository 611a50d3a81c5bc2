//! Supervision: a panicking agent is restarted alone and its task retried; too many
//! restarts in the window escalate, and the node recovers and keeps serving.

use anyhow::{ensure, Result};
use serde_json::json;

use super::support::{int, text, Deadline, Node, NodeOpts, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_agent_is_restarted_alone_and_task_retried_until_attempts_run_out() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo").arg("--retry-base-ms", 100)).await?;
    let echo = node.spawn_builtin("echo", &["echo"]).await?;
    let panic = node.spawn_builtin("panic", &["boom"]).await?;
    node.wait_agent_state(&echo, "RUNNING").await?;

    let task = node
        .submit(json!({ "agentId": panic, "payload": {}, "maxAttempts": 2 }))
        .await?;
    let id = text(&task, "/id")?;
    let done = node.wait_task_state(&id, "FAILED").await?;
    ensure!(done["attempts"] == 2, "attempts of a task that panicked twice: {done}");
    ensure!(done["error"].is_string(), "no error on the failed task: {done}");

    let failed = node.wait_event("AGENT_FAILED", &panic).await?;
    ensure!(
        failed["data"]["reason"].is_string(),
        "AGENT_FAILED without a reason: {failed}"
    );
    let restarted = node.wait_event("AGENT_RESTARTED", &panic).await?;
    ensure!(
        int(&restarted, "/seq")? > int(&failed, "/seq")?,
        "restarted before it failed"
    );
    let retrying = node.events_for("TASK_RETRYING", &id).await?;
    ensure!(
        retrying.len() == 1,
        "maxAttempts 2 means exactly one retry: {retrying:?}"
    );
    ensure!(
        retrying[0]["data"]["error"].is_string(),
        "TASK_RETRYING without error: {retrying:?}"
    );

    let agent = node.wait_agent(&panic, "restarted", |a| a["restarts"] != 0).await?;
    ensure!(int(&agent, "/restarts")? >= 1, "{agent}");

    // The sibling was left alone and still works.
    let sibling = node.agent(&echo).await?;
    ensure!(
        sibling["restarts"] == 0 && sibling["state"] == "RUNNING",
        "echo agent: {sibling}"
    );
    ensure!(
        node.events_for("AGENT_FAILED", &echo).await?.is_empty(),
        "echo agent failed too"
    );
    let ok = node.submit_to(&echo, json!("still here")).await?;
    let ok = node.wait_task_state(&ok, "SUCCEEDED").await?;
    ensure!(ok["result"] == "still here", "{ok}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_restarts_escalate_and_node_keeps_serving() -> Result<()> {
    let opts = NodeOpts::named("solo")
        .arg("--supervisor-max-restarts", 2)
        .arg("--supervisor-window-ms", 60_000)
        .arg("--retry-base-ms", 50)
        .arg("--retry-max-ms", 200);
    let node = Node::start(opts).await?;
    let echo = node.spawn_builtin("echo", &["echo"]).await?;
    let warm = node.submit_to(&echo, json!("before")).await?;
    node.wait_task_state(&warm, "SUCCEEDED").await?;

    let panic = node.spawn_builtin("panic", &["boom"]).await?;
    node.submit(json!({ "agentId": panic, "payload": {}, "maxAttempts": 5 }))
        .await?;
    let escalated = node.wait_event("SUPERVISOR_ESCALATED", "agents").await?;
    let at = int(&escalated, "/seq")?;
    // Exactly the budget of restarts is spent before the supervisor gives up.
    let restarts = node.events_for("AGENT_RESTARTED", &panic).await?;
    let spent = restarts
        .iter()
        .filter(|r| r["seq"].as_i64().is_some_and(|s| s < at))
        .count();
    ensure!(
        spent == 2,
        "{spent} restarts before escalation, want 2: {restarts:?} / {escalated}"
    );
    let deadline = Deadline::after(WAIT, "a third AGENT_FAILED of the panic agent");
    loop {
        let failures = node.events_for("AGENT_FAILED", &panic).await?;
        if failures.len() >= 3 {
            break;
        }
        deadline.tick(json!(failures)).await?;
    }

    let (status, _) = node.get("/healthz").await?;
    ensure!(status == 200, "healthz after escalation: {status}");
    let me = node.gql_ok("{ node { name } }", json!({})).await?;
    ensure!(me["node"]["name"] == "solo", "{me}");

    node.wait_agent_state(&echo, "RUNNING").await?;
    let after = node.submit(json!({ "capability": "echo", "payload": "after" })).await?;
    let done = node.wait_task_state(&text(&after, "/id")?, "SUCCEEDED").await?;
    ensure!(done["result"] == "after" && done["agentId"] == echo.as_str(), "{done}");
    Ok(())
}

//! Supervision: a panicking agent is restarted alone and its task retried; a crash-looping
//! agent is given up on alone while others keep working; a scheduler crash restarts the
//! scheduler and the agents after it and recovers; the live tree is visible.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::support::{int, text, Deadline, Gate, Node, NodeOpts, WAIT};

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
    let done = node.wait_task_state(&id, "DEAD").await?;
    ensure!(
        done["attempts"] == 2 && done["failedAttempts"] == 2,
        "a task that panicked twice: {done}"
    );
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

    // The agent's count of restarts is the number of restarts its supervisor recorded.
    let deadline = Deadline::after(WAIT, "the agent's restarts to match its AGENT_RESTARTED events");
    loop {
        let agent = node.agent(&panic).await?;
        let recorded = node.events_for("AGENT_RESTARTED", &panic).await?.len() as i64;
        if int(&agent, "/restarts")? == recorded && recorded >= 2 {
            break;
        }
        deadline.tick(format!("{agent} after {recorded} restarts")).await?;
    }

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
async fn a_crash_looping_agent_is_failed_alone_while_twenty_tasks_on_other_agents_succeed_first_time() -> Result<()> {
    let opts = NodeOpts::named("solo")
        .arg("--agent-max-restarts", 3)
        .arg("--agent-restart-window-ms", 60_000)
        .arg("--supervisor-max-restarts", 1)
        .arg("--retry-base-ms", 1);
    let node = Node::start(opts).await?;
    let gate = Gate::new()?;
    let mut workers = Vec::new();
    for _ in 0..4 {
        workers.push(node.spawn_gated(&gate, &["work"], 5).await?);
    }
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(text(
            &node.submit(json!({ "capability": "work", "payload": n })).await?,
            "/id",
        )?);
    }
    for id in &ids {
        node.wait_task_state(id, "RUNNING").await?;
    }
    // It crashes on every task, and its tasks keep coming back to it.
    let panic = node.spawn_builtin("panic", &["boom"]).await?;
    node.submit(json!({ "agentId": panic, "payload": {}, "maxAttempts": 100 }))
        .await?;
    let failed = node.wait_agent_state(&panic, "FAILED").await?;
    ensure!(
        text(&failed, "/lastError")?.contains("gave up after 3 restarts"),
        "why the agent was given up on: {failed}"
    );
    let last = node.events_for("AGENT_FAILED", &panic).await?;
    let last = last.last().context("AGENT_FAILED")?;
    ensure!(last["data"]["restarting"] == false, "{last}");

    gate.open()?;
    for id in &ids {
        let done = node.wait_task_state(id, "SUCCEEDED").await?;
        ensure!(done["attempts"] == 1, "a task on a healthy agent was disturbed: {done}");
    }
    for w in &workers {
        let agent = node.agent(w).await?;
        ensure!(agent["restarts"] == 0 && agent["state"] == "RUNNING", "{agent}");
    }
    ensure!(
        node.events(&["SUPERVISOR_ESCALATED"]).await?.is_empty(),
        "a crash-looping agent made a supervisor escalate"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_crash_restarts_it_and_the_agents_after_it_and_every_task_still_ends() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo").arg("--retry-base-ms", 10)).await?;
    let echo = node.spawn_builtin("echo", &["echo"]).await?;
    // The scheduler's record of a finished task also updates the agent's counters: refusing
    // that table makes its write fail, and a scheduler whose write failed stops.
    node.inject_fault("reject-agent_stats")?;
    let task = node
        .submit(json!({ "capability": "echo", "payload": "survives", "maxAttempts": 10 }))
        .await?;
    let id = text(&task, "/id")?;
    let crashed = node.wait_event("SERVICE_FAILED", "scheduler").await?;
    node.clear_fault("reject-agent_stats")?;
    ensure!(
        crashed["data"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not written")),
        "{crashed}"
    );
    // rest_for_one: the agents supervisor (started after the scheduler) restarts with it.
    node.wait_event("SUPERVISOR_RESTARTED", "agents").await?;
    let done = node.wait_task_state(&id, "SUCCEEDED").await?;
    ensure!(done["result"] == "survives", "{done}");
    ensure!(
        int(&done, "/attempts")? >= 2,
        "the lost attempt was not run again: {done}"
    );
    node.wait_agent_state(&echo, "RUNNING").await?;
    let after = node.submit_to(&echo, json!("after")).await?;
    node.wait_task_state(&after, "SUCCEEDED").await?;
    Ok(())
}

/// The child of `sup` with this id.
fn child<'a>(sup: &'a Value, id: &str) -> Result<&'a Value> {
    sup["children"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == id))
        .with_context(|| format!("no child {id} in {sup}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervision_tree_shows_each_supervisor_and_child_as_they_are() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let agent = node.spawn_builtin("echo", &[]).await?;
    let q = "{ supervisionTree { name strategy intensity { maxRestarts windowMs } children { id kind state restarts owner \
             supervisor { name strategy children { id kind state restarts owner intensity { maxRestarts } \
             supervisor { name strategy intensity { maxRestarts } children { id kind state restarts owner intensity { maxRestarts windowMs } } } } } } } }";
    let tree = node.gql_ok(q, json!({})).await?["supervisionTree"].clone();
    ensure!(tree["name"] == "node" && tree["strategy"] == "ONE_FOR_ONE", "{tree}");
    ensure!(tree["intensity"]["maxRestarts"] == 5, "{tree}");
    for id in ["courier", "core", "cluster", "gateway", "chores"] {
        let c = child(&tree, id)?;
        ensure!(c["state"] == "RUNNING" && c["owner"] == "node", "{c}");
    }
    // The node's loops are children of the tree: the courier of the node, the agents'
    // watchdog of the chores.
    let chores = &child(&tree, "chores")?["supervisor"];
    for id in ["lease", "moves", "watchdog"] {
        let c = child(chores, id)?;
        ensure!(c["state"] == "RUNNING" && c["owner"] == "chores", "{c}");
    }
    let core = &child(&tree, "core")?["supervisor"];
    ensure!(core["strategy"] == "REST_FOR_ONE", "{core}");
    let ids: Vec<&str> = core["children"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["id"].as_str())
        .collect();
    ensure!(
        ids == ["scheduler", "agents", "swarms"],
        "core's children in start order: {ids:?}"
    );
    let agents = &child(core, "agents")?["supervisor"];
    ensure!(
        agents["strategy"] == "ONE_FOR_ONE" && agents["intensity"].is_null(),
        "{agents}"
    );
    let leaf = child(agents, &agent)?;
    ensure!(
        leaf["kind"] == "AGENT" && leaf["owner"] == "agents" && leaf["state"] == "RUNNING",
        "{leaf}"
    );
    ensure!(
        leaf["intensity"]["maxRestarts"] == 5,
        "an agent's own intensity: {leaf}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_restart_count_and_its_failed_state_survive_a_node_restart() -> Result<()> {
    let opts = NodeOpts::named("solo")
        .arg("--agent-max-restarts", 2)
        .arg("--agent-restart-window-ms", 60_000)
        .arg("--retry-base-ms", 1);
    let mut node = Node::start(opts).await?;
    let counted = node.spawn_builtin("panic", &[]).await?;
    let once = node
        .submit(json!({ "agentId": counted, "payload": {}, "maxAttempts": 1 }))
        .await?;
    node.wait_task_state(&text(&once, "/id")?, "DEAD").await?;
    node.wait_agent(&counted, "restarted once", |a| {
        a["restarts"] == 1 && a["state"] == "RUNNING"
    })
    .await?;
    let doomed = node.spawn_builtin("panic", &[]).await?;
    node.submit(json!({ "agentId": doomed, "payload": {}, "maxAttempts": 10 }))
        .await?;
    node.wait_agent_state(&doomed, "FAILED").await?;

    node.restart().await?;
    // The count goes on from where it was; the given-up agent is not started again.
    let again = node
        .submit(json!({ "agentId": counted, "payload": {}, "maxAttempts": 1 }))
        .await?;
    node.wait_task_state(&text(&again, "/id")?, "DEAD").await?;
    node.wait_agent(&counted, "restarted twice in all", |a| {
        a["restarts"] == 2 && a["state"] == "RUNNING"
    })
    .await?;
    let still = node.agent(&doomed).await?;
    ensure!(
        still["state"] == "FAILED",
        "a FAILED agent came back by itself: {still}"
    );
    let starts = node.events_for("AGENT_STARTED", &doomed).await?;
    ensure!(starts.len() == 1, "the FAILED agent was started again: {starts:?}");
    Ok(())
}

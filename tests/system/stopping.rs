//! Stopping is not failing: a stopped agent's tasks and the tasks running at a shutdown go
//! back to the queue without losing an attempt, and the records and the gauges say what
//! was stopped.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::json;

use super::support::{
    careful_with_a_task, expect_code, first_approval, metric, text, Deadline, FakeLlm, Gate, Node, NodeOpts,
    Subscription, WAIT,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_an_agent_requeues_its_running_task_without_charging_its_last_attempt() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let gate = Gate::new()?;
    let first = node.spawn_gated(&gate, &["work"], 1).await?;
    let task = node
        .submit(json!({ "capability": "work", "payload": "kept", "maxAttempts": 1 }))
        .await?;
    let id = text(&task, "/id")?;
    let running = node.wait_task_state(&id, "RUNNING").await?;
    ensure!(running["agentId"] == first.as_str(), "{running}");

    let stop = "mutation($id: ID!) { stopAgent(id: $id, graceful: false) { id state } }";
    let stopped = node.gql_ok(stop, json!({ "id": first })).await?;
    ensure!(stopped["stopAgent"]["state"] == "STOPPED", "{stopped}");
    let requeued = node.wait_task_state(&id, "QUEUED").await?;
    ensure!(
        requeued["failedAttempts"] == 0 && requeued["attempts"] == 1,
        "a stop was charged as a failure: {requeued}"
    );
    let event = node.wait_event("TASK_REQUEUED", &id).await?;
    ensure!(
        event["data"]["reason"].as_str().is_some_and(|r| r.contains("stopped")),
        "{event}"
    );

    // Its one allowed attempt is still there: it runs to the end on the next agent.
    let second = node.spawn_gated(&gate, &["work"], 1).await?;
    gate.open()?;
    let done = node.wait_task_state(&id, "SUCCEEDED").await?;
    ensure!(
        done["agentId"] == second.as_str() && done["result"] == "kept" && done["attempts"] == 2,
        "{done}"
    );
    ensure!(
        node.events_for("TASK_RETRYING", &id).await?.is_empty() && node.events_for("TASK_DEAD", &id).await?.is_empty(),
        "the task failed once"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_task_finish_within_the_grace_period() -> Result<()> {
    let mut node = Node::start(NodeOpts::named("solo").arg("--shutdown-grace-ms", 20_000)).await?;
    let gate = Gate::new()?;
    let agent = node.spawn_gated(&gate, &[], 1).await?;
    let id = node.submit_to(&agent, json!({ "finish": "me" })).await?;
    node.wait_task_state(&id, "RUNNING").await?;

    node.sigterm()?;
    // Draining: the node says it is not ready, and why.
    let deadline = Deadline::after(WAIT, "/healthz to report the drain");
    loop {
        let (status, body) = node.get("/healthz").await?;
        if status == 503 && body.contains("shutting down") {
            break;
        }
        deadline.tick(format!("{status} {body}")).await?;
    }
    gate.open()?;
    let status = node.wait_exit(Duration::from_secs(30)).await?;
    ensure!(status.code() == Some(0), "SIGTERM exit status: {status}");

    node.restart().await?;
    let done = node.wait_task_state(&id, "SUCCEEDED").await?;
    ensure!(
        done["result"] == json!({ "finish": "me" }) && done["attempts"] == 1,
        "{done}"
    );
    node.wait_agent_state(&agent, "RUNNING").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_member_hands_the_tasks_queued_on_it_to_a_member_whose_agents_serve_them() -> Result<()> {
    use super::replicated::{held_by, room_of, start_cluster};
    // beta's grace is longer than the test waits: its stop takes as long as its running task.
    let mut nodes = start_cluster(
        NodeOpts::named("alpha"),
        vec![
            NodeOpts::named("beta").arg("--shutdown-grace-ms", 600_000),
            NodeOpts::named("gamma"),
        ],
    )
    .await?;
    let gate = Gate::new()?;
    nodes[1].spawn_gated(&gate, &["work"], 1).await?;
    let running = text(
        &nodes[1].submit(json!({ "capability": "work", "payload": 0 })).await?,
        "/id",
    )?;
    nodes[1].wait_task_state(&running, "RUNNING").await?;
    // Queued behind it on beta, the one member with an agent for them.
    let mut queued = Vec::new();
    for i in 1..=3 {
        queued.push(text(
            &nodes[1].submit(json!({ "capability": "work", "payload": i })).await?,
            "/id",
        )?);
    }
    for id in &queued {
        ensure!(held_by(&nodes[1], id).await? == "beta", "{id}");
    }
    // Then gamma serves them too, and beta knows it from gamma's beats.
    nodes[2].spawn_builtin("echo", &["work"]).await?;
    room_of(&nodes[1], "gamma", "work", Some(1)).await?;

    // beta stops (its task still runs): what waited in its queue runs on gamma now, not once
    // beta is back or declared DOWN. They waited for beta's restart before.
    nodes[1].sigterm()?;
    for id in &queued {
        let done = nodes[0].wait_task_state(id, "SUCCEEDED").await?;
        ensure!(done["attempts"] == 1, "{done}");
        ensure!(held_by(&nodes[0], id).await? == "gamma", "{id}");
    }
    let moved = nodes[0].wait_event("TASKS_MOVED", "gamma").await?;
    ensure!(
        moved["data"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("beta is stopping")),
        "{moved}"
    );
    // Told as the member that took them (it read "gamma tasks moved: …", with no subject
    // name).
    let told = nodes[0]
        .gql_ok(
            "query { events(kinds: [\"TASKS_MOVED\"], last: 1) { subjectName subjectKind text } }",
            json!({}),
        )
        .await?;
    let told = &told["events"][0];
    ensure!(
        told["subjectName"] == "gamma"
            && told["subjectKind"] == "MEMBER"
            && told["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("member gamma took ") && t.contains(" from beta: beta is stopping")),
        "{told}"
    );
    ensure!(
        super::support::pid_alive(nodes[1].pid()?),
        "beta stopped before its queue ran elsewhere"
    );
    gate.open()?;
    let status = nodes[1].wait_exit(Duration::from_secs(30)).await?;
    ensure!(status.code() == Some(0), "SIGTERM exit status: {status}");
    let done = nodes[0].wait_task_state(&running, "SUCCEEDED").await?;
    ensure!(done["attempts"] == 1, "{done}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_past_its_grace_requeues_running_tasks_uncharged_and_records_the_stop() -> Result<()> {
    let mut node = Node::start(NodeOpts::named("solo").arg("--shutdown-grace-ms", 300)).await?;
    let gate = Gate::new()?;
    let agent = node.spawn_gated(&gate, &[], 1).await?;
    let id = text(
        &node
            .submit(json!({ "agentId": agent, "payload": "again", "maxAttempts": 1 }))
            .await?,
        "/id",
    )?;
    node.wait_task_state(&id, "RUNNING").await?;
    let before = node.gql_ok("{ node { lastSeq } }", json!({})).await?["node"]["lastSeq"]
        .as_i64()
        .unwrap_or(0);

    let status = node.terminate(Duration::from_secs(30)).await?;
    ensure!(status.code() == Some(0), "SIGTERM exit status: {status}");
    gate.open()?;
    node.restart().await?;

    // The shutdown gave the task back (not a failure) and stopped the agent on the record.
    let since = node.events_after(Some(before), &[]).await?;
    let kinds: Vec<(String, String)> = since
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or("").to_owned(),
                e["subject"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    ensure!(kinds.contains(&("TASK_REQUEUED".into(), id.clone())), "{kinds:?}");
    let stopped = kinds.iter().position(|k| *k == ("AGENT_STOPPED".into(), agent.clone()));
    let started = kinds.iter().position(|k| *k == ("AGENT_STARTED".into(), agent.clone()));
    ensure!(
        stopped.is_some() && started.is_some() && stopped < started,
        "the shutdown's stop is on record before the restart's start: {kinds:?}"
    );
    let done = node.wait_task_state(&id, "SUCCEEDED").await?;
    ensure!(
        done["attempts"] == 2 && done["failedAttempts"] == 0,
        "the interrupted attempt was charged: {done}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_does_not_wait_for_a_task_held_for_approval_which_waits_for_it_again_after_the_restart() -> Result<()>
{
    let server = FakeLlm::start(&["--tool", "troupe_memory_get", "--tool-args", r#"{"key":"k"}"#]).await?;
    // A grace far longer than the test may wait: the stop must not spend it on a person.
    let mut node = Node::start(NodeOpts::named("solo").arg("--shutdown-grace-ms", 600_000)).await?;
    let (_, task) = careful_with_a_task(&node, &server).await?;
    node.wait_task_state(&task, "AWAITING_APPROVAL").await?;

    let status = node.terminate(Duration::from_secs(30)).await?;
    ensure!(status.code() == Some(0), "SIGTERM exit status: {status}");
    ensure!(
        node.logged("held for an operator's approval go back to the queue") == 1
            && node.logged("grace period over") == 0,
        "{}",
        node.log_tail()
    );
    node.restart().await?;
    // The approval was kept: the task waits for it again, and runs once it is given.
    let held = first_approval(&node, "{ approvals { id taskId state } }").await?;
    ensure!(held["taskId"] == task.as_str() && held["state"] == "PENDING", "{held}");
    node.wait_task_state(&task, "AWAITING_APPROVAL").await?;
    let approve = "mutation($id: ID!) { approveCall(id: $id) { state } }";
    node.gql_ok(approve, json!({ "id": held["id"] })).await?;
    let done = node.wait_task_state(&task, "SUCCEEDED").await?;
    ensure!(done["failedAttempts"] == 0, "the stop was charged: {done}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_held_for_approval_is_not_charged_by_kills_and_its_call_is_withdrawn_when_it_is_cancelled() -> Result<()>
{
    let server = FakeLlm::start(&["--tool", "troupe_memory_get", "--tool-args", r#"{"key":"k"}"#]).await?;
    let mut node = Node::start(NodeOpts::named("solo")).await?;
    let (_, task) = careful_with_a_task(&node, &server).await?;
    // Killed twice while the task waits for a person: each start finds the call still
    // pending and waits again; no attempt failed (three kills made it DEAD before).
    for _ in 0..2 {
        node.wait_task_state(&task, "AWAITING_APPROVAL").await?;
        node.kill9().await?;
        node.restart().await?;
    }
    let waiting = node.wait_task_state(&task, "AWAITING_APPROVAL").await?;
    ensure!(waiting["failedAttempts"] == 0, "the kills were charged: {waiting}");
    let held = first_approval(&node, "{ approvals { id taskId state } }").await?;
    ensure!(held["taskId"] == task.as_str(), "{held}");
    // Cancelled, the task waits for nothing: its call is no longer pending, is shown
    // rejected by the task's end (to a follower of the decisions too), and cannot be
    // approved.
    let before = node.gql_ok("{ node { lastSeq } }", json!({})).await?["node"]["lastSeq"].clone();
    let updates = "subscription($after: Int64) { approvalUpdates(after: $after) { id state decidedBy } }";
    let mut live = Subscription::start(&node, updates, json!({ "after": before })).await?;
    node.gql_ok(
        "mutation($id: ID!) { cancelTask(id: $id) { state } }",
        json!({ "id": task }),
    )
    .await?;
    node.wait_task_state(&task, "CANCELLED").await?;
    // Live, and replayed from the same cursor once the task ended.
    let mut replayed = Subscription::start(&node, updates, json!({ "after": before })).await?;
    for sub in [&mut live, &mut replayed] {
        let data = sub.next_with_deadline().await?.context("the stream ended")?;
        let update = &data["approvalUpdates"];
        ensure!(
            update["id"] == held["id"] && update["state"] == "REJECTED" && update["decidedBy"] == "task-ended",
            "{update}"
        );
    }
    let pending = node.gql_ok("{ approvals { id } }", json!({})).await?;
    ensure!(pending["approvals"] == json!([]), "{pending}");
    let all = node
        .gql_ok("{ approvals(pending: false) { id state decidedBy note } }", json!({}))
        .await?;
    let shown = &all["approvals"][0];
    ensure!(
        shown["id"] == held["id"] && shown["state"] == "REJECTED" && shown["decidedBy"] == "task-ended",
        "{all}"
    );
    let approve = "mutation($id: ID!) { approveCall(id: $id) { state } }";
    let refused = node.gql(approve, json!({ "id": held["id"] })).await?;
    expect_code(&refused, "CONFLICT")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_agent_stop_does_not_wait_for_its_task_held_for_approval() -> Result<()> {
    let server = FakeLlm::start(&["--tool", "troupe_memory_get", "--tool-args", r#"{"key":"k"}"#]).await?;
    // A grace far longer than the request may take: the stop must not spend it on a person.
    let node = Node::start(NodeOpts::named("solo").arg("--agent-stop-grace-ms", 600_000)).await?;
    let (agent, task) = careful_with_a_task(&node, &server).await?;
    node.wait_task_state(&task, "AWAITING_APPROVAL").await?;
    let stop = "mutation($id: ID!) { stopAgent(id: $id) { state } }";
    let stopped = node.gql_ok(stop, json!({ "id": agent })).await?;
    ensure!(stopped["stopAgent"]["state"] == "STOPPED", "{stopped}");
    let queued = node.wait_task_state(&task, "QUEUED").await?;
    ensure!(queued["failedAttempts"] == 0, "the stop was charged: {queued}");
    // Started again, the agent's task waits for the same approval, and ends once given.
    let start = "mutation($id: ID!) { startAgent(id: $id) { state } }";
    node.gql_ok(start, json!({ "id": agent })).await?;
    node.wait_task_state(&task, "AWAITING_APPROVAL").await?;
    let held = first_approval(&node, "{ approvals { id taskId state } }").await?;
    ensure!(held["taskId"] == task.as_str(), "{held}");
    let approve = "mutation($id: ID!) { approveCall(id: $id) { state } }";
    node.gql_ok(approve, json!({ "id": held["id"] })).await?;
    node.wait_task_state(&task, "SUCCEEDED").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_gauge_follows_every_state_change_without_a_scrape_counting() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let a = node.spawn_builtin("echo", &[]).await?;
    node.spawn_builtin("echo", &[]).await?;
    let stop = "mutation($id: ID!) { stopAgent(id: $id) { id } }";
    node.gql_ok(stop, json!({ "id": a })).await?;
    let deadline = Deadline::after(WAIT, "troupe_agents to show 1 running and 1 stopped");
    loop {
        let m = node.metrics().await?;
        let running = metric(&m, "troupe_agents", &["state=\"running\""]);
        let stopped = metric(&m, "troupe_agents", &["state=\"stopped\""]);
        if running == 1.0 && stopped == 1.0 {
            break;
        }
        deadline.tick(format!("running {running}, stopped {stopped}")).await?;
    }
    Ok(())
}

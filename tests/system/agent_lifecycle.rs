//! Agents' lifecycle through GraphQL with real processes: every transition (PAUSED really
//! suspends the process group), graceful stops, checkpoints proven by output, malformed
//! protocol lines, concurrent mutations, agentUpdates, and no process outliving its agent.

use std::time::Duration;

use anyhow::{ensure, Result};
use serde_json::json;

use super::support::{
    error_code, group_members, pid_alive, proc_stat, shell_agent, text, wait_group_gone, Gate, Node, NodeOpts,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_agent_goes_through_every_lifecycle_state_and_each_is_true() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let create =
        "mutation($input: SpawnAgentInput!) { createAgent(input: $input) { id state project labels { key value } } }";
    let input = json!({
        "name": "life",
        "backend": { "process": { "command": super::support::python_agent() } },
        "project": "blue",
        "labels": [{ "key": "team", "value": "core" }],
    });
    let created = node.gql_ok(create, json!({ "input": input })).await?["createAgent"].clone();
    ensure!(
        created["state"] == "DEFINED" && created["project"] == "blue",
        "{created}"
    );
    let id = text(&created, "/id")?;

    let started = node.act("startAgent", &id).await?;
    ensure!(started["state"] == "RUNNING", "{started}");
    let (pid, pgid) = node.agent_pid(&id).await?;
    ensure!(pid == pgid, "the agent leads its own process group");

    let paused = node.act("pauseAgent", &id).await?;
    ensure!(paused["state"] == "PAUSED", "{paused}");
    ensure!(
        proc_stat(pid).is_some_and(|(s, _)| s == 'T'),
        "a paused agent's process is in state T"
    );
    let waiting = node
        .submit_to(&id, json!({ "op": "echo", "value": "after pause" }))
        .await?;
    ensure!(
        node.task(&waiting).await?["state"] == "QUEUED",
        "a paused agent took a task"
    );
    let conflict = node
        .gql("mutation($id: ID!) { pauseAgent(id: $id) { id } }", json!({ "id": id }))
        .await?;
    ensure!(error_code(&conflict).as_deref() == Some("CONFLICT"), "{conflict}");

    let resumed = node.act("resumeAgent", &id).await?;
    ensure!(resumed["state"] == "RUNNING", "{resumed}");
    ensure!(node.wait_task_state(&waiting, "SUCCEEDED").await?["result"] == "after pause");
    ensure!(
        proc_stat(pid).is_some_and(|(s, _)| s != 'T'),
        "a resumed agent's process still stopped"
    );

    let restarted = node.act("restartAgent", &id).await?;
    ensure!(restarted["state"] == "RUNNING", "{restarted}");
    let (pid2, _) = node.agent_pid(&id).await?;
    ensure!(
        pid2 != pid && !pid_alive(pid as i32),
        "restart left the old process or kept it"
    );

    let update = "mutation($id: ID!) { updateAgent(id: $id, input: { labels: [{ key: \"team\", value: \"edge\" }] }) { labels { key value } } }";
    let updated = node.gql_ok(update, json!({ "id": id })).await?;
    ensure!(updated["updateAgent"]["labels"][0]["value"] == "edge", "{updated}");
    let filtered = "query($p: String, $l: [LabelInput!]) { agents(project: $p, labels: $l) { edges { node { id } } } }";
    let hit = node
        .gql_ok(
            filtered,
            json!({ "p": "blue", "l": [{ "key": "team", "value": "edge" }] }),
        )
        .await?;
    ensure!(hit["agents"]["edges"].as_array().map(Vec::len) == Some(1), "{hit}");
    let miss = node.gql_ok(filtered, json!({ "p": "red", "l": null })).await?;
    ensure!(miss["agents"]["edges"].as_array().is_some_and(Vec::is_empty), "{miss}");
    // By state (read from the status) and by capability, listed and counted alike.
    node.act("pauseAgent", &id).await?;
    let by = "query($s: AgentState, $c: String) { agents(state: $s, capability: $c) { totalCount nodes { id } } }";
    for (state, capability, want) in [
        (Some("PAUSED"), None, 1),
        (Some("RUNNING"), None, 0),
        (None, Some("nothing-has-this"), 0),
        (Some("PAUSED"), Some("nothing-has-this"), 0),
    ] {
        let got = node.gql_ok(by, json!({ "s": state, "c": capability })).await?;
        ensure!(
            got["agents"]["totalCount"] == want && got["agents"]["nodes"].as_array().map(Vec::len) == Some(want),
            "state {state:?}, capability {capability:?}: {got}"
        );
    }
    node.act("resumeAgent", &id).await?;

    // A task for this agent alone waits while it is paused and stopped, and fails once the
    // agent is removed. (The graceful stop continues the paused process but gives it nothing.)
    node.act("pauseAgent", &id).await?;
    let orphan = node.submit_to(&id, json!({ "op": "echo" })).await?;
    let stopped = node.act("stopAgent", &id).await?;
    ensure!(stopped["state"] == "STOPPED", "{stopped}");
    wait_group_gone(pid2).await?;
    ensure!(node.task(&orphan).await?["state"] == "QUEUED");
    let removed = node.act("removeAgent", &id).await?;
    ensure!(removed["id"] == id.as_str(), "{removed}");
    let failed = node.wait_task_state(&orphan, "FAILED").await?;
    ensure!(
        failed["error"].as_str().is_some_and(|e| e.contains("removed")),
        "{failed}"
    );
    ensure!(node.agent(&id).await?.is_null(), "a removed agent is still listed");
    for kind in [
        "AGENT_DEFINED",
        "AGENT_PAUSED",
        "AGENT_RESUMED",
        "AGENT_UPDATED",
        "AGENT_STOPPED",
        "AGENT_REMOVED",
    ] {
        ensure!(!node.events_for(kind, &id).await?.is_empty(), "no {kind} event");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_lets_the_running_task_finish_on_its_first_attempt() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo").arg("--agent-stop-grace-ms", 60_000)).await?;
    let gate = Gate::new()?;
    let agent = node.spawn_gated(&gate, &[], 1).await?;
    let task = node.submit_to(&agent, json!("finish me")).await?;
    node.wait_task_state(&task, "RUNNING").await?;
    // The stop answers once the task is done; the gate opens once the agent is STOPPING.
    let open_when_stopping = async {
        node.wait_agent_state(&agent, "STOPPING").await?;
        gate.open()
    };
    let (stopped, opened) = tokio::join!(node.act("stopAgent", &agent), open_when_stopping);
    opened?;
    let stopped = stopped?;
    ensure!(stopped["state"] == "STOPPED", "{stopped}");
    let done = node.wait_task_state(&task, "SUCCEEDED").await?;
    ensure!(done["attempts"] == 1 && done["agentId"] == agent.as_str(), "{done}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_is_proven_by_the_agents_own_later_output() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let counter = node.spawn_builtin("counter", &[]).await?;
    let process = node.spawn_process("stateful", json!({}), json!({})).await?;
    let checkpoint =
        "mutation($id: ID!) { checkpointAgent(id: $id, description: \"five\") { id agentId sizeBytes description } }";
    let rollback = "mutation($id: ID!, $c: ID!) { rollbackAgent(id: $id, checkpointId: $c) { id state } }";
    for (agent, add, read) in [
        (&counter, json!({ "add": 5 }), json!({})),
        (&process, json!({ "op": "add", "n": 5 }), json!({ "op": "get" })),
    ] {
        node.run_on(agent, add.clone()).await?;
        let saved = node.gql_ok(checkpoint, json!({ "id": agent })).await?["checkpointAgent"].clone();
        ensure!(
            saved["agentId"] == agent.as_str() && saved["sizeBytes"].as_i64() > Some(0),
            "{saved}"
        );
        node.run_on(agent, add.clone()).await?;
        ensure!(node.run_on(agent, read.clone()).await?["count"] == 10);
        node.gql_ok(rollback, json!({ "id": agent, "c": saved["id"] })).await?;
        ensure!(
            node.run_on(agent, read).await?["count"] == 5,
            "the rollback did not restore 5"
        );
        let listed = node
            .gql_ok(
                "query($id: ID!) { agent(id: $id) { checkpoints { id description } } }",
                json!({ "id": agent }),
            )
            .await?;
        ensure!(listed["agent"]["checkpoints"][0]["description"] == "five", "{listed}");
    }
    let echo = node.spawn_builtin("echo", &[]).await?;
    let refused = node.gql(checkpoint, json!({ "id": echo })).await?;
    ensure!(error_code(&refused).as_deref() == Some("INVALID_INPUT"), "{refused}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protocol_lines_are_counted_and_answered_not_fatal() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let agent = node.spawn_process("noisy", json!({}), json!({})).await?;
    let out = node.run_on(&agent, json!({ "op": "garbage" })).await?;
    ensure!(out["garbage"] == true, "{out}");
    let a = node.agent(&agent).await?;
    ensure!(a["state"] == "RUNNING" && a["restarts"] == 0, "{a}");
    let m = node.metrics().await?;
    let errors = super::support::metric(
        &m,
        "troupe_agent_protocol_errors_total",
        &[&format!("agent=\"{agent}\"")],
    );
    ensure!(errors >= 2.0, "protocol errors counted: {errors}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_process_outlives_its_agent_after_remove_or_shutdown() -> Result<()> {
    let mut node = Node::start(NodeOpts::named("solo")).await?;
    let backend = json!({ "command": shell_agent(), "heartbeatMs": 1000 });
    let shell =
        "mutation($b: ProcessBackendInput!) { spawnAgent(input: { name: \"sh\", backend: { process: $b } }) { id } }";
    let a = text(&node.gql_ok(shell, json!({ "b": backend })).await?, "/spawnAgent/id")?;
    let b = text(&node.gql_ok(shell, json!({ "b": backend })).await?, "/spawnAgent/id")?;
    ensure!(
        node.run_on(&a, json!({ "x": 1 })).await? == json!({ "x": 1 }),
        "the shell agent echoes"
    );
    let q = "query($id: ID!) { agent(id: $id) { processGroups usage { processes rssBytes } } }";
    let seen = node.gql_ok(q, json!({ "id": a })).await?["agent"].clone();
    let usage = &seen["usage"];
    ensure!(
        usage["processes"].as_i64() >= Some(2) && usage["rssBytes"].as_i64() > Some(0),
        "{seen}"
    );
    let pgid_a = super::support::int(&seen, "/processGroups/0")?;
    let pgid_b = super::support::int(&node.gql_ok(q, json!({ "id": b })).await?, "/agent/processGroups/0")?;
    ensure!(
        group_members(pgid_a).len() >= 2,
        "the shell agent and its heartbeat loop"
    );
    node.act("removeAgent", &a).await?;
    wait_group_gone(pgid_a).await?;
    node.terminate(Duration::from_secs(30)).await?;
    wait_group_gone(pgid_b).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_updates_streams_each_change_of_the_agent() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let agent = node.spawn_builtin("echo", &[]).await?;
    let q = "subscription($id: ID!) { agentUpdates(id: $id) { state } }";
    let mut sub = super::support::Subscription::start(&node, q, json!({ "id": agent })).await?;
    // The agent as it is first, so the changes below come after the subscription began.
    let first = sub.next_with_deadline().await?;
    let mut seen = vec![first.map(|v| v["agentUpdates"]["state"].clone())];
    node.act("pauseAgent", &agent).await?;
    node.act("resumeAgent", &agent).await?;
    while seen.len() < 3 {
        let next = sub.next_with_deadline().await?;
        seen.push(next.map(|v| v["agentUpdates"]["state"].clone()));
    }
    ensure!(
        seen == [Some(json!("RUNNING")), Some(json!("PAUSED")), Some(json!("RUNNING"))],
        "{seen:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_takes_its_agents_processes_with_it() -> Result<()> {
    let mut node = Node::start(NodeOpts::named("solo")).await?;
    let agent = node.spawn_process("orphan?", json!({}), json!({})).await?;
    let (pid, _) = node.agent_pid(&agent).await?;
    let gate = Gate::new()?;
    let gated = node.spawn_gated(&gate, &[], 1).await?;
    let task = node.submit_to(&gated, json!("held")).await?;
    node.wait_task_state(&task, "RUNNING").await?;
    // RUNNING is recorded as the attempt is handed over; its process follows.
    let q = "query($id: ID!) { agent(id: $id) { processGroups } }";
    let deadline = super::support::Deadline::after(super::support::WAIT, "the gated task's process");
    let exec_group = loop {
        let seen = node.gql_ok(q, json!({ "id": gated })).await?;
        if let Ok(group) = super::support::int(&seen, "/agent/processGroups/0") {
            break group;
        }
        deadline.tick(&seen).await?;
    };
    node.kill9().await?;
    super::support::wait_pid_gone(pid as i32).await?;
    super::support::wait_pid_gone(exec_group as i32).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_mutations_on_one_agent_take_turns() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let agent = node.spawn_process("busy", json!({}), json!({})).await?;
    let restarts = (0..5).map(|_| node.act("restartAgent", &agent));
    for answer in futures::future::join_all(restarts).await {
        ensure!(answer?["state"] == "RUNNING", "a concurrent restart failed");
    }
    let q = "query($id: ID!) { agent(id: $id) { state processGroups } }";
    let seen = node.gql_ok(q, json!({ "id": agent })).await?["agent"].clone();
    ensure!(seen["state"] == "RUNNING", "{seen}");
    let groups = seen["processGroups"].as_array().cloned().unwrap_or_default();
    ensure!(groups.len() == 1, "one process for the agent: {seen}");
    let (pid, _) = node.agent_pid(&agent).await?;
    ensure!(group_members(pid).len() == 1, "one live process in its group");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_whose_request_timed_out_still_runs_to_its_end() -> Result<()> {
    let opts = NodeOpts::named("solo")
        .arg("--http-timeout-ms", 300)
        .arg("--agent-stop-grace-ms", 1500);
    let node = Node::start(opts).await?;
    let gate = Gate::new()?;
    let agent = node.spawn_gated(&gate, &[], 1).await?;
    let task = node.submit_to(&agent, json!("held")).await?;
    node.wait_task_state(&task, "RUNNING").await?;
    // The grace outlasts the request: the gateway answers 408 and drops the request.
    let body = node
        .gql(
            "mutation($id: ID!) { stopAgent(id: $id) { state } }",
            json!({ "id": agent }),
        )
        .await;
    ensure!(
        body.as_ref().map_or(true, |b| b["data"]["stopAgent"].is_null()),
        "the stop answered within the request timeout: {body:?}"
    );
    // The stop goes on: past its grace the task goes back, uncharged, and the agent stops.
    node.wait_agent_state(&agent, "STOPPED").await?;
    let requeued = node.wait_task_state(&task, "QUEUED").await?;
    ensure!(requeued["failedAttempts"] == 0, "{requeued}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_applies_at_the_next_start() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let agent = node.spawn_builtin("echo", &["old"]).await?;
    let update = "mutation($id: ID!) { updateAgent(id: $id, input: { capabilities: [\"new\"] }) { capabilities } }";
    let updated = node.gql_ok(update, json!({ "id": agent })).await?;
    ensure!(updated["updateAgent"]["capabilities"] == json!(["new"]), "{updated}");
    // The running incarnation still has the old capability: a task for the new one waits.
    let task = text(&node.submit(json!({ "capability": "new", "payload": 1 })).await?, "/id")?;
    ensure!(node.task(&task).await?["state"] == "QUEUED");
    node.act("restartAgent", &agent).await?;
    let done = node.wait_task_state(&task, "SUCCEEDED").await?;
    ensure!(done["agentId"] == agent.as_str(), "{done}");
    let bad = node
        .gql(
            "mutation($id: ID!) { updateAgent(id: $id, input: { env: [{ name: \"A\", value: \"1\" }] }) { id } }",
            json!({ "id": agent }),
        )
        .await?;
    ensure!(
        error_code(&bad).as_deref() == Some("INVALID_INPUT"),
        "a builtin has no env: {bad}"
    );
    Ok(())
}

//! Process agents' health through GraphQL with real processes: heartbeats (UNHEALTHY, hung
//! and restarted), a killed process, inactivity limits, and the recovery ladder.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use serde_json::json;

use super::support::{expect_code, pid_alive, shell_agent, text, Gate, Node, NodeOpts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_process_agent_is_found_unhealthy_then_killed_and_restarted_in_time() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let (interval, missed) = (200u64, 3u64);
    let agent = node
        .spawn_process(
            "hangs",
            json!({ "heartbeatMs": interval, "missedHeartbeats": missed }),
            json!({}),
        )
        .await?;
    let (pid, _) = node.agent_pid(&agent).await?;
    let hang = node
        .submit(json!({ "agentId": agent, "payload": { "op": "hang" }, "maxAttempts": 1 }))
        .await?;
    let hang = text(&hang, "/id")?;
    let began = Instant::now();
    node.wait_event("AGENT_UNHEALTHY", &agent).await?;
    let failed = node.wait_event("AGENT_FAILED", &agent).await?;
    let took = began.elapsed();
    ensure!(
        failed["data"]["reason"].as_str().is_some_and(|r| r.contains("hung")),
        "{failed}"
    );
    // Detection within interval × missed plus slack for the test's own polling.
    ensure!(
        took < Duration::from_millis(interval * missed) + Duration::from_secs(5),
        "took {took:?}"
    );
    let back = node
        .wait_agent(&agent, "restarted", |a| a["restarts"] == 1 && a["state"] == "RUNNING")
        .await?;
    ensure!(!pid_alive(pid as i32), "the hung process is still alive: {back}");
    let lost = node.wait_task_state(&hang, "DEAD").await?;
    ensure!(lost["error"].as_str().is_some_and(|e| e.contains("hung")), "{lost}");
    ensure!(node.run_on(&agent, json!({ "op": "echo", "value": 1 })).await? == 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_is_unhealthy_and_running_again_once_heard() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let agent = node
        .spawn_process(
            "quiet",
            json!({ "heartbeatMs": 200, "missedHeartbeats": 50 }),
            json!({}),
        )
        .await?;
    let out = node.run_on(&agent, json!({ "op": "mute", "ms": 1500 })).await?;
    ensure!(out["muted_ms"] == 1500, "{out}");
    node.wait_event("AGENT_UNHEALTHY", &agent).await?;
    node.wait_event("AGENT_HEALTHY", &agent).await?;
    let a = node.wait_agent_state(&agent, "RUNNING").await?;
    ensure!(a["restarts"] == 0, "{a}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_agent_killed_mid_task_is_restarted_and_its_task_retried() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let gate = Gate::new()?;
    let agent = node
        .spawn_process("victim", json!({}), json!({ "maxConcurrentTasks": 2 }))
        .await?;
    let (pid, _) = node.agent_pid(&agent).await?;
    let task = node
        .submit_to(&agent, json!({ "op": "wait_file", "path": gate.path() }))
        .await?;
    node.wait_task_state(&task, "RUNNING").await?;
    super::support::send_signal(pid as i32, libc::SIGKILL)?;
    node.wait_agent(&agent, "restarted", |a| a["restarts"] == 1 && a["state"] == "RUNNING")
        .await?;
    gate.open()?;
    let done = node.wait_task_state(&task, "SUCCEEDED").await?;
    ensure!(done["attempts"] == 2 && done["failedAttempts"] == 1, "{done}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_restarts_an_agent_is_rolled_back_once_then_failed_with_an_alert() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo").arg("--agent-checkpoints-kept", 2)).await?;
    let restart = json!({ "restartLimit": { "maxRestarts": 1, "windowMs": 600_000 } });
    let agent = node.spawn_process("ladder", json!({}), restart).await?;
    node.run_on(&agent, json!({ "op": "add", "n": 5 })).await?;
    let checkpoint = "mutation($id: ID!, $d: String!) { checkpointAgent(id: $id, description: $d) { id } }";
    for d in ["old", "older", "five"] {
        node.gql_ok(checkpoint, json!({ "id": agent, "d": d })).await?;
    }
    let kept = node
        .gql_ok(
            "query($id: ID!) { agent(id: $id) { checkpoints { description } } }",
            json!({ "id": agent }),
        )
        .await?;
    ensure!(
        kept["agent"]["checkpoints"] == json!([{ "description": "older" }, { "description": "five" }]),
        "only the newest two are kept: {kept}"
    );
    node.run_on(&agent, json!({ "op": "add", "n": 10 })).await?;
    let crash = |n: i64| {
        let agent = agent.clone();
        let node = &node;
        async move {
            let task = node
                .submit(json!({ "agentId": agent, "payload": { "op": "crash" }, "maxAttempts": 1 }))
                .await?;
            node.wait_task_state(&text(&task, "/id")?, "DEAD").await?;
            node.wait_agent(&agent, "back", |a| a["restarts"] == n || a["state"] == "FAILED")
                .await
        }
    };
    // First crash: a plain restart, a fresh process (its count starts again).
    crash(1).await?;
    ensure!(node.run_on(&agent, json!({ "op": "get" })).await?["count"] == 0);
    // Second: past maxRestarts, one restart from the last checkpoint.
    crash(2).await?;
    node.wait_event("AGENT_ROLLED_BACK", &agent).await?;
    ensure!(
        node.run_on(&agent, json!({ "op": "get" })).await?["count"] == 5,
        "not restored"
    );
    // Then a fresh history: one more plain restart, and the next crash is the end.
    crash(3).await?;
    let failed = crash(4).await?;
    ensure!(failed["state"] == "FAILED", "{failed}");
    let alert = node.wait_event("AGENT_ALERT", &agent).await?;
    ensure!(alert["data"]["alert"] == true, "{alert}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_silent_past_its_timeout_is_retried_while_one_that_reports_progress_runs_on() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let gate = Gate::new()?;
    let agent = node
        .spawn_process("slow", json!({}), json!({ "maxConcurrentTasks": 2 }))
        .await?;
    // Progress every 100 ms keeps a 400 ms limit from firing over a 1 s task.
    let busy = node
        .submit(json!({ "agentId": agent, "payload": { "op": "sleep", "ms": 1000 }, "timeoutMs": 400 }))
        .await?;
    // The gate waiter reports progress only each second: past 300 ms it is silent.
    let silent = node
        .submit(
            json!({ "agentId": agent, "payload": { "op": "wait_file", "path": gate.path() },
                         "timeoutMs": 300, "maxAttempts": 2 }),
        )
        .await?;
    let done = node.wait_task_state(&text(&busy, "/id")?, "SUCCEEDED").await?;
    ensure!(done["attempts"] == 1, "{done}");
    let silent = text(&silent, "/id")?;
    let failed = node.wait_task_state(&silent, "DEAD").await?;
    ensure!(
        failed["attempts"] == 2
            && failed["error"]
                .as_str()
                .is_some_and(|e| e.contains("no result or progress")),
        "{failed}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_agent_may_take_longer_than_ten_seconds_to_get_ready_within_its_ready_timeout() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    // Ready after 11 s: past the 10 s an agent's start used to get, within its own 30 s.
    let mut command = vec![
        "/bin/sh".to_string(),
        "-c".into(),
        "sleep 11; exec \"$@\"".into(),
        "slow".into(),
    ];
    command.extend(shell_agent());
    let input = json!({
        "name": "slow-to-start",
        "backend": { "process": { "command": command, "readyTimeoutMs": 30000 } },
    });
    let agent = node.spawn_agent(input).await?;
    ensure!(agent["state"] == "RUNNING", "{agent}");
    let out = node.run_on(&text(&agent, "/id")?, json!({ "n": 1 })).await?;
    ensure!(out == json!({ "n": 1 }), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_agent_that_cannot_start_says_why_and_is_retried_within_its_restart_limit() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let spawn = "mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }";
    // A program that is not there: the caller's to fix, and nothing is made.
    let missing = json!({ "name": "missing", "backend": { "process": { "command": ["/nonexistent/agent"] } } });
    let answer = node.gql(spawn, json!({ "input": missing })).await?;
    expect_code(&answer, "INVALID_INPUT")?;
    ensure!(
        answer.to_string().contains("program not found: /nonexistent/agent"),
        "{answer}"
    );
    let listed = node.gql_ok("{ agents(first: 10) { totalCount } }", json!({})).await?;
    ensure!(listed["agents"]["totalCount"] == 0, "{listed}");
    // A process that exits before it says ready: the reason, then its supervisor's tries.
    let exits = json!({
        "name": "exits",
        "backend": { "process": { "command": ["/bin/sh", "-c", "echo \"can't open file reviewer.py\" >&2; exit 3"] } },
        "restartLimit": { "maxRestarts": 2, "windowMs": 600000 },
    });
    let answer = node.gql(spawn, json!({ "input": exits })).await?;
    expect_code(&answer, "UNAVAILABLE")?;
    ensure!(
        answer.to_string().contains("the process exited before it said ready"),
        "{answer}"
    );
    let listed = node
        .gql_ok("{ agents(first: 10) { nodes { id name } } }", json!({}))
        .await?;
    let id = text(&listed, "/agents/nodes/0/id")?;
    // Its stderr says why, in the answer and in the agent's last error.
    ensure!(
        answer
            .to_string()
            .contains("its stderr ended with: can't open file reviewer.py"),
        "{answer}"
    );
    let failed = node.wait_agent_state(&id, "FAILED").await?;
    ensure!(failed.to_string().contains("exited before it said ready"), "{failed}");
    ensure!(failed.to_string().contains("can't open file reviewer.py"), "{failed}");
    // In words of Troupe's, not of the actor library's.
    for said in [answer.to_string(), failed.to_string()] {
        ensure!(!said.contains("Actor panicked"), "{said}");
    }
    let tries = node.events_for("AGENT_FAILED", &id).await?;
    let retried = tries.iter().filter(|e| e["data"]["restarting"] == true).count();
    ensure!(retried >= 2, "its supervisor did not try again: {tries:?}");
    // The alert is in the supervisor's record of the give-up, written just after the FAILED
    // status: waited for, not raced.
    let alert = node.wait_event("AGENT_ALERT", &id).await;
    ensure!(alert.is_ok(), "no alert when it was given up on: {alert:?}");
    // Its restarts, the give-up's words and the alert agree: each failed start its
    // supervisor tried again was a restart.
    ensure!(failed["restarts"] == retried, "{failed} after {retried} tries again");
    ensure!(
        text(&failed, "/lastError")?.starts_with(&format!("gave up after {retried} restarts")),
        "{failed}"
    );
    // And the answer names the agent as people know it.
    ensure!(answer.to_string().contains("agent exits ("), "{answer}");
    Ok(())
}

//! The exec backend with real `/bin/sh` children: stdin/stdout, env, exit codes,
//! timeouts and cancellation that kill the process group, and commands that cannot start.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::support::{expect_code, pid_alive, text, wait_pid_gone, Deadline, Node, NodeOpts, Subscription, WAIT};

/// Polls until `file` holds `count` pids written by a script.
async fn read_pids(file: &Path, count: usize) -> Result<Vec<i32>> {
    let deadline = Deadline::after(WAIT, format!("{count} pids in {}", file.display()));
    loop {
        let content = std::fs::read_to_string(file).unwrap_or_default();
        let pids: Vec<i32> = content.split_whitespace().filter_map(|p| p.parse().ok()).collect();
        if pids.len() == count {
            return Ok(pids);
        }
        deadline.tick(format!("{content:?}")).await?;
    }
}

/// Submits a task that may run once; the task id.
async fn submit_once(node: &Node, agent: &str, timeout_ms: Option<i64>) -> Result<String> {
    let input = json!({ "agentId": agent, "payload": {}, "maxAttempts": 1, "timeoutMs": timeout_ms });
    text(&node.submit(input).await?, "/id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_stdout_is_the_result_as_json_or_trimmed_text() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let cat = node.spawn_exec(&["/bin/sh", "-c", "cat"], None).await?;
    let payload = json!({ "a": 1, "b": [true, null, "x"], "c": { "d": "e" } });
    let id = node.submit_to(&cat, payload.clone()).await?;
    let done = node.wait_task_state(&id, "SUCCEEDED").await?;
    ensure!(
        done["result"] == payload,
        "stdin payload did not come back as JSON: {done}"
    );
    ensure!(done["attempts"] == 1, "{done}");

    let words = node
        .spawn_exec(&["/bin/sh", "-c", "cat >/dev/null; printf 'plain words\\n'"], None)
        .await?;
    let id = node.submit_to(&words, json!({})).await?;
    let done = node.wait_task_state(&id, "SUCCEEDED").await?;
    ensure!(
        done["result"] == "plain words",
        "non-JSON stdout should be a trimmed string: {done}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_child_sees_task_ids_attempt_and_spec_env() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let script = r#"printf '{"task":"%s","attempt":"%s","agent":"%s","custom":"%s"}' "$TROUPE_TASK_ID" "$TROUPE_ATTEMPT" "$TROUPE_AGENT_ID" "$MY_VAR""#;
    let input = json!({
        "name": "env-printer",
        "backend": { "exec": {
            "command": ["/bin/sh", "-c", script],
            "env": [{ "name": "MY_VAR", "value": "hello env" }],
        } },
    });
    let agent = text(&node.spawn_agent(input).await?, "/id")?;
    let id = node.submit_to(&agent, json!({})).await?;
    let done = node.wait_task_state(&id, "SUCCEEDED").await?;
    let want = json!({ "task": id, "attempt": "1", "agent": agent, "custom": "hello env" });
    ensure!(done["result"] == want, "env seen by the child: {done}, want {want}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_nonzero_exit_fails_task_with_code_and_stderr() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let agent = node
        .spawn_exec(&["/bin/sh", "-c", "echo boom >&2; exit 3"], None)
        .await?;
    let id = submit_once(&node, &agent, None).await?;
    let done = node.wait_task_state(&id, "DEAD").await?;
    let error = text(&done, "/error")?;
    ensure!(error.contains("exit code 3"), "error lacks the exit code: {error}");
    ensure!(error.contains("boom"), "error lacks the stderr tail: {error}");
    ensure!(done["attempts"] == 1 && done["result"].is_null(), "{done}");

    let failed = node.wait_event("TASK_DEAD", &id).await?;
    ensure!(
        failed["data"]["error"].as_str().is_some_and(|e| e.contains("boom")),
        "{failed}"
    );
    ensure!(
        node.events_for("TASK_RETRYING", &id).await?.is_empty(),
        "retried despite maxAttempts 1"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_task_timeout_fails_task_and_kills_the_process_group() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let tmp = tempfile::tempdir()?;
    let pid_file = tmp.path().join("pids");
    // The shell and a background child; both must die, not only the shell.
    let script = format!("sleep 60 & echo \"$$ $!\" > '{}'; sleep 60", pid_file.display());
    let agent = node.spawn_exec(&["/bin/sh", "-c", &script], None).await?;
    let id = submit_once(&node, &agent, Some(500)).await?;

    let pids = read_pids(&pid_file, 2).await?;
    let done = node.wait_task_state(&id, "DEAD").await?;
    ensure!(text(&done, "/error")?.contains("timed out"), "{done}");
    for pid in pids {
        wait_pid_gone(pid).await?;
    }
    let agent_now = node.wait_agent_state(&agent, "RUNNING").await?;
    ensure!(
        agent_now["restarts"] == 0,
        "a task timeout restarted the agent: {agent_now}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_backend_timeout_applies_when_the_task_sets_none() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let agent = node.spawn_exec(&["/bin/sh", "-c", "sleep 60"], Some(500)).await?;
    let id = submit_once(&node, &agent, None).await?;
    let done = node.wait_task_state(&id, "DEAD").await?;
    ensure!(text(&done, "/error")?.contains("timed out"), "{done}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_program_that_is_not_there_is_refused_at_spawn() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let input = json!({ "name": "ghost", "backend": { "exec": { "command": ["/nonexistent/cmd"] } } });
    let refused = node
        .gql(
            "mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }",
            json!({ "input": input }),
        )
        .await?;
    expect_code(&refused, "INVALID_INPUT")?;
    ensure!(refused.to_string().contains("/nonexistent/cmd"), "{refused}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_command_that_cannot_start_fails_task_and_agent_keeps_running() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    // There at spawn, gone by the time its tasks run.
    let dir = tempfile::tempdir()?;
    let program = dir.path().join("tool");
    std::fs::write(&program, "#!/bin/sh\ncat\n")?;
    std::fs::set_permissions(&program, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let agent = node.spawn_exec(&[&program.to_string_lossy()], None).await?;
    std::fs::remove_file(&program)?;
    for _ in 0..2 {
        let id = submit_once(&node, &agent, None).await?;
        let done = node.wait_task_state(&id, "DEAD").await?;
        ensure!(text(&done, "/error")?.contains("cannot start"), "{done}");
    }
    let agent_now = node
        .wait_agent(&agent, "two failures counted", |a| a["tasksFailed"] == 2)
        .await?;
    ensure!(
        agent_now["state"] == "RUNNING",
        "agent after unstartable command: {agent_now}"
    );
    ensure!(agent_now["restarts"] == 0, "agent was restarted: {agent_now}");
    ensure!(
        node.events_for("AGENT_FAILED", &agent).await?.is_empty(),
        "AGENT_FAILED for {agent}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_running_exec_task_kills_its_process() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let tmp = tempfile::tempdir()?;
    let pid_file = tmp.path().join("pid");
    let script = format!("echo $$ > '{}'; sleep 60", pid_file.display());
    let agent = node.spawn_exec(&["/bin/sh", "-c", &script], None).await?;
    let id = node.submit_to(&agent, json!({})).await?;
    node.wait_task_state(&id, "RUNNING").await?;
    let pid = read_pids(&pid_file, 1).await?[0];
    ensure!(pid_alive(pid), "the task's process {pid} is not running");

    let q = "mutation($id: ID!) { cancelTask(id: $id) { id state } }";
    let cancelled = node.gql_ok(q, json!({ "id": id })).await?;
    ensure!(cancelled["cancelTask"]["id"] == id.as_str(), "{cancelled}");
    let done = node.wait_task_state(&id, "CANCELLED").await?;
    ensure!(done["attempts"] == 1, "cancelled task was retried: {done}");
    node.wait_event("TASK_CANCELLED", &id).await?;
    wait_pid_gone(pid).await?;

    expect_code(&node.gql(q, json!({ "id": id })).await?, "CONFLICT")?;
    ensure!(
        node.events_for("TASK_RETRYING", &id).await?.is_empty(),
        "cancelled task retried"
    );
    let still: Value = node.task(&id).await?;
    ensure!(still["state"] == "CANCELLED", "{still}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_queued_task_and_one_waiting_for_its_retry_ends_both_for_good() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo").arg("--retry-base-ms", 600_000)).await?;
    let gate = super::support::Gate::new()?;
    let busy = node.spawn_gated(&gate, &[], 1).await?;
    let blocker = node.submit_to(&busy, json!("blocker")).await?;
    node.wait_task_state(&blocker, "RUNNING").await?;
    let queued = node.submit_to(&busy, json!("never")).await?;

    let fail = node.spawn_builtin("fail", &[]).await?;
    let retrying = text(
        &node
            .submit(json!({ "agentId": fail, "payload": { "message": "once" }, "maxAttempts": 3 }))
            .await?,
        "/id",
    )?;
    node.wait_event("TASK_RETRYING", &retrying).await?;

    let q = "mutation($id: ID!) { cancelTask(id: $id) { id state attempts failedAttempts } }";
    for id in [&queued, &retrying] {
        let done = node.gql_ok(q, json!({ "id": id })).await?;
        ensure!(done["cancelTask"]["state"] == "CANCELLED", "{done}");
    }
    gate.open()?;
    node.wait_task_state(&blocker, "SUCCEEDED").await?;
    // The agent is free and the queue is empty: neither cancelled task ever starts again.
    let after = node.submit_to(&busy, json!("after")).await?;
    node.wait_task_state(&after, "SUCCEEDED").await?;
    let never = node.task(&queued).await?;
    ensure!(never["state"] == "CANCELLED" && never["attempts"] == 0, "{never}");
    let once = node.task(&retrying).await?;
    ensure!(
        once["state"] == "CANCELLED" && once["attempts"] == 1 && once["failedAttempts"] == 1,
        "{once}"
    );
    for id in [&queued, &retrying] {
        ensure!(
            node.events_for("TASK_STARTED", id).await?.len() <= 1,
            "{id} started again"
        );
    }
    Ok(())
}

/// Reads `agentLogLines` into `seen` until a line `want` is among them.
async fn lines_until(sub: &mut Subscription, seen: &mut Vec<Value>, want: &str) -> Result<()> {
    lines_until_n(sub, seen, want, 1).await
}

/// Reads the stream until `want` was seen `n` times.
async fn lines_until_n(sub: &mut Subscription, seen: &mut Vec<Value>, want: &str, n: usize) -> Result<()> {
    while seen.iter().filter(|l| l["line"] == want).count() < n {
        let data = sub.next_with_deadline().await?.context("the stream ended")?;
        seen.push(data["agentLogLines"].clone());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_lines_are_kept_and_followed_live() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let script = "read -r p; echo \"said $p\" >&2; echo '{\"ok\":1}'";
    let agent = node.spawn_exec(&["/bin/sh", "-c", script], None).await?;
    let q = "subscription($id: ID!) { agentLogLines(id: $id, after: 0) { seq stream line taskId } }";
    let mut sub = Subscription::start(&node, q, json!({ "id": agent })).await?;
    let mut seen: Vec<Value> = Vec::new();
    let first = submit_once(&node, &agent, None).await?;
    node.wait_task_state(&first, "SUCCEEDED").await?;
    lines_until(&mut sub, &mut seen, "said {}").await?;
    lines_until(&mut sub, &mut seen, "{\"ok\":1}").await?;
    // Written after the stream caught up: it is woken by the write, not by a poll.
    let input = json!({ "agentId": agent, "payload": "again", "maxAttempts": 1 });
    let second = text(&node.submit(input).await?, "/id")?;
    lines_until(&mut sub, &mut seen, "said \"again\"").await?;
    let stderr = seen.iter().find(|l| l["line"] == "said {}").context("no stderr line")?;
    ensure!(
        stderr["stream"] == "stderr" && stderr["taskId"] == first.as_str(),
        "{stderr}"
    );
    let stdout = seen
        .iter()
        .find(|l| l["line"] == "{\"ok\":1}")
        .context("no stdout line")?;
    ensure!(stdout["stream"] == "stdout", "{stdout}");
    // Kept: any member serves them after the fact, oldest first, from a cursor. The lines
    // are written beside the task's run, not before its result: the second task's last
    // line may land just after it is SUCCEEDED (make test once read three lines of four).
    node.wait_task_state(&second, "SUCCEEDED").await?;
    lines_until_n(&mut sub, &mut seen, "{\"ok\":1}", 2).await?;
    let q = "query($id: ID!, $after: Int64) { agentLogs(id: $id, after: $after) { seq line taskId } }";
    let all = node.gql_ok(q, json!({ "id": agent })).await?["agentLogs"].clone();
    let lines: Vec<&str> = all
        .as_array()
        .context("a list")?
        .iter()
        .filter_map(|l| l["line"].as_str())
        .collect();
    ensure!(
        lines == ["said {}", "{\"ok\":1}", "said \"again\"", "{\"ok\":1}"],
        "{all}"
    );
    let after = node.gql_ok(q, json!({ "id": agent, "after": all[1]["seq"] })).await?["agentLogs"].clone();
    ensure!(
        after.as_array().map(Vec::len) == Some(2) && after[0]["taskId"] == second.as_str(),
        "{after}"
    );
    let missing = node.gql(q, json!({ "id": "nobody" })).await?;
    expect_code(&missing, "NOT_FOUND")?;
    // A process agent's `log` lines are kept too.
    let process = node.spawn_process("logger", json!({}), json!({})).await?;
    let deadline = Deadline::after(WAIT, "the process agent's start line");
    loop {
        let lines = node.gql_ok(q, json!({ "id": process })).await?["agentLogs"].clone();
        if lines
            .as_array()
            .into_iter()
            .flatten()
            .any(|l| l["line"].as_str().is_some_and(|t| t.starts_with("info: process agent")))
        {
            break;
        }
        deadline.tick(&lines).await?;
    }
    Ok(())
}

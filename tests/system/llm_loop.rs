//! LLM agents' loop end to end against a local fake model server (OpenAI's and Anthropic's
//! wire formats): retries and usage, tools with durable steps across a kill, budgets,
//! approvals and the task updates each committed step sends.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::command_line::{at, troupe};
use super::support::{
    careful_with_a_task, error_code, first_approval, int, text, Deadline, FakeLlm, Gate, Node, NodeOpts, Subscription,
    WAIT,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_agent_answers_retries_a_429_and_sums_its_token_usage() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("requests.jsonl");
    let key = dir.path().join("key");
    std::fs::write(&key, "sekrit\n")?;
    let server = FakeLlm::start(&["--fail-first", "1", "--key", "sekrit", "--log", &log.to_string_lossy()]).await?;
    // The node's admin allows keys from this directory.
    let node = Node::start(NodeOpts::named("solo").arg("--secret-dirs", dir.path().display())).await?;
    for stream in [false, true] {
        let input = json!({
            "name": format!("llm-{stream}"),
            "backend": { "llm": {
                "baseUrl": server.url(), "model": "tiny", "systemPrompt": "be brief",
                "apiKeyFile": key.to_string_lossy(), "stream": stream, "maxRetries": 2,
            } },
        });
        let agent = text(&node.spawn_agent(input).await?, "/id")?;
        let out = node.run_on(&agent, json!("hello there")).await?;
        ensure!(
            out["content"].as_str().map(str::trim) == Some("echo: hello there"),
            "{out}"
        );
        // Words: "be brief" + "hello there" in, "echo: hello there" out.
        ensure!(
            out["usage"]["promptTokens"] == 4 && out["usage"]["completionTokens"] == 3,
            "{out}"
        );
        let q = "query($id: ID!) { agent(id: $id) { tokenUsage { promptTokens completionTokens totalTokens } } }";
        let usage = node.gql_ok(q, json!({ "id": agent })).await?["agent"]["tokenUsage"].clone();
        ensure!(usage["totalTokens"] == 7, "{usage}");
        let spec = node
            .gql_ok("query($id: ID!) { agent(id: $id) { backend } }", json!({ "id": agent }))
            .await?;
        ensure!(
            !spec.to_string().contains("sekrit"),
            "the key leaked into the agent: {spec}"
        );
    }
    let requests: Vec<Value> = std::fs::read_to_string(&log)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    // The first answer was a 429: three requests for two tasks.
    ensure!(requests.len() == 3, "{requests:?}");
    ensure!(requests
        .iter()
        .all(|r| r["headers"]["authorization"] == "Bearer sekrit"));
    ensure!(
        requests[0]["body"]["messages"][0]["role"] == "system",
        "{}",
        requests[0]
    );
    Ok(())
}

/// The requests the fake model server logged.
fn logged(log: &std::path::Path) -> Result<Vec<Value>> {
    Ok(std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?)
}

/// The tasks `agent` ran (or runs), as (id, state).
async fn tasks_of(node: &Node, agent: &str) -> Result<Vec<(String, String)>> {
    let q = "query($a: ID) { tasks(agentId: $a, first: 100) { nodes { id state } } }";
    let nodes = node.gql_ok(q, json!({ "a": agent })).await?["tasks"]["nodes"].clone();
    Ok(nodes
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["id"].as_str().unwrap_or("").to_owned(),
                t["state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_agent_that_delegates_through_a_tool_resumes_after_a_kill_without_repeating_a_committed_step(
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("requests.jsonl");
    let args = r#"{"capability":"slow","payload":"the slow part"}"#;
    let server = FakeLlm::start(&[
        "--tool",
        "troupe_submit_task",
        "--tool-args",
        args,
        "--log",
        &log.to_string_lossy(),
    ])
    .await?;
    let mut node = Node::start(NodeOpts::named("solo")).await?;
    let gate = Gate::new()?;
    let worker = node.spawn_gated(&gate, &["slow"], 1).await?;
    let input = json!({
        "name": "strategist",
        "backend": { "llm": { "baseUrl": server.url(), "model": "tiny", "tools": ["troupe_submit_*"] } },
    });
    let strategist = text(&node.spawn_agent(input).await?, "/id")?;
    let task = node.submit_to(&strategist, json!("plan it")).await?;
    // The model asked for the slow part; the task it delegated waits at the gate.
    let deadline = Deadline::after(WAIT, "the delegated task to run");
    let delegated = loop {
        let seen = tasks_of(&node, &worker).await?;
        if let Some((id, _)) = seen.iter().find(|(_, state)| state == "RUNNING") {
            break id.clone();
        }
        deadline.tick(format!("{seen:?}")).await?;
    };
    ensure!(logged(&log)?.len() == 1);
    node.kill9().await?;
    node.restart().await?;
    gate.open()?;
    let done = node.wait_task_state(&task, "SUCCEEDED").await?;
    let out = &done["result"];
    ensure!(
        out["content"].as_str().is_some_and(|c| c.contains("the slow part")),
        "{done}"
    );
    ensure!(out["steps"] == 2 && out["toolCalls"] == 1, "{out}");
    // The model was asked once per step: the reply committed before the kill was read back,
    // not asked for again.
    let requests = logged(&log)?;
    ensure!(requests.len() == 2, "{requests:?}");
    let messages = requests[1]["body"]["messages"].as_array().cloned().unwrap_or_default();
    ensure!(
        messages
            .iter()
            .any(|m| m["role"] == "tool" && m["tool_call_id"] == "call_1"),
        "{messages:?}"
    );
    // The call made again after the restart carried the same key: one delegated task.
    let ran = tasks_of(&node, &worker).await?;
    ensure!(ran.len() == 1 && ran[0].0 == delegated, "{ran:?}");
    // Each committed step is an event about the task.
    let steps = node.events_for("TASK_STEP", &task).await?;
    ensure!(steps.len() == 3, "{steps:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_budget_fails_an_llm_task_once_with_its_figures_and_the_transcript_and_spend_say_what_was_spent(
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("requests.jsonl");
    let args = r#"{"key":"plan"}"#;
    let server = FakeLlm::start(&[
        "--tool",
        "troupe_memory_get",
        "--tool-args",
        args,
        "--log",
        &log.to_string_lossy(),
    ])
    .await?;
    // A dollar an input token, output free.
    let node = Node::start(NodeOpts::named("solo").arg("--llm-prices", "tiny=1000000/0")).await?;
    let input = json!({
        "name": "spender",
        "backend": { "llm": { "baseUrl": server.url(), "model": "tiny", "tools": ["troupe_*"] } },
    });
    let agent = text(&node.spawn_agent(input).await?, "/id")?;
    // The tool call takes 2 tokens: a task allowed 1 stops before its second model call.
    let capped = text(
        &node
            .submit(json!({ "agentId": agent, "payload": "go", "maxTokens": 1, "maxAttempts": 3 }))
            .await?,
        "/id",
    )?;
    let failed = node.wait_task_state(&capped, "FAILED").await?;
    ensure!(
        failed["attempts"] == 1 && text(&failed, "/error")?.starts_with("BUDGET_EXCEEDED: the task's maxTokens is 1"),
        "{failed}"
    );
    let stop = node.events_for("BUDGET_EXCEEDED", &capped).await?;
    ensure!(stop.len() == 1 && stop[0]["data"]["spent"] == 2.0, "{stop:?}");
    ensure!(logged(&log)?.len() == 1);
    let free = node.submit_to(&agent, json!("go")).await?;
    node.wait_task_state(&free, "SUCCEEDED").await?;
    let q = "query($id: ID!) { task(id: $id) { transcript { step kind text toolCalls { id name arguments } \
             callId content isError inputTokens outputTokens costUsd model } } }";
    let mut tokens = 0;
    let mut cost = 0.0;
    for (task, kinds) in [
        (&capped, vec!["REPLY", "TOOL_RESULT"]),
        (&free, vec!["REPLY", "TOOL_RESULT", "REPLY"]),
    ] {
        let steps = node.gql_ok(q, json!({ "id": task })).await?["task"]["transcript"].clone();
        let seen: Vec<_> = steps
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s["kind"].clone())
            .collect();
        ensure!(seen == kinds, "{steps}");
        ensure!(steps[0]["toolCalls"][0]["name"] == "troupe_memory_get", "{steps}");
        // Not a swarm member: the tool's error went to the model as an error result.
        ensure!(steps[1]["isError"] == true && steps[1]["callId"] == "call_1", "{steps}");
        for s in steps.as_array().into_iter().flatten() {
            tokens += int(s, "/inputTokens")? + int(s, "/outputTokens")?;
            cost += s["costUsd"].as_f64().unwrap_or(0.0);
        }
    }
    let spend = node
        .gql_ok(
            "query($id: ID!) { agent(id: $id) { llmSpend { tokens costUsd tokensToday costUsdToday } } }",
            json!({ "id": agent }),
        )
        .await?["agent"]["llmSpend"]
        .clone();
    ensure!(
        int(&spend, "/tokens")? == tokens && int(&spend, "/tokensToday")? == tokens,
        "{spend} against {tokens}"
    );
    ensure!(
        spend["costUsd"].as_f64() == Some(cost) && cost > 0.0,
        "{spend} against {cost}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_held_for_approval_waits_for_an_operator_whose_refusal_reaches_the_model() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("requests.jsonl");
    let server = FakeLlm::start(&[
        "--tool",
        "troupe_memory_get",
        "--tool-args",
        r#"{"key":"launch"}"#,
        "--log",
        &log.to_string_lossy(),
    ])
    .await?;
    let node = Node::start(NodeOpts::named("solo")).await?;
    let viewer = node.create_token("viewer").await?;
    // From a cursor taken before anything is held: the stream cannot miss the request.
    let now = node.gql_ok("{ node { lastSeq } }", json!({})).await?["node"]["lastSeq"].clone();
    let updates = "subscription($after: Int64) { approvalUpdates(after: $after) { id taskId state note } }";
    let mut sub = Subscription::start(&node, updates, json!({ "after": now })).await?;
    let (_, task) = careful_with_a_task(&node, &server).await?;
    let q = "{ approvals { id taskId agentId step callId tool arguments reason state } }";
    let held = first_approval(&node, q).await?;
    ensure!(
        held["taskId"] == task.as_str() && held["tool"] == "troupe_memory_get" && held["state"] == "PENDING",
        "{held}"
    );
    // The task is AWAITING_APPROVAL and says what it waits for (one record: the state and
    // the note change together).
    let progress = "query($id: ID!) { task(id: $id) { state progress { note } } }";
    let deadline = Deadline::after(WAIT, "the task to await its approval");
    loop {
        let shown = node.gql_ok(progress, json!({ "id": task })).await?;
        let note = shown["task"]["progress"]["note"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if shown["task"]["state"] == "AWAITING_APPROVAL" {
            ensure!(note.starts_with("AWAITING_APPROVAL: troupe_memory_get"), "{shown}");
            break;
        }
        ensure!(shown["task"]["state"] == "RUNNING", "{shown}");
        deadline.tick(&shown).await?;
    }
    // A viewer sees it but may not decide.
    let refused = node
        .gql_as(
            &viewer,
            "mutation($id: ID!) { rejectCall(id: $id) { state } }",
            json!({ "id": held["id"] }),
        )
        .await?;
    ensure!(error_code(&refused).as_deref() == Some("FORBIDDEN"), "{refused}");
    let rejected = node
        .gql_ok(
            "mutation($id: ID!) { rejectCall(id: $id, reason: \"not today\") { state note decidedAt } }",
            json!({ "id": held["id"] }),
        )
        .await?;
    ensure!(rejected["rejectCall"]["state"] == "REJECTED", "{rejected}");
    // The refusal is the call's result; the model answers from it.
    let done = node.wait_task_state(&task, "SUCCEEDED").await?;
    let resumed = node.events_for("TASK_RESUMED", &task).await?;
    ensure!(resumed.len() == 1, "RUNNING again once decided: {resumed:?}");
    ensure!(
        done["result"]["content"] == "echo: rejected by an operator: not today",
        "{done}"
    );
    ensure!(node.gql_ok(q, json!({})).await?["approvals"] == json!([]));
    ensure!(node.events_for("APPROVAL_DECIDED", &task).await?.len() == 1);
    // The command line lists the pending ones, and with --all the decided one too.
    let (code, out, err) = troupe(&["approvals", "list", "-o", "name"], &at(&node)).await?;
    ensure!(code == 0 && out.trim().is_empty(), "exit {code}: {out}{err}");
    let (code, out, err) = troupe(&["approvals", "list", "--all", "-o", "jsonl"], &at(&node)).await?;
    ensure!(
        code == 0
            && out.lines().count() == 1
            && out.contains("REJECTED")
            && out.contains(held["id"].as_str().unwrap_or("?")),
        "exit {code}: {out}{err}"
    );
    // The subscription saw it asked, then decided.
    let mut states = Vec::new();
    while states.len() < 2 {
        let data = sub.next_with_deadline().await?.context("the stream ended")?;
        let update = &data["approvalUpdates"];
        ensure!(
            update["id"] == held["id"] && update["taskId"] == task.as_str(),
            "{update}"
        );
        states.push(update["state"].as_str().unwrap_or_default().to_owned());
    }
    ensure!(states == ["PENDING", "REJECTED"], "{states:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anthropic_llm_agent_calls_a_tool_with_the_messages_api() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("requests.jsonl");
    let key = dir.path().join("key");
    std::fs::write(&key, "sekrit\n")?;
    let args = r#"{"capability":"echo","payload":"from the tool"}"#;
    let server = FakeLlm::start(&[
        "--tool",
        "troupe_submit_task",
        "--tool-args",
        args,
        "--key",
        "sekrit",
        "--log",
        &log.to_string_lossy(),
    ])
    .await?;
    let node = Node::start(NodeOpts::named("solo").arg("--secret-dirs", dir.path().display())).await?;
    node.spawn_builtin("echo", &["echo"]).await?;
    let input = json!({
        "name": "claude",
        "backend": { "llm": {
            "baseUrl": server.url(), "model": "claude-tiny", "dialect": "ANTHROPIC", "maxTokens": 100,
            "apiKeyFile": key.to_string_lossy(), "tools": ["troupe_*"], "systemPrompt": "be brief",
        } },
    });
    let agent = text(&node.spawn_agent(input).await?, "/id")?;
    let out = node.run_on(&agent, json!("go")).await?;
    ensure!(
        out["content"].as_str().is_some_and(|c| c.contains("from the tool")),
        "{out}"
    );
    let requests = logged(&log)?;
    ensure!(requests.len() == 2, "{requests:?}");
    ensure!(requests.iter().all(|r| r["path"] == "/v1/messages"
        && r["headers"]["x-api-key"] == "sekrit"
        && r["headers"]["anthropic-version"] == "2023-06-01"
        && r["body"]["system"] == "be brief"));
    ensure!(
        requests[0]["body"]["tools"].as_array().map(Vec::len) == Some(4),
        "{}",
        requests[0]["body"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_updates_send_an_llm_task_at_each_committed_step_though_its_record_did_not_change() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let held = dir.path().join("answer");
    // The model delegates to `slow` (held at the gate), then its answer waits for `held`.
    let gate = Gate::new()?;
    let server = FakeLlm::start(&[
        "--tool",
        "troupe_submit_task",
        "--tool-args",
        r#"{"capability":"slow","payload":"x"}"#,
        "--hold",
        &held.to_string_lossy(),
    ])
    .await?;
    let node = Node::start(NodeOpts::named("solo")).await?;
    node.spawn_gated(&gate, &["slow"], 1).await?;
    let input = json!({
        "name": "delegator",
        "backend": { "llm": { "baseUrl": server.url(), "model": "tiny", "stream": true, "tools": ["troupe_*"] } },
    });
    let agent = text(&node.spawn_agent(input).await?, "/id")?;
    let task = node.submit_to(&agent, json!("go")).await?;
    // Its first step (the model's call) is committed; the call's result waits for the gate.
    let q = "query($id: ID!) { task(id: $id) { state transcript { kind } } }";
    let deadline = Deadline::after(WAIT, "the model's call to be committed");
    loop {
        let shown = node.gql_ok(q, json!({ "id": task })).await?;
        if shown["task"]["transcript"].as_array().is_some_and(|s| s.len() == 1) {
            break;
        }
        deadline.tick(&shown).await?;
    }
    let updates = "subscription($id: ID!) { taskUpdates(id: $id) { state transcript { kind } } }";
    let mut sub = Subscription::start(&node, updates, json!({ "id": task })).await?;
    let first = sub.next_with_deadline().await?.context("the stream ended")?;
    ensure!(
        first["taskUpdates"]["state"] == "RUNNING"
            && first["taskUpdates"]["transcript"].as_array().map(Vec::len) == Some(1),
        "{first}"
    );
    // The call's result is committed while the task stays RUNNING (its record unchanged):
    // an item says so, before the answer is let go.
    gate.open()?;
    let next = sub.next_with_deadline().await?.context("the stream ended")?;
    ensure!(
        next["taskUpdates"]["state"] == "RUNNING"
            && next["taskUpdates"]["transcript"].as_array().map(Vec::len) == Some(2),
        "{next}"
    );
    std::fs::write(&held, "")?;
    let deadline = Deadline::after(WAIT, "the task to end");
    loop {
        let item = sub.next_with_deadline().await?.context("the stream ended")?;
        if item["taskUpdates"]["state"] == "SUCCEEDED" {
            break;
        }
        deadline.tick(&item).await?;
    }
    Ok(())
}

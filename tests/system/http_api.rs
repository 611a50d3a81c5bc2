//! GraphQL over HTTP: tasks run end to end, pagination and filters, node info, metrics,
//! and the per-agent concurrency cap.

use std::collections::HashSet;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::support::{int, text, Deadline, Node, NodeOpts, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_task_submitted_by_capability_or_agent_id_returns_its_payload() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let agent = node.spawn_builtin("echo", &["echo"]).await?;

    let payload = json!({ "hello": "world" });
    let task = node.submit(json!({ "capability": "echo", "payload": payload })).await?;
    ensure!(task["capability"] == "echo", "submitted task: {task}");
    ensure!(task["payload"] == payload, "submitted task: {task}");
    let id = text(&task, "/id")?;

    let done = node.wait_task_state(&id, "SUCCEEDED").await?;
    ensure!(done["result"] == payload, "result is not the payload: {done}");
    ensure!(done["attempts"] == 1, "one start expected: {done}");
    ensure!(done["agentId"] == agent.as_str(), "ran on another agent: {done}");
    ensure!(done["error"].is_null(), "error on a success: {done}");
    for field in ["createdAt", "startedAt", "finishedAt"] {
        ensure!(done[field].is_string(), "{field} not set: {done}");
    }
    let agent_now = node
        .wait_agent(&agent, "counting", |a| a["tasksSucceeded"] != 0)
        .await?;
    ensure!(agent_now["tasksSucceeded"] == 1, "agent after one task: {agent_now}");
    ensure!(agent_now["state"] == "RUNNING", "agent after one task: {agent_now}");

    let payload = json!([1, "two", { "three": 3.5 }]);
    let by_id = node.submit_to(&agent, payload.clone()).await?;
    let done = node.wait_task_state(&by_id, "SUCCEEDED").await?;
    ensure!(done["result"] == payload, "result is not the payload: {done}");
    ensure!(done["agentId"] == agent.as_str(), "ran on another agent: {done}");
    let agent_now = node
        .wait_agent(&agent, "counting", |a| a["tasksSucceeded"] != 1)
        .await?;
    ensure!(agent_now["tasksSucceeded"] == 2, "agent after two tasks: {agent_now}");
    ensure!(agent_now["tasksFailed"] == 0, "agent after two tasks: {agent_now}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_pages_of_one_visit_every_agent_exactly_once() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let mut spawned = HashSet::new();
    for _ in 0..3 {
        spawned.insert(node.spawn_builtin("echo", &[]).await?);
    }

    let q = "query($after: String) { agents(first: 1, after: $after) { totalCount \
             edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }";
    let mut seen = Vec::new();
    let mut after = Value::Null;
    let mut pages = 0;
    loop {
        pages += 1;
        ensure!(pages <= 10, "pagination does not end; seen {seen:?}");
        let page = node.gql_ok(q, json!({ "after": after })).await?["agents"].clone();
        ensure!(page["totalCount"] == 3, "totalCount: {page}");
        let edges = page["edges"].as_array().context("edges")?;
        ensure!(edges.len() == 1, "first: 1 gave {} edges: {page}", edges.len());
        seen.push(text(&edges[0], "/node/id")?);
        if page["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
        ensure!(after.is_string(), "hasNextPage without endCursor: {page}");
    }
    ensure!(seen.len() == 3, "pages: {seen:?}");
    let unique: HashSet<String> = seen.iter().cloned().collect();
    ensure!(unique == spawned, "paged ids {seen:?} != spawned {spawned:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_filtered_by_state_or_agent_return_only_matching_tasks() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let echo = node.spawn_builtin("echo", &[]).await?;
    let fail = node.spawn_builtin("fail", &[]).await?;

    let mut ok_ids = HashSet::new();
    for n in 0..2 {
        let id = node.submit_to(&echo, json!({ "n": n })).await?;
        node.wait_task_state(&id, "SUCCEEDED").await?;
        ok_ids.insert(id);
    }
    let failed = node
        .submit(json!({ "agentId": fail, "payload": { "message": "nope" }, "maxAttempts": 1 }))
        .await?;
    let failed_id = text(&failed, "/id")?;
    let done = node.wait_task_state(&failed_id, "DEAD").await?;
    ensure!(text(&done, "/error")?.contains("nope"), "fail builtin error: {done}");

    let q = "query($state: TaskState, $agentId: ID) { tasks(state: $state, agentId: $agentId, first: 100) \
             { totalCount nodes { id state } } }";
    let ids = |data: &Value| -> HashSet<String> {
        let nodes = data["tasks"]["nodes"].as_array().cloned().unwrap_or_default();
        nodes
            .iter()
            .filter_map(|t| t["id"].as_str().map(str::to_string))
            .collect()
    };
    let succeeded = node.gql_ok(q, json!({ "state": "SUCCEEDED" })).await?;
    ensure!(ids(&succeeded) == ok_ids, "tasks(state: SUCCEEDED): {succeeded}");
    ensure!(succeeded["tasks"]["totalCount"] == 2, "{succeeded}");
    let failed = node.gql_ok(q, json!({ "state": "DEAD" })).await?;
    ensure!(
        ids(&failed) == HashSet::from([failed_id.clone()]),
        "tasks(state: DEAD): {failed}"
    );
    let queued = node.gql_ok(q, json!({ "state": "QUEUED" })).await?;
    ensure!(ids(&queued).is_empty(), "tasks(state: QUEUED): {queued}");
    let of_echo = node.gql_ok(q, json!({ "agentId": echo })).await?;
    ensure!(ids(&of_echo) == ok_ids, "tasks(agentId: echo): {of_echo}");
    let all = node.gql_ok(q, json!({})).await?;
    ensure!(all["tasks"]["totalCount"] == 3, "tasks(): {all}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_lists_itself_up_and_metrics_count_finished_tasks() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let (status, body) = node.get("/healthz").await?;
    ensure!(status == 200, "healthz: {status} {body}");
    let health: Value = serde_json::from_str(&body)?;
    ensure!(
        health["status"] == "ok" && health["node"] == "solo",
        "healthz body: {health}"
    );

    let data = node
        .gql_ok(
            "{ node { id name version startedAt members { name address status } } }",
            json!({}),
        )
        .await?;
    let me = &data["node"];
    ensure!(me["name"] == "solo", "node: {me}");
    ensure!(
        me["version"].as_str().is_some_and(|v| !v.is_empty()),
        "node version: {me}"
    );
    let members = me["members"].as_array().context("members")?;
    ensure!(
        members.iter().any(|m| m["name"] == "solo" && m["status"] == "UP"),
        "node is not an UP member of its own cluster: {me}"
    );

    let agent = node.spawn_builtin("echo", &[]).await?;
    let id = node.submit_to(&agent, json!("count me")).await?;
    node.wait_task_state(&id, "SUCCEEDED").await?;

    let deadline = Deadline::after(WAIT, "troupe_tasks_total{outcome=\"succeeded\"} >= 1");
    loop {
        let (status, metrics) = node.get("/metrics").await?;
        ensure!(status == 200, "metrics: {status} {metrics}");
        ensure!(
            metrics.contains("troupe_tasks_total"),
            "no troupe_tasks_total in:\n{metrics}"
        );
        let succeeded = metrics
            .lines()
            .filter(|l| l.starts_with("troupe_tasks_total{") && l.contains("outcome=\"succeeded\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        if succeeded >= 1.0 {
            return Ok(());
        }
        deadline.tick(metrics).await?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_tasks_caps_how_many_run_at_once_on_one_agent() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let input = json!({
        "name": "sleeper",
        "backend": { "builtin": { "kind": "sleep" } },
        "capabilities": ["sleep"],
        "maxConcurrentTasks": 2,
    });
    let agent = node.spawn_agent(input).await?;
    ensure!(agent["maxConcurrentTasks"] == 2, "spawned: {agent}");
    let agent = text(&agent, "/id")?;

    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(node.submit_to(&agent, json!({ "ms": 300 })).await?);
    }
    for id in &ids {
        let done = node.wait_task_state(id, "SUCCEEDED").await?;
        ensure!(done["result"] == json!({ "slept_ms": 300 }), "sleep result: {done}");
    }

    let ours: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let events = node.events(&["TASK_STARTED", "TASK_SUCCEEDED"]).await?;
    let (mut running, mut peak, mut starts, mut last_seq) = (0i64, 0i64, 0, i64::MIN);
    for event in &events {
        let seq = int(event, "/seq")?;
        ensure!(seq > last_seq, "events out of seq order: {events:?}");
        last_seq = seq;
        if !event["subject"].as_str().is_some_and(|s| ours.contains(s)) {
            continue;
        }
        if event["kind"] == "TASK_STARTED" {
            running += 1;
            starts += 1;
        } else {
            running -= 1;
        }
        ensure!(running <= 2, "more than 2 tasks running at seq {seq}: {events:?}");
        peak = peak.max(running);
    }
    ensure!(starts == 5, "expected 5 starts, got {starts}: {events:?}");
    ensure!(
        peak == 2,
        "the agent never ran 2 tasks at once (peak {peak}): {events:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_repeated_with_its_idempotency_key_acts_once_and_answers_the_same() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let spawn = "mutation($key: String) { spawnAgent(input: { name: \"once\", backend: { builtin: { kind: \"echo\" } } }, idempotencyKey: $key) { id } }";
    let a = node.gql_ok(spawn, json!({ "key": "agent-1" })).await?;
    let b = node.gql_ok(spawn, json!({ "key": "agent-1" })).await?;
    ensure!(a == b, "{a} / {b}");
    let agents = node.gql_ok("{ agents { totalCount } }", json!({})).await?;
    ensure!(
        agents["agents"]["totalCount"] == 1,
        "a repeated spawn made a second agent: {agents}"
    );
    let agent = text(&a, "/spawnAgent/id")?;

    let submit =
        "mutation($input: SubmitTaskInput!, $key: String) { submitTask(input: $input, idempotencyKey: $key) { id } }";
    let input = json!({ "agentId": agent, "payload": "only once" });
    let answers =
        futures::future::join_all((0..5).map(|_| node.gql_ok(submit, json!({ "input": input, "key": "task-1" }))))
            .await;
    let ids: HashSet<String> = answers
        .into_iter()
        .map(|a| a.and_then(|a| text(&a, "/submitTask/id")))
        .collect::<Result<_>>()?;
    ensure!(ids.len() == 1, "concurrent repeats made several tasks: {ids:?}");
    let tasks = node.gql_ok("{ tasks { totalCount } }", json!({})).await?;
    ensure!(tasks["tasks"]["totalCount"] == 1, "{tasks}");

    // The same key for another request is a conflict, not a silent replay.
    let other = json!({ "input": { "agentId": agent, "payload": "different" }, "key": "task-1" });
    super::support::expect_code(&node.gql(submit, other).await?, "CONFLICT")?;

    let id = ids.into_iter().next().context("one id")?;
    node.wait_task_state(&id, "SUCCEEDED").await?;
    let cancel = "mutation($id: ID!, $key: String) { cancelTask(id: $id, idempotencyKey: $key) { id state } }";
    super::support::expect_code(&node.gql(cancel, json!({ "id": id, "key": "c-1" })).await?, "CONFLICT")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_graphql_without_a_query_says_how_to_ask_and_the_favicon_is_served() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let http = reqwest::Client::new();
    // A browser opening /graphql: how to ask, not a parser error (and before any token).
    let bare = http.get(format!("http://{}/graphql", node.addr)).send().await?;
    ensure!(bare.status() == 400, "{}", bare.status());
    let body: serde_json::Value = bare.json().await?;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    ensure!(
        body["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
            && message.contains("?query=")
            && message.contains("/graphiql"),
        "{body}"
    );
    // With a query it answers as before.
    let asked = http
        .get(format!(
            "http://{}/graphql?query=%7B%20node%20%7B%20name%20%7D%20%7D",
            node.addr
        ))
        .bearer_auth(&node.token)
        .send()
        .await?;
    let body: serde_json::Value = asked.json().await?;
    ensure!(body["data"]["node"]["name"] == "solo", "{body}");
    // The icon browsers ask for by themselves.
    for path in ["/favicon.ico", "/favicon.svg"] {
        let icon = http.get(format!("http://{}{path}", node.addr)).send().await?;
        ensure!(icon.status() == 200, "{path}: {}", icon.status());
        ensure!(icon.headers()["content-type"] == "image/svg+xml", "{path}");
    }
    // A webhook for a node that has none: not found, whatever the (small) body.
    let hook = http
        .post(format!("http://{}/hooks/issues", node.addr))
        .header("content-type", "application/json")
        .body(r#"{"x":1}"#)
        .send()
        .await?;
    let status = hook.status();
    let body: serde_json::Value = hook.json().await?;
    ensure!(status == 404 && body["error"]["code"] == "NOT_FOUND", "{status} {body}");
    Ok(())
}

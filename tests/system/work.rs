//! Work distribution through the gateway: task graphs, deadlines and delayed starts, and
//! backpressure at the node's bound.

use std::collections::HashMap;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::support::{error_code, expect_code, int, text, Deadline, Gate, Node, NodeOpts, WAIT};

const GRAPH: &str = "mutation($tasks: [GraphTaskInput!]!) { submitTasks(tasks: $tasks) { id state dependsOn } }";

/// The task's key as the agent saw it: in `payload.k`, or `payload.payload.k` with dependencies.
fn key_of(line: &Value) -> Option<i64> {
    line["k"].as_i64().or_else(|| line["payload"]["k"].as_i64())
}

#[tokio::test]
async fn a_fifty_task_graph_runs_in_dependency_order_and_survives_a_kill_9_halfway() -> Result<()> {
    let mut node = Node::start(NodeOpts::named("graph")).await?;
    let log = node.data_dir().join("runs.log");
    let gate = Gate::new()?;
    // Each run appends what it was given; task 25 waits for the gate first.
    let script = format!(
        "p=$(cat); case \"$p\" in *'\"gate\":true'*) {} ;; esac; printf '%s\\n' \"$p\" >> '{}'; echo '{{\"ok\":true}}'",
        gate.script("true"),
        log.display()
    );
    node.spawn_agent(
        json!({ "name": "worker", "backend": { "exec": { "command": ["/bin/sh", "-c", script] } },
                             "capabilities": ["step"], "maxConcurrentTasks": 4 }),
    )
    .await?;
    // t{i} depends on t{i-1} and on t{i/2}: a chain with fan-in.
    let tasks: Vec<Value> = (0..50)
        .map(|i| {
            let mut deps = Vec::new();
            if i > 0 {
                deps.push(format!("t{}", i - 1));
                if i / 2 != i - 1 {
                    deps.push(format!("t{}", i / 2));
                }
            }
            json!({ "key": format!("t{i}"), "task": { "capability": "step", "maxAttempts": 3,
                    "payload": { "k": i, "gate": i == 25 }, "dependsOn": deps } })
        })
        .collect();
    let submitted = node.gql_ok(GRAPH, json!({ "tasks": tasks })).await?;
    let ids: Vec<String> = submitted["submitTasks"]
        .as_array()
        .context("tasks")?
        .iter()
        .map(|t| t["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    ensure!(ids.len() == 50);
    ensure!(
        submitted["submitTasks"][3]["dependsOn"] == json!([ids[2], ids[1]]),
        "{submitted}"
    );
    // Halfway: 25 done, the 26th held at the gate. Then kill -9.
    node.wait_task_state(&ids[24], "SUCCEEDED").await?;
    node.wait_task_state(&ids[25], "RUNNING").await?;
    let finished_before: Vec<i64> = (0..25).collect();
    node.kill9().await?;
    node.restart().await?;
    gate.open()?;
    for id in &ids {
        node.wait_task_state(id, "SUCCEEDED").await?;
    }
    let lines: Vec<Value> = std::fs::read_to_string(&log)?
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad log line {l}")))
        .collect::<Result<_>>()?;
    let mut runs: HashMap<i64, usize> = HashMap::new();
    let mut first_run: HashMap<i64, usize> = HashMap::new();
    for (n, line) in lines.iter().enumerate() {
        let k = key_of(line).context("no key")?;
        *runs.entry(k).or_default() += 1;
        first_run.entry(k).or_insert(n);
    }
    for k in &finished_before {
        ensure!(
            runs[k] == 1,
            "task {k} had finished before the kill and ran {} times",
            runs[k]
        );
    }
    ensure!(runs.len() == 50, "every task ran: {runs:?}");
    for i in 1..50i64 {
        for d in [i - 1, i / 2] {
            ensure!(first_run[&d] < first_run[&i], "t{i} ran before its dependency t{d}");
        }
    }
    // The documented shape: the payload, and each dependency's result by id.
    let t3 = lines.iter().find(|l| key_of(l) == Some(3)).context("t3 ran")?;
    ensure!(t3["payload"]["k"] == 3, "{t3}");
    ensure!(
        t3["dependencies"][&ids[2]] == json!({ "ok": true }) && t3["dependencies"][&ids[1]] == json!({ "ok": true }),
        "{t3}"
    );
    Ok(())
}

#[tokio::test]
async fn a_dependency_failure_propagates_and_bad_graphs_are_refused() -> Result<()> {
    let node = Node::start(NodeOpts::named("graph-fail")).await?;
    node.spawn_builtin("fail", &["fail"]).await?;
    node.spawn_builtin("echo", &["echo"]).await?;
    let tasks = json!([
        { "key": "root", "task": { "capability": "fail", "maxAttempts": 1, "payload": { "message": "no" } } },
        { "key": "child", "task": { "capability": "echo", "payload": {}, "dependsOn": ["root"] } },
        { "key": "grandchild", "task": { "capability": "echo", "payload": {}, "dependsOn": ["child"] } },
        { "key": "free", "task": { "capability": "echo", "payload": {} } },
    ]);
    let submitted = node.gql_ok(GRAPH, json!({ "tasks": tasks })).await?;
    let id = |i: usize| text(&submitted, &format!("/submitTasks/{i}/id"));
    node.wait_task_state(&id(0)?, "DEAD").await?;
    for i in [1, 2] {
        let t = node.wait_task_state(&id(i)?, "DEPENDENCY_FAILED").await?;
        ensure!(t["startedAt"].is_null(), "it never ran: {t}");
    }
    node.wait_task_state(&id(3)?, "SUCCEEDED").await?;
    ensure!(node.events_for("TASK_DEPENDENCY_FAILED", &id(2)?).await?.len() == 1);

    let cycle = json!([
        { "key": "a", "task": { "capability": "echo", "payload": {}, "dependsOn": ["b"] } },
        { "key": "b", "task": { "capability": "echo", "payload": {}, "dependsOn": ["a"] } },
    ]);
    let body = node.gql(GRAPH, json!({ "tasks": cycle })).await?;
    expect_code(&body, "INVALID_INPUT")?;
    ensure!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cycle"),
        "{body}"
    );
    let unknown = json!([{ "key": "a", "task": { "capability": "echo", "payload": {}, "dependsOn": ["no-such-task@graph-fail"] } }]);
    expect_code(&node.gql(GRAPH, json!({ "tasks": unknown })).await?, "INVALID_INPUT")?;
    let twice = json!([
        { "key": "a", "task": { "capability": "echo", "payload": {} } },
        { "key": "a", "task": { "capability": "echo", "payload": {} } },
    ]);
    expect_code(&node.gql(GRAPH, json!({ "tasks": twice })).await?, "INVALID_INPUT")?;
    // Nothing of a refused graph was queued.
    let all = node.gql_ok("{ tasks(first: 0) { totalCount } }", json!({})).await?;
    ensure!(int(&all, "/tasks/totalCount")? == 4, "{all}");
    // A single task may depend on an existing one; a failed one fails it at once.
    let q = "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id } }";
    let late = node
        .gql_ok(
            q,
            json!({ "input": { "capability": "echo", "payload": {}, "dependsOn": [id(0)?] } }),
        )
        .await?;
    node.wait_task_state(&text(&late, "/submitTask/id")?, "DEPENDENCY_FAILED")
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_deadline_expires_a_running_task_and_not_before_holds_one_back() -> Result<()> {
    let node = Node::start(NodeOpts::named("time")).await?;
    node.spawn_builtin("sleep", &["sleep"]).await?;
    node.spawn_builtin("echo", &["echo"]).await?;
    let q = "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id deadline notBefore } }";
    let deadline = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let long = node
        .gql_ok(
            q,
            json!({ "input": { "capability": "sleep", "payload": { "ms": 60000 }, "deadline": deadline.to_rfc3339() } }),
        )
        .await?;
    let id = text(&long, "/submitTask/id")?;
    node.wait_task_state(&id, "RUNNING").await?;
    let expired = wait_state(&node, &id, "EXPIRED").await?;
    ensure!(
        expired["error"].as_str().unwrap_or_default().contains("deadline"),
        "{expired}"
    );
    // The sleeping agent is free again: its attempt was cancelled.
    let quick = node
        .gql_ok(q, json!({ "input": { "capability": "sleep", "payload": { "ms": 1 } } }))
        .await?;
    wait_state(&node, &text(&quick, "/submitTask/id")?, "SUCCEEDED").await?;

    let not_before = chrono::Utc::now() + chrono::Duration::milliseconds(700);
    let held = node
        .gql_ok(
            q,
            json!({ "input": { "capability": "echo", "payload": {}, "notBefore": not_before.to_rfc3339() } }),
        )
        .await?;
    let id = text(&held, "/submitTask/id")?;
    ensure!(node.task(&id).await?["state"] == "QUEUED");
    let done = wait_state(&node, &id, "SUCCEEDED").await?;
    let started: chrono::DateTime<chrono::Utc> = text(&done, "/startedAt")?.parse()?;
    ensure!(started >= not_before, "started {started}, not before {not_before}");
    let (early, late) = (
        chrono::Utc::now() + chrono::Duration::seconds(10),
        chrono::Utc::now() + chrono::Duration::seconds(20),
    );
    let bad = node
        .gql(
            q,
            json!({ "input": { "capability": "echo", "payload": {}, "notBefore": late.to_rfc3339(),
                    "deadline": early.to_rfc3339() } }),
        )
        .await?;
    expect_code(&bad, "INVALID_INPUT")?;
    Ok(())
}

async fn wait_state(node: &Node, id: &str, state: &str) -> Result<Value> {
    let deadline = Deadline::after(WAIT, format!("task {id} to be {state}"));
    loop {
        let t = node.task(id).await?;
        if t["state"] == state {
            return Ok(t);
        }
        deadline.tick(&t).await?;
    }
}

#[tokio::test]
async fn a_submit_beyond_the_bound_is_refused_with_backpressure_and_nothing_below_it_is_lost() -> Result<()> {
    let node = Node::start(NodeOpts::named("bound").arg("--max-open-tasks", 5)).await?;
    let q = "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id } }";
    let mut accepted = Vec::new();
    for i in 0..5 {
        let t = node
            .gql_ok(
                q,
                json!({ "input": { "capability": "nobody-yet", "payload": { "i": i } } }),
            )
            .await?;
        accepted.push(text(&t, "/submitTask/id")?);
    }
    let refused = node
        .gql(
            q,
            json!({ "input": { "capability": "nobody-yet", "payload": { "i": 5 } } }),
        )
        .await?;
    ensure!(error_code(&refused).as_deref() == Some("BACKPRESSURE"), "{refused}");
    ensure!(
        refused["errors"][0]["extensions"]["retryAfterMs"].as_i64().unwrap_or(0) > 0,
        "{refused}"
    );
    // A graph that does not fit is refused whole.
    let graph = json!([{ "key": "a", "task": { "capability": "nobody-yet", "payload": {} } }]);
    expect_code(&node.gql(GRAPH, json!({ "tasks": graph })).await?, "BACKPRESSURE")?;
    // Room again once an agent takes the work; every accepted task runs.
    node.spawn_builtin("echo", &["nobody-yet"]).await?;
    for id in &accepted {
        node.wait_task_state(id, "SUCCEEDED").await?;
    }
    let deadline = Deadline::after(WAIT, "a submit to be accepted again");
    loop {
        let again = node
            .gql(
                q,
                json!({ "input": { "capability": "nobody-yet", "payload": { "i": 6 } } }),
            )
            .await?;
        if error_code(&again).is_none() {
            break;
        }
        deadline.tick(&again).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_task_out_of_attempts_is_a_dead_letter_with_each_error_and_can_be_requeued() -> Result<()> {
    let node = Node::start(NodeOpts::named("dlq").arg("--retry-base-ms", 1)).await?;
    let flag = node.data_dir().join("healed");
    // Fails (with its attempt number in the error) until the flag file exists.
    let script = format!(
        "cat >/dev/null; if [ -e '{}' ]; then echo '\"fine\"'; else echo \"broken attempt $TROUPE_TASK_ATTEMPT\" >&2; exit 1; fi",
        flag.display()
    );
    let agent = node
        .spawn_agent(json!({ "name": "flaky", "backend": { "exec": { "command": ["/bin/sh", "-c", script] } } }))
        .await?;
    let agent = text(&agent, "/id")?;
    let task = node
        .submit(json!({ "agentId": agent, "payload": {}, "maxAttempts": 3 }))
        .await?;
    let id = text(&task, "/id")?;
    node.wait_task_state(&id, "DEAD").await?;
    let q = "{ deadLetters(first: 10) { totalCount edges { node { id state attempts attemptErrors { attempt agentId error } } } } }";
    let dead = node.gql_ok(q, json!({})).await?;
    let letters = dead["deadLetters"]["edges"].as_array().context("edges")?;
    ensure!(letters.len() == 1 && letters[0]["node"]["id"] == id.as_str(), "{dead}");
    let errors = letters[0]["node"]["attemptErrors"]
        .as_array()
        .context("attemptErrors")?;
    ensure!(errors.len() == 3, "every attempt's error: {errors:?}");
    for (n, e) in errors.iter().enumerate() {
        ensure!(e["attempt"] == n as i64 + 1 && e["agentId"] == agent.as_str(), "{e}");
        ensure!(
            e["error"]
                .as_str()
                .unwrap_or_default()
                .contains(&format!("broken attempt {}", n + 1)),
            "{e}"
        );
    }
    ensure!(node.events_for("TASK_DEAD", &id).await?.len() == 1);
    let requeue = "mutation($id: ID!) { requeueTask(id: $id) { state attempts } }";
    // Only a DEAD task can be requeued.
    let echo = node.spawn_builtin("echo", &["e"]).await?;
    let done = node.submit_to(&echo, json!({})).await?;
    node.wait_task_state(&done, "SUCCEEDED").await?;
    expect_code(&node.gql(requeue, json!({ "id": done })).await?, "CONFLICT")?;
    std::fs::write(&flag, b"")?;
    let again = node.gql_ok(requeue, json!({ "id": id })).await?;
    ensure!(again["requeueTask"]["state"] == "QUEUED", "{again}");
    let finished = node.wait_task_state(&id, "SUCCEEDED").await?;
    ensure!(finished["result"] == "fine" && finished["attempts"] == 4, "{finished}");
    let dead = node.gql_ok(q, json!({})).await?;
    ensure!(dead["deadLetters"]["totalCount"] == 0, "{dead}");
    Ok(())
}

#[tokio::test]
async fn an_agents_breaker_opens_half_opens_and_closes() -> Result<()> {
    let node = Node::start(
        NodeOpts::named("breaker")
            .arg("--breaker-failures", 2)
            .arg("--breaker-cooldown-ms", 1500)
            .arg("--retry-base-ms", 1),
    )
    .await?;
    let flag = node.data_dir().join("healed");
    let script = format!(
        "cat >/dev/null; if [ -e '{}' ]; then echo '\"fine\"'; else echo broken >&2; exit 1; fi",
        flag.display()
    );
    let agent = node
        .spawn_agent(
            json!({ "name": "flaky", "backend": { "exec": { "command": ["/bin/sh", "-c", script] } },
                             "maxConcurrentTasks": 4 }),
        )
        .await?;
    let agent = text(&agent, "/id")?;
    for _ in 0..2 {
        let t = node
            .submit(json!({ "agentId": agent, "payload": {}, "maxAttempts": 1 }))
            .await?;
        node.wait_task_state(&text(&t, "/id")?, "DEAD").await?;
    }
    let q = "query($id: ID!) { agent(id: $id) { breaker { state consecutiveFailures openedAt } } }";
    let b = node.gql_ok(q, json!({ "id": agent })).await?;
    ensure!(
        b["agent"]["breaker"]["state"] == "OPEN" && b["agent"]["breaker"]["consecutiveFailures"] == 2,
        "{b}"
    );
    // While it is open the agent gets nothing; healed, the trial after the cool-down succeeds.
    let waiting = node.submit(json!({ "agentId": agent, "payload": {} })).await?;
    let waiting = text(&waiting, "/id")?;
    ensure!(node.task(&waiting).await?["state"] == "QUEUED");
    std::fs::write(&flag, b"")?;
    node.wait_task_state(&waiting, "SUCCEEDED").await?;
    let kinds: Vec<String> = node
        .events(&[
            "AGENT_BREAKER_OPENED",
            "AGENT_BREAKER_HALF_OPEN",
            "AGENT_BREAKER_CLOSED",
        ])
        .await?
        .into_iter()
        .filter(|e| e["subject"] == agent.as_str())
        .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    // (On a slow machine a trial may have failed before the flag was written: it opens again.)
    ensure!(
        kinds.first().map(String::as_str) == Some("AGENT_BREAKER_OPENED"),
        "{kinds:?}"
    );
    ensure!(
        kinds.ends_with(&[
            "AGENT_BREAKER_HALF_OPEN".to_string(),
            "AGENT_BREAKER_CLOSED".to_string()
        ]),
        "{kinds:?}"
    );
    let b = node.gql_ok(q, json!({ "id": agent })).await?;
    ensure!(b["agent"]["breaker"]["state"] == "CLOSED", "{b}");
    Ok(())
}

#[tokio::test]
async fn each_strategy_picks_as_documented_through_the_gateway() -> Result<()> {
    let node = Node::start(NodeOpts::named("strategies")).await?;
    let mut ids = HashMap::new();
    for (name, prof, weight) in [("a", 0.3, 3.0), ("b", 0.9, 1.0), ("c", 0.6, 1.0)] {
        let agent = node
            .spawn_agent(json!({ "name": name, "backend": { "builtin": { "kind": "echo" } },
                                 "capabilities": ["work", "extra"], "maxConcurrentTasks": 4,
                                 "proficiency": [{ "capability": "work", "proficiency": prof }], "weight": weight }))
            .await?;
        let id = text(&agent, "/id")?;
        let shown = node
            .gql_ok(
                "query($id: ID!) { agent(id: $id) { weight proficiency { capability proficiency } } }",
                json!({ "id": id }),
            )
            .await?;
        ensure!(
            shown["agent"]["weight"] == weight && shown["agent"]["proficiency"][0]["proficiency"] == prof,
            "{shown}"
        );
        ids.insert(id, name);
    }
    let q = "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id } }";
    // One after the other, each finished before the next: who ran it, and why.
    let run = |input: Value| {
        let node = &node;
        async move {
            let t = node.gql_ok(q, json!({ "input": input })).await?;
            let id = text(&t, "/submitTask/id")?;
            let done = node.wait_task_state(&id, "SUCCEEDED").await?;
            let started = node.events_for("TASK_STARTED", &id).await?;
            anyhow::Ok((text(&done, "/agentId")?, started[0]["data"].clone()))
        }
    };
    let (who, why) = run(json!({ "capability": "work", "payload": {} })).await?;
    ensure!(ids[&who] == "b", "SCORE takes the most proficient: {who}");
    ensure!(why["strategy"] == "SCORE" && why["score"].as_f64().is_some(), "{why}");
    ensure!(
        ids[why["runnerUp"]["agentId"].as_str().unwrap_or_default()] == "c",
        "{why}"
    );
    let mut order = Vec::new();
    for _ in 0..6 {
        let (who, why) = run(json!({ "capability": "work", "payload": {}, "strategy": "ROUND_ROBIN" })).await?;
        ensure!(why["strategy"] == "ROUND_ROBIN", "{why}");
        order.push(ids[&who]);
    }
    ensure!(
        order[..3].iter().collect::<std::collections::HashSet<_>>().len() == 3 && order[..3] == order[3..],
        "{order:?}"
    );
    // Several capabilities and a least proficiency.
    let (who, _) = run(
        json!({ "capabilities": ["work", "extra"], "minProficiency": 0.5, "payload": {},
                               "strategy": "LEAST_CONNECTIONS" }),
    )
    .await?;
    ensure!(ids[&who] != "a", "a is below 0.5 at work");
    let picky = node
        .gql_ok(
            q,
            json!({ "input": { "capability": "work", "minProficiency": 0.95, "payload": {} } }),
        )
        .await?;
    ensure!(node.task(&text(&picky, "/submitTask/id")?).await?["state"] == "QUEUED");
    let bad = node
        .gql(
            q,
            json!({ "input": { "capability": "work", "capabilities": ["x"], "payload": {} } }),
        )
        .await?;
    expect_code(&bad, "INVALID_INPUT")?;
    Ok(())
}

//! The scheduler seen from outside: priority order, tasks that wait for an agent, and a
//! blocked backlog that holds up nothing.

use anyhow::{ensure, Result};
use serde_json::{json, Value};

use super::support::{text, Gate, Node, NodeOpts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_tasks_start_by_priority_class_then_in_arrival_order() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let gate = Gate::new()?;
    let agent = node.spawn_gated(&gate, &["nap"], 1).await?;
    // One slot, held until the gate opens: everything submitted meanwhile waits in the queue.
    let blocker = node.submit_to(&agent, json!("blocker")).await?;
    node.wait_task_state(&blocker, "RUNNING").await?;
    let mut ids = Vec::new();
    for (priority, n) in [("LOW", 1), ("NORMAL", 2), ("CRITICAL", 3), ("HIGH", 4), ("CRITICAL", 5)] {
        let task = node
            .submit(json!({ "capability": "nap", "payload": n, "priority": priority }))
            .await?;
        ids.push((n, text(&task, "/id")?));
    }
    gate.open()?;
    for (_, id) in &ids {
        node.wait_task_state(id, "SUCCEEDED").await?;
    }
    let started: Vec<String> = node
        .events(&["TASK_STARTED"])
        .await?
        .iter()
        .filter_map(|e| e["subject"].as_str().map(str::to_owned))
        .filter(|s| s != &blocker)
        .collect();
    let order: Vec<i32> = started
        .iter()
        .filter_map(|s| ids.iter().find(|(_, id)| id == s).map(|(n, _)| *n))
        .collect();
    ensure!(
        order == vec![3, 5, 4, 2, 1],
        "start order by submission number: {order:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_no_agent_can_run_stays_queued_and_runs_once_a_capable_agent_appears() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    node.spawn_builtin("echo", &["echo"]).await?;
    // Accepted, and not silent: the answer warns, and an event says why it waits.
    let m = "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id state waitingFor } }";
    let body =
        json!({ "query": m, "variables": { "input": { "capability": "translate", "payload": { "text": "hola" } } } });
    let (_, answer) = node.post_graphql(Some(&node.token), &body).await?;
    let id = text(&answer, "/data/submitTask/id")?;
    let warning = &answer["extensions"]["warnings"][0];
    ensure!(
        warning["code"] == "NO_AGENT"
            && warning["message"]
                .as_str()
                .is_some_and(|m| m.contains("no agent has capability translate running in the cluster")),
        "{answer}"
    );
    let waiting = node.wait_event("TASK_WAITING", &id).await?;
    ensure!(
        waiting["data"]["capability"] == "translate"
            && waiting["data"]["node"].as_str().is_some_and(|n| !n.is_empty())
            && waiting["data"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("no agent has")),
        "{waiting}"
    );
    // A task some agent can take carries no warning.
    let body = json!({ "query": m, "variables": { "input": { "capability": "echo", "payload": 1 } } });
    let (_, answer) = node.post_graphql(Some(&node.token), &body).await?;
    ensure!(answer["extensions"]["warnings"].is_null(), "{answer}");
    node.wait_task_state(&text(&answer, "/data/submitTask/id")?, "SUCCEEDED")
        .await?;
    let queued = node
        .gql_ok(
            "{ tasks(state: QUEUED) { totalCount nodes { id state agentId } } }",
            json!({}),
        )
        .await?;
    ensure!(
        queued["tasks"]["totalCount"] == 1 && queued["tasks"]["nodes"][0]["id"] == id.as_str(),
        "the waiting task is not listed as QUEUED: {queued}"
    );
    ensure!(
        node.task(&id).await?["attempts"] == 0,
        "started without a capable agent"
    );

    let translator = node.spawn_builtin("echo", &["translate"]).await?;
    let done = node.wait_task_state(&id, "SUCCEEDED").await?;
    ensure!(done["agentId"] == translator.as_str(), "ran on the wrong agent: {done}");
    ensure!(done["attempts"] == 1, "{done}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_queued_tasks_nobody_can_run_do_not_hold_up_an_echo_task() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    // 100 requests of 100 aliased submits each: 10,000 tasks for a capability nobody has,
    // all at the front of the queue (CRITICAL).
    let one = "submitTask(input: { capability: \"nobody-has-this\", payload: 0, priority: CRITICAL }) { id }";
    let batch: String = (0..100).map(|i| format!("t{i}: {one} ")).collect();
    let mutation = format!("mutation {{ {batch} }}");
    // Four requests at a time: a hundred at once had the last ones wait out the client's
    // 30 s behind the others on a loaded machine (the gate runs four tests at once).
    use futures::StreamExt;
    let requests = (0..100).map(|_| node.gql_ok(&mutation, json!({})));
    let answers: Vec<Result<Value>> = futures::stream::iter(requests).buffer_unordered(4).collect().await;
    for answer in answers {
        answer?;
    }
    let queued = node
        .gql_ok("{ tasks(state: QUEUED) { totalCount } }", json!({}))
        .await?;
    ensure!(queued["tasks"]["totalCount"] == 10_000, "{queued}");

    let echo = node.spawn_builtin("echo", &["echo"]).await?;
    let task = node
        .submit(json!({ "capability": "echo", "payload": "me first" }))
        .await?;
    let done = node.wait_task_state(&text(&task, "/id")?, "SUCCEEDED").await?;
    ensure!(
        done["agentId"] == echo.as_str() && done["result"] == "me first",
        "{done}"
    );
    let still: Value = node
        .gql_ok("{ tasks(state: QUEUED) { totalCount } }", json!({}))
        .await?;
    ensure!(
        still["tasks"]["totalCount"] == 10_000,
        "the blocked backlog changed: {still}"
    );
    Ok(())
}

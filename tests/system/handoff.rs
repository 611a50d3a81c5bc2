//! Work queued on a node none of whose agents can run it goes to a node whose agents can:
//! a task for a capability, a graph, and tasks with requirements (`scheduler/actor/handoff.rs`).

use anyhow::{ensure, Result};
use serde_json::json;

use super::cluster::start_pair;
use super::support::text;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_queued_where_no_agent_serves_it_runs_once_an_agent_on_another_node_can_take_it() -> Result<()> {
    let (alpha, beta) = start_pair().await?;
    let task = text(
        &alpha.submit(json!({ "capability": "late", "payload": 1 })).await?,
        "/id",
    )?;
    ensure!(
        task.ends_with("@alpha"),
        "no agent anywhere: queued where it was submitted: {task}"
    );
    // Read on beta, it is not said to run (null), and why it waits is what alpha said in
    // its TASK_WAITING event, read from beta's replica.
    beta.wait_event("TASK_WAITING", &task).await?;
    let there = beta
        .gql_ok(
            "query($id: ID!) { task(id: $id) { state waitingFor } }",
            json!({ "id": task }),
        )
        .await?;
    let why = there["task"]["waitingFor"].as_str().unwrap_or_default();
    ensure!(
        there["task"]["state"] == "QUEUED"
            && why.starts_with("queued on alpha, which said at ")
            && why.ends_with(": no agent has capability late"),
        "{there}"
    );
    // The agent comes on beta: alpha hears of it with the next beats and hands the task over.
    let agent = beta.spawn_builtin("echo", &["late"]).await?;
    // A second task, through alpha as soon as alpha's replica holds the agent (beta's beats
    // may not have told of it yet, and the task may be queued on alpha): it is not said to
    // wait for an agent nobody has.
    alpha.wait_agent_state(&agent, "RUNNING").await?;
    let second = alpha
        .gql(
            "mutation { submitTask(input: { capability: \"late\", payload: 2 }) { id waitingFor } }",
            json!({}),
        )
        .await?;
    let waits_for = second["data"]["submitTask"]["waitingFor"].as_str().unwrap_or_default();
    ensure!(
        second["extensions"]["warnings"].is_null() && !waits_for.starts_with("no agent has"),
        "{second}"
    );
    let second = text(&second, "/data/submitTask/id")?;
    alpha.wait_task_state(&second, "SUCCEEDED").await?;
    let done = alpha.wait_task_state(&task, "SUCCEEDED").await?;
    ensure!(done["agentId"] == agent.as_str(), "{done}");
    let moved = alpha.wait_event("TASKS_MOVED", "beta").await?;
    // The second task went with the first when it was queued on alpha too.
    let count = moved["data"]["count"].as_u64().unwrap_or_default();
    ensure!(moved["data"]["from"] == "alpha" && (1..=2).contains(&count), "{moved}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_and_tasks_with_requirements_queued_where_no_agent_serves_them_run_on_another_node() -> Result<()> {
    let (alpha, beta) = start_pair().await?;
    // The only agent that naps (and well) or draws is beta's.
    let input = json!({
        "name": "napper",
        "backend": { "builtin": { "kind": "echo" } },
        "capabilities": ["nap", "draw"],
        "proficiency": [{ "capability": "nap", "proficiency": 0.9 }],
    });
    let agent = text(&beta.spawn_agent(input).await?, "/id")?;
    alpha.wait_agent_state(&agent, "RUNNING").await?;
    // A graph runs on the node that takes it: alpha holds it, and has no agent for it.
    let graph = alpha
        .gql_ok(
            "mutation { submitTasks(tasks: [
                { key: \"root\", task: { capability: \"nap\", payload: \"root\" } },
                { key: \"child\", task: { capability: \"draw\", payload: \"child\", dependsOn: [\"root\"] } }
            ]) { id } }",
            json!({}),
        )
        .await?;
    let graph: Vec<String> = (0..2)
        .map(|i| text(&graph, &format!("/submitTasks/{i}/id")))
        .collect::<Result<_>>()?;
    // Tasks with requirements stay where they are submitted, and beta's agent meets them:
    // no NO_AGENT warning, no "no agent has".
    let mut required = Vec::new();
    for input in [
        json!({ "capability": "nap", "minProficiency": 0.5, "payload": "well" }),
        json!({ "capabilities": ["nap", "draw"], "payload": "both" }),
    ] {
        let answer = alpha
            .gql(
                "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id waitingFor } }",
                json!({ "input": input }),
            )
            .await?;
        let waits_for = answer["data"]["submitTask"]["waitingFor"].as_str().unwrap_or_default();
        ensure!(
            answer["extensions"]["warnings"].is_null() && !waits_for.starts_with("no agent has"),
            "{answer}"
        );
        required.push(text(&answer, "/data/submitTask/id")?);
    }
    // All of them run there, the graph in its order.
    for task in graph.iter().chain(&required) {
        let done = alpha.wait_task_state(task, "SUCCEEDED").await?;
        ensure!(done["agentId"] == agent.as_str(), "{done}");
    }
    let child = alpha.wait_task_state(&graph[1], "SUCCEEDED").await?;
    let root = alpha.wait_task_state(&graph[0], "SUCCEEDED").await?;
    ensure!(
        child["startedAt"].as_str() >= root["finishedAt"].as_str(),
        "{root} {child}"
    );
    Ok(())
}

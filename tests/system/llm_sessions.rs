//! An LLM task's reply as it streams (`taskOutput`), and the conversation a session keeps
//! across tasks, against the fake model server.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::support::{text, FakeLlm, Node, NodeOpts, Subscription};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_reply_reaches_a_watcher_piece_by_piece_before_the_task_ends() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let gate = dir.path().join("open");
    let server = FakeLlm::start(&["--hold", &gate.to_string_lossy()]).await?;
    let node = Node::start(NodeOpts::named("solo")).await?;
    let input = json!({
        "name": "talker",
        "backend": { "llm": { "baseUrl": server.url(), "model": "tiny", "stream": true } },
    });
    let agent = text(&node.spawn_agent(input).await?, "/id")?;
    // The model's answer waits at the gate: nothing streams before the watcher is live.
    let task = node.submit_to(&agent, json!("one two three four")).await?;
    let q = "subscription($id: ID!) { taskOutput(id: $id) { taskId step text } }";
    let mut sub = Subscription::start(&node, q, json!({ "id": task })).await?;
    let live = sub.next_with_deadline().await?.context("the stream ended at once")?;
    ensure!(
        live["taskOutput"]["step"] == 0 && live["taskOutput"]["text"] == "",
        "{live}"
    );
    std::fs::write(&gate, "")?;
    let mut pieces = Vec::new();
    // The stream ends when the task does.
    while let Some(data) = sub.next_with_deadline().await? {
        let piece = &data["taskOutput"];
        ensure!(piece["taskId"] == task.as_str() && piece["step"] == 1, "{piece}");
        pieces.push(piece["text"].as_str().unwrap_or_default().to_owned());
    }
    let done = node.wait_task_state(&task, "SUCCEEDED").await?;
    ensure!(pieces.len() == 5, "one piece per word: {pieces:?}");
    ensure!(
        done["result"]["content"] == pieces.concat().as_str(),
        "{done} against {pieces:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_of_one_session_carry_its_conversation_and_other_sessions_do_not() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("requests.jsonl");
    let server = FakeLlm::start(&["--log", &log.to_string_lossy()]).await?;
    let node = Node::start(NodeOpts::named("solo")).await?;
    let input = json!({
        "name": "chatty",
        "backend": { "llm": { "baseUrl": server.url(), "model": "tiny", "systemPrompt": "be brief" } },
    });
    let agent = text(&node.spawn_agent(input).await?, "/id")?;
    let run = |payload: &'static str, session: &'static str| {
        let node = &node;
        let agent = agent.clone();
        async move {
            let input = json!({ "agentId": agent, "payload": payload, "session": session });
            let id = text(&node.submit(input).await?, "/id")?;
            node.wait_task_state(&id, "SUCCEEDED").await
        }
    };
    run("my name is Ada", "s1").await?;
    run("unrelated", "s2").await?;
    let done = run("what is my name?", "s1").await?;
    let q = "query($id: ID!) { task(id: $id) { session } }";
    let shown = node.gql_ok(q, json!({ "id": done["id"] })).await?;
    ensure!(shown["task"]["session"] == "s1", "{shown}");
    let requests: Vec<Value> = std::fs::read_to_string(&log)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    ensure!(requests.len() == 3, "{requests:?}");
    let said = |r: &Value| -> Vec<(String, String)> {
        r["body"]["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    m["role"].as_str().unwrap_or("").to_owned(),
                    m["content"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    };
    let pair = |r: &str, c: &str| (r.to_owned(), c.to_owned());
    ensure!(
        said(&requests[1]) == [pair("system", "be brief"), pair("user", "unrelated")],
        "another session starts afresh: {:?}",
        said(&requests[1])
    );
    ensure!(
        said(&requests[2])
            == [
                pair("system", "be brief"),
                pair("user", "my name is Ada"),
                pair("assistant", "echo: my name is Ada"),
                pair("user", "what is my name?"),
            ],
        "{:?}",
        said(&requests[2])
    );
    Ok(())
}

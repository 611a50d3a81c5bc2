//! The message dead-letter queue keeps what it holds: a replay that cannot be sent leaves the
//! message in the queue, two replays of one message never run at once, and a message a full
//! mailbox refuses on publish is dead-lettered and counted as refused, not as queued.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::support::messages::SEND;
use super::support::{error_code, expect_code, text, Gate, Node, NodeOpts};

const DEAD: &str = "{ messageDeadLetters { id to reason } }";
const REPLAY: &str = "mutation($id: ID!) { replayMessage(id: $id) { reply } }";

async fn dead_letters(node: &Node) -> Result<Vec<Value>> {
    let dead = node.gql_ok(DEAD, json!({})).await?;
    Ok(dead["messageDeadLetters"].as_array().context("dead letters")?.clone())
}

/// The id of the dead letter addressed to `agent`.
async fn dead_letter_to(node: &Node, agent: &str) -> Result<String> {
    let dead = dead_letters(node).await?;
    let found = dead.iter().find(|d| d["to"] == agent).context("no dead letter")?;
    text(found, "/id")
}

#[tokio::test]
async fn a_replay_that_cannot_be_sent_keeps_the_message_and_a_second_replay_waits_its_turn() -> Result<()> {
    let node = Node::start(NodeOpts::named("replays")).await?;
    // A message to a stopped agent is dead; replayed after the agent is removed, the replay
    // fails and the message must still be in the queue.
    let echo = node.spawn_builtin("echo", &[]).await?;
    node.gql_ok(
        "mutation($id: ID!) { stopAgent(id: $id) { state } }",
        json!({ "id": echo }),
    )
    .await?;
    expect_code(
        &node.gql(SEND, json!({ "to": echo, "payload": 1 })).await?,
        "UNAVAILABLE",
    )?;
    let lost = dead_letter_to(&node, &echo).await?;
    node.gql_ok(
        "mutation($id: ID!) { removeAgent(id: $id) { id } }",
        json!({ "id": echo }),
    )
    .await?;
    let failed = node.gql(REPLAY, json!({ "id": lost })).await?;
    ensure!(failed["errors"].is_array(), "{failed}");
    ensure!(
        dead_letters(&node).await?.iter().any(|d| d["id"] == lost.as_str()),
        "the failed replay lost the dead letter"
    );

    // A message held by a gated agent is being replayed: a second replay is refused rather
    // than delivered a second time, and the answered one leaves the queue.
    let (agent, _) = node.start_gated_agent(&[]).await?;
    node.gql_ok(
        "mutation($id: ID!) { stopAgent(id: $id) { state } }",
        json!({ "id": agent }),
    )
    .await?;
    let gate = Gate::new()?;
    let payload = json!({ "gate": gate.path().display().to_string() });
    expect_code(
        &node.gql(SEND, json!({ "to": agent, "payload": payload })).await?,
        "UNAVAILABLE",
    )?;
    let held = dead_letter_to(&node, &agent).await?;
    node.gql_ok(
        "mutation($id: ID!) { startAgent(id: $id) { state } }",
        json!({ "id": agent }),
    )
    .await?;
    node.wait_agent_state(&agent, "RUNNING").await?;
    let (first, second) = tokio::join!(node.gql(REPLAY, json!({ "id": held })), async {
        node.wait_gated_received().await?;
        let second = node.gql(REPLAY, json!({ "id": held })).await;
        gate.open()?;
        second
    });
    let (first, second) = (first?, second?);
    ensure!(first["data"]["replayMessage"]["reply"] == payload, "{first}");
    ensure!(error_code(&second).as_deref() == Some("CONFLICT"), "{second}");
    ensure!(
        !dead_letters(&node).await?.iter().any(|d| d["id"] == held.as_str()),
        "an answered replay stays in the queue"
    );
    Ok(())
}

#[tokio::test]
async fn a_publish_that_a_full_mailbox_refuses_is_dead_lettered_and_counted_as_refused() -> Result<()> {
    let node = Node::start(NodeOpts::named("full-publish").arg("--agent-mailbox-size", 1)).await?;
    let (agent, _) = node.start_gated_agent(&["news"]).await?;
    let gate = Gate::new()?;
    let held = json!({ "gate": gate.path().display().to_string() });
    // The first message is in the agent's hands; the second fills the one-message mailbox.
    let (first, second, published) = tokio::join!(
        node.gql(SEND, json!({ "to": agent, "payload": held })),
        async {
            node.wait_gated_received().await?;
            node.gql(SEND, json!({ "to": agent, "payload": { "n": 2 } })).await
        },
        async {
            node.wait_gated_received().await?;
            // The one in its hands and the one in its mailbox.
            node.wait_messages_waiting(&agent, 2).await?;
            let published = node
                .gql_ok(
                    "mutation { publish(topic: \"news\", payload: { n: 3 }) { queued refused missingNodes } }",
                    json!({}),
                )
                .await;
            gate.open()?;
            published
        },
    );
    ensure!(first?["errors"].is_null() && second?["errors"].is_null());
    let published = published?;
    ensure!(
        published["publish"] == json!({ "queued": 0, "refused": 1, "missingNodes": [] }),
        "{published}"
    );
    let dead = dead_letters(&node).await?;
    ensure!(
        dead.iter()
            .any(|d| d["to"] == agent.as_str() && d["reason"].as_str().unwrap_or_default().contains("full")),
        "{dead:?}"
    );
    Ok(())
}

//! graphql-transport-ws as its specification defines it: the close codes, keep-alive pings,
//! the caps on connections and subscriptions, and the message size limit.

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;

use super::support::{Incoming, Node, NodeOpts, Subscription};

const EVENTS: &str = "subscription { events { seq } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_close_with_the_codes_the_protocol_names() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo").arg("--ws-init-timeout-ms", 300)).await?;

    // No connection_init in time: 4408.
    let mut silent = Subscription::connect(&node.addr).await?;
    ensure!(silent.expect_close().await?.0 == Some(4408), "init timeout");

    // A subscribe before the connection is acknowledged: 4401.
    let mut early = Subscription::connect(&node.addr).await?;
    early.subscribe(EVENTS, json!({})).await?;
    ensure!(early.expect_close().await?.0 == Some(4401), "subscribe before ack");

    // connection_init without a valid token: 4403, never an ack.
    for token in [None, Some("trp_nope")] {
        match Subscription::init(&node.addr, token).await? {
            Ok(_) => bail!("connection_init with {token:?} was acked"),
            Err((code, _)) => ensure!(code == Some(4403), "token {token:?}: close {code:?}"),
        }
    }

    // A second subscription under an id in use: 4409.
    let mut twice = Subscription::start(&node, EVENTS, json!({})).await?;
    twice.subscribe(EVENTS, json!({})).await?;
    let (code, reason) = twice.expect_close().await?;
    ensure!(
        code == Some(4409) && reason.contains("already exists"),
        "{code:?} {reason}"
    );

    // A second connection_init: 4429.
    let Ok(mut again) = Subscription::init(&node.addr, Some(node.token.as_str())).await? else {
        bail!("admin token not acked");
    };
    again
        .send(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {}", node.token) } }))
        .await?;
    ensure!(again.expect_close().await?.0 == Some(4429), "second init");

    // Not a protocol message: 4400.
    let Ok(mut garbled) = Subscription::init(&node.addr, Some(node.token.as_str())).await? else {
        bail!("admin token not acked");
    };
    garbled.send_text("{\"type\":\"nonsense\"}".into()).await?;
    let (code, reason) = garbled.expect_close().await?;
    ensure!(code == Some(4400), "unknown message type: {code:?} {reason}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_pings_and_answers_pings() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo").arg("--ws-keepalive-ms", 200)).await?;
    let Ok(mut conn) = Subscription::init(&node.addr, Some(node.token.as_str())).await? else {
        bail!("admin token not acked");
    };
    conn.send(json!({ "type": "ping" })).await?;
    let (mut pong, mut ping) = (false, false);
    while !(pong && ping) {
        match conn.recv().await? {
            Incoming::Json(m) if m["type"] == "pong" => pong = true,
            Incoming::Json(m) if m["type"] == "ping" => ping = true,
            other => bail!("unexpected {other:?}"),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_and_subscriptions_per_connection_are_capped() -> Result<()> {
    let opts = NodeOpts::named("solo")
        .arg("--ws-max-connections", 2)
        .arg("--ws-max-subscriptions", 1);
    let node = Node::start(opts).await?;
    let mut first = Subscription::start(&node, EVENTS, json!({})).await?;
    let _second = Subscription::connect(&node.addr).await?;
    let third = Subscription::connect(&node.addr).await;
    let refused = match third {
        Err(e) => e.to_string(),
        Ok(_) => bail!("a third connection was accepted with a cap of 2"),
    };
    ensure!(refused.contains("503"), "the third connection: {refused}");

    first.subscribe_as("2", EVENTS, json!({})).await?;
    loop {
        match first.recv().await? {
            Incoming::Json(m) if m["type"] == "error" => {
                ensure!(
                    m["id"] == "2" && m["payload"][0]["extensions"]["code"] == "BACKPRESSURE",
                    "{m}"
                );
                break;
            }
            Incoming::Json(m) if m["type"] == "ping" || m["type"] == "next" => {}
            other => bail!("expected an error for the second subscription, got {other:?}"),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_closes_the_socket_with_1009() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo").arg("--body-limit-bytes", 300_000)).await?;
    let Ok(mut conn) = Subscription::init(&node.addr, Some(node.token.as_str())).await? else {
        bail!("admin token not acked");
    };
    let big = json!({ "id": "1", "type": "subscribe", "payload": { "query": EVENTS, "variables": { "pad": "x".repeat(400_000) } } });
    conn.send(big).await?;
    let (code, reason) = conn.expect_close().await?;
    ensure!(code == Some(1009), "close {code:?} {reason}");
    let (status, _) = node.get("/healthz").await?;
    ensure!(status == 200, "the node after an oversized frame: {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_with_a_syntax_error_gets_an_error_with_a_code() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let Ok(mut conn) = Subscription::init(&node.addr, Some(node.token.as_str())).await? else {
        bail!("admin token not acked");
    };
    conn.subscribe_as("bad", "subscription { events { ", json!({})).await?;
    expect_error(&mut conn, "bad", "INVALID_INPUT").await
}

/// Sends `payload` (a query or a mutation) under `id`: its one result, which must be
/// followed by the operation's `complete`.
async fn one_answer(conn: &mut Subscription, id: &str, payload: serde_json::Value) -> Result<serde_json::Value> {
    conn.send(json!({ "id": id, "type": "subscribe", "payload": payload }))
        .await?;
    let answer = conn
        .next_payload()
        .await?
        .with_context(|| format!("no answer to {id}"))?;
    ensure!(
        conn.next_payload().await?.is_none(),
        "{id}'s operation did not complete after {answer}"
    );
    Ok(answer)
}

/// Reads past pings to the `error` message for `id`, which must carry `code`.
async fn expect_error(conn: &mut Subscription, id: &str, code: &str) -> Result<()> {
    loop {
        match conn.recv().await? {
            Incoming::Json(m) if m["type"] == "error" => {
                ensure!(m["id"] == id && m["payload"][0]["extensions"]["code"] == code, "{m}");
                return Ok(());
            }
            Incoming::Json(m) if m["type"] == "ping" => {}
            other => bail!("expected an error {code} for {id}, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_over_the_socket_answers_as_over_http_with_its_commit_index_and_warnings() -> Result<()> {
    // graphql-transport-ws carries queries and mutations too: their answers carry what
    // HTTP's do in `extensions` (they carried nothing there).
    let node = Node::start(NodeOpts::named("solo")).await?;
    let Ok(mut conn) = Subscription::init(&node.addr, Some(node.token.as_str())).await? else {
        bail!("admin token not acked");
    };
    let create = "mutation { createToken(input: { role: VIEWER, name: \"over-ws\" }) { token { id } } }";
    let answer = one_answer(&mut conn, "m", json!({ "query": create })).await?;
    let index = answer["extensions"]["commitIndex"].as_i64();
    ensure!(
        index.is_some_and(|i| i > 0) && answer["data"]["createToken"]["token"]["id"].is_string(),
        "{answer}"
    );
    // A named subscription sent without `operationName` (as the dashboard's are) is one.
    // (From the last event now, so the next one comes whenever the stream starts.)
    let last = node.gql_ok("{ node { lastSeq } }", json!({})).await?["node"]["lastSeq"].clone();
    let live = "subscription Live($after: Int64) { events(after: $after, kinds: [\"TOKEN_CREATED\"]) { kind } }";
    conn.subscribe_as("s", live, json!({ "after": last })).await?;
    let create = "mutation { createToken(input: { role: VIEWER, name: \"seen-live\" }) { token { id } } }";
    node.gql_ok(create, json!({})).await?;
    let live = conn.next_payload().await?.context("the subscription completed")?;
    ensure!(live["data"]["events"]["kind"] == "TOKEN_CREATED", "{live}");
    conn.send(json!({ "id": "s", "type": "complete" })).await?;
    // A task for a capability no agent has: the warning HTTP gives.
    let submit = "mutation { submitTask(input: { capability: \"nobody-has-it\", payload: {} }) { id } }";
    let answer = one_answer(&mut conn, "t", json!({ "query": submit })).await?;
    let warnings = answer["extensions"]["warnings"].as_array().cloned().unwrap_or_default();
    ensure!(warnings.iter().any(|w| w["code"] == "NO_AGENT"), "{answer}");
    // And a read may name a commit index to be served after, as over HTTP.
    let payload = json!({ "query": "{ tokens { name } }", "extensions": { "minCommitIndex": index } });
    let answer = one_answer(&mut conn, "r", payload).await?;
    let names = answer["data"]["tokens"].as_array().cloned().unwrap_or_default();
    ensure!(names.iter().any(|t| t["name"] == "over-ws"), "{answer}");
    let payload = json!({ "query": "{ tokens { name } }", "extensions": { "minCommitIndex": "soon" } });
    conn.send(json!({ "id": "bad", "type": "subscribe", "payload": payload }))
        .await?;
    expect_error(&mut conn, "bad", "INVALID_INPUT").await
}

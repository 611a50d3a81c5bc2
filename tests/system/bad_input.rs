//! Bad input of every kind gets a precise error, and the node keeps serving and keeps
//! what it had.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::{expect_code, int, text, Node, NodeOpts, WAIT};

const SPAWN: &str = "mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }";
const SUBMIT: &str = "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id } }";

fn has_errors(body: &Value) -> bool {
    body["errors"].as_array().is_some_and(|e| !e.is_empty())
}

async fn count(node: &Node, list: &str) -> Result<i64> {
    let data = node
        .gql_ok(&format!("{{ {list} {{ totalCount }} }}"), json!({}))
        .await?;
    int(&data, &format!("/{list}/totalCount"))
}

/// Reads one response head byte by byte (so nothing after it is consumed); its status and
/// Content-Length.
async fn read_head(stream: &mut (impl AsyncRead + Unpin)) -> Result<(u16, usize)> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(
            stream
                .read_u8()
                .await
                .context("connection ended inside a response head")?,
        );
        ensure!(head.len() < 64 * 1024, "response head too long");
    }
    let head = String::from_utf8_lossy(&head);
    let code = head.split_whitespace().nth(1).context("no status code")?;
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim().parse())
        .transpose()?
        .unwrap_or(0);
    Ok((code.parse()?, length))
}

/// Reads one whole response with a Content-Length: its status and body.
async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> Result<(u16, String)> {
    let (status, length) = read_head(stream).await?;
    let mut body = vec![0; length];
    stream
        .read_exact(&mut body)
        .await
        .context("the response body ended early")?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// POSTs a `len`-byte GraphQL body with `Expect: 100-continue`, so a server that rejects
/// it by Content-Length answers before the body is sent; the final status and body.
async fn post_oversized(node: &Node, len: usize) -> Result<(u16, String)> {
    post_oversized_to(node, "/graphql", len).await
}

async fn post_oversized_to(node: &Node, path: &str, len: usize) -> Result<(u16, String)> {
    let (prefix, suffix) = (r#"{"query":"{ node { name } }","variables":{"pad":""#, r#""}}"#);
    let body = format!("{prefix}{}{suffix}", "x".repeat(len - prefix.len() - suffix.len()));
    let mut stream = TcpStream::connect(&node.addr).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\n\
         Expect: 100-continue\r\nConnection: close\r\n\r\n",
        node.addr, node.token
    );
    stream.write_all(head.as_bytes()).await?;
    // RFC 9110 lets a client send the body anyway when no interim answer comes soon.
    if let Ok(head) = tokio::time::timeout(Duration::from_secs(2), read_head(&mut stream)).await {
        let (status, length) = head?;
        if status != 100 {
            let mut body = vec![0; length];
            stream
                .read_exact(&mut body)
                .await
                .context("the response body ended early")?;
            return Ok((status, String::from_utf8_lossy(&body).into_owned()));
        }
    }
    // The server may stop reading once over the limit: a failed write is not the answer.
    let _ = stream.write_all(body.as_bytes()).await;
    tokio::time::timeout(WAIT, read_response(&mut stream))
        .await
        .context("no answer to the oversized body")?
}

/// POSTs a GraphQL body of `len` bytes in chunks, with no Content-Length, so the limit is
/// only found while it is read; the status and body.
async fn post_chunked(node: &Node, len: usize) -> Result<(u16, String)> {
    let (prefix, suffix) = (r#"{"query":"{ node { name } }","variables":{"pad":""#, r#""}}"#);
    let body = format!("{prefix}{}{suffix}", "x".repeat(len - prefix.len() - suffix.len()));
    let mut stream = TcpStream::connect(&node.addr).await?;
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        node.addr, node.token
    );
    stream.write_all(head.as_bytes()).await?;
    let (mut reader, mut writer) = stream.into_split();
    // Written beside the read: the server may answer, and stop reading, before the end.
    let writing = tokio::spawn(async move {
        for chunk in body.as_bytes().chunks(64 * 1024) {
            let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
            framed.extend_from_slice(chunk);
            framed.extend_from_slice(b"\r\n");
            if writer.write_all(&framed).await.is_err() {
                return;
            }
        }
        let _ = writer.write_all(b"0\r\n\r\n").await;
        // Kept open until the answer is read.
        std::future::pending::<()>().await;
    });
    let answer = tokio::time::timeout(WAIT, read_response(&mut reader)).await;
    writing.abort();
    answer.context("no answer to the chunked body")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_errors_and_node_keeps_serving() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    for query in ["{ agents { ", "{ nope }", "mutation { spawnAgent { id } }"] {
        let (status, body) = node
            .post_graphql(Some(node.token.as_str()), &json!({ "query": query }))
            .await?;
        ensure!(status == 200 || status == 400, "`{query}`: HTTP {status} {body}");
        ensure!(has_errors(&body), "`{query}` gave no errors: {body}");
    }
    let (status, body) = node.post_raw("this is not json").await?;
    ensure!((400..500).contains(&status), "non-JSON body: HTTP {status} {body}");
    for raw in ["this is not json", "", r#"{"query": 1}"#] {
        let (status, body) = node.post_raw(raw).await?;
        let body: Value = serde_json::from_str(&body).with_context(|| format!("`{raw}`: HTTP {status} {body}"))?;
        expect_code(&body, "INVALID_INPUT").with_context(|| format!("`{raw}`"))?;
        let message = text(&body, "/errors/0/message")?;
        ensure!(
            !message.contains("InvalidRequest(") && !message.contains("Error("),
            "`{raw}`: a debug message: {message}"
        );
    }
    // JSON that is no GraphQL request is refused as non-JSON is: HTTP 400.
    for raw in [r#"{"q": 1}"#, "[]", "{}"] {
        let (status, body) = node.post_raw(raw).await?;
        ensure!(status == 400, "`{raw}`: HTTP {status} {body}");
        let body: Value = serde_json::from_str(&body).with_context(|| format!("`{raw}`: {body}"))?;
        expect_code(&body, "INVALID_INPUT").with_context(|| format!("`{raw}`"))?;
    }
    // A syntax error says which code it is, as every other refused document does.
    let (status, body) = node
        .post_graphql(Some(node.token.as_str()), &json!({ "query": "{ agents { " }))
        .await?;
    expect_code(&body, "INVALID_INPUT").with_context(|| format!("syntax error: HTTP {status}"))?;
    // So does an argument whose value does not parse or is out of its range, inline or in a
    // variable, and a variable not given.
    let refused = [
        (
            "mutation { submitTask(input: { capability: \"x\", payload: 1, deadline: \"nope\" }) { id } }",
            json!({}),
        ),
        ("{ events(after: \"5x\") { seq } }", json!({})),
        ("query($a: Int64) { events(after: $a) { seq } }", json!({ "a": "abc" })),
        ("{ alertDeliveries(first: -1) { id } }", json!({})),
        (
            "mutation($i: SubmitTaskInput!) { submitTask(input: $i) { id } }",
            json!({}),
        ),
    ];
    for (query, variables) in refused {
        let body = node.gql(query, variables).await?;
        expect_code(&body, "INVALID_INPUT").with_context(|| format!("`{query}`: {body}"))?;
    }
    // A page asked larger than its bound comes back at the bound, and says so (it came back
    // shorter without a word).
    let (_, body) = node
        .post_graphql(
            Some(node.token.as_str()),
            &json!({ "query": "{ tasks(first: 5000) { nodes { id } } }" }),
        )
        .await?;
    ensure!(
        body["data"]["tasks"]["nodes"].is_array()
            && body["extensions"]["warnings"][0]["code"] == "PAGE_CAPPED"
            && body["extensions"]["warnings"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("at most 500")),
        "{body}"
    );

    let data = node.gql_ok("{ node { name } }", json!({})).await?;
    ensure!(data["node"]["name"] == "solo", "{data}");
    Ok(())
}

/// 2 KB of fragments, each spreading the one before twice: 2^30 selections once inlined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_of_chained_fragments_is_refused_at_once_and_node_keeps_serving() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let viewer = node.create_token("viewer").await?;
    let mut query = String::from("query { ...F30 }\nfragment F0 on Query { node { name } }\n");
    for level in 1..=30 {
        query.push_str(&format!(
            "fragment F{level} on Query {{ ...F{0} ...F{0} }}\n",
            level - 1
        ));
    }
    let (status, body) = node
        .post_graphql(Some(viewer.as_str()), &json!({ "query": query }))
        .await?;
    expect_code(&body, "INVALID_INPUT").with_context(|| format!("HTTP {status}"))?;
    let message = text(&body, "/errors/0/message")?;
    ensure!(message.contains("fragments are inlined"), "{message}");
    let data = node.gql_ok("{ node { name } }", json!({})).await?;
    ensure!(data["node"]["name"] == "solo", "{data}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_not_found_and_lookups_return_null() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let stop = "mutation($id: ID!) { stopAgent(id: $id) { id state } }";
    let cancel = "mutation($id: ID!) { cancelTask(id: $id) { id state } }";
    expect_code(&node.gql(stop, json!({ "id": "nope" })).await?, "NOT_FOUND")?;
    expect_code(&node.gql(cancel, json!({ "id": "nope" })).await?, "NOT_FOUND")?;
    let data = node
        .gql_ok("{ agent(id: \"nope\") { id } task(id: \"nope\") { id } }", json!({}))
        .await?;
    ensure!(data["agent"].is_null() && data["task"].is_null(), "unknown ids: {data}");

    // Stopping twice: the second is a conflict, not a success.
    let echo = node.spawn_builtin("echo", &[]).await?;
    node.gql_ok(stop, json!({ "id": echo })).await?;
    node.wait_agent_state(&echo, "STOPPED").await?;
    expect_code(&node.gql(stop, json!({ "id": echo })).await?, "CONFLICT")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_agent_specs_are_rejected_with_invalid_input() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let exec = |spec: Value| json!({ "name": "bad", "backend": { "exec": spec } });
    let cases = [
        ("empty command", exec(json!({ "command": [] }))),
        (
            "negative timeoutMs",
            exec(json!({ "command": ["/bin/true"], "timeoutMs": -1 })),
        ),
        (
            "unknown builtin",
            json!({ "name": "bad", "backend": { "builtin": { "kind": "nope" } } }),
        ),
        (
            "maxConcurrentTasks 0",
            json!({ "name": "bad", "backend": { "builtin": { "kind": "echo" } }, "maxConcurrentTasks": 0 }),
        ),
    ];
    for (what, input) in cases {
        let body = node.gql(SPAWN, json!({ "input": input })).await?;
        expect_code(&body, "INVALID_INPUT").with_context(|| what.to_string())?;
    }
    let both = json!({ "name": "bad", "backend": { "builtin": { "kind": "echo" }, "exec": { "command": ["cat"] } } });
    let body = node.gql(SPAWN, json!({ "input": both })).await?;
    ensure!(
        has_errors(&body),
        "a backend with both exec and builtin was accepted: {body}"
    );
    ensure!(count(&node, "agents").await? == 0, "a rejected spec created an agent");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tasks_are_rejected_with_invalid_input() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let echo = node.spawn_builtin("echo", &["echo"]).await?;
    let big = "x".repeat(300_000);
    let cases = [
        (
            "agentId and capability",
            json!({ "agentId": echo, "capability": "echo", "payload": 1 }),
        ),
        ("neither agentId nor capability", json!({ "payload": 1 })),
        (
            "maxAttempts 0",
            json!({ "agentId": echo, "payload": 1, "maxAttempts": 0 }),
        ),
        ("payload over 256 KiB", json!({ "agentId": echo, "payload": big })),
    ];
    for (what, input) in cases {
        let body = node.gql(SUBMIT, json!({ "input": input })).await?;
        expect_code(&body, "INVALID_INPUT").with_context(|| what.to_string())?;
    }
    ensure!(count(&node, "tasks").await? == 0, "a rejected task was queued");

    let fits = "x".repeat(200_000);
    let id = node.submit_to(&echo, json!(fits)).await?;
    let done = node.wait_task_state(&id, "SUCCEEDED").await?;
    ensure!(
        done["result"] == fits.as_str(),
        "a 200 KB payload did not come back whole"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_gets_413_and_earlier_work_survives() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let echo = node.spawn_builtin("echo", &[]).await?;
    let before = node.submit_to(&echo, json!({ "keep": "me" })).await?;
    node.wait_task_state(&before, "SUCCEEDED").await?;

    let (status, body) = post_oversized(&node, 1_200_000).await?;
    ensure!(status == 413, "a 1.2 MB body got HTTP {status}, want 413");
    let body: Value = serde_json::from_str(&body).with_context(|| format!("413 with {body}"))?;
    expect_code(&body, "INVALID_INPUT")?;
    ensure!(text(&body, "/errors/0/message")?.contains("body_limit_bytes"), "{body}");
    let (status, body) = post_chunked(&node, 1_200_000).await?;
    ensure!(
        status == 413,
        "a 1.2 MB chunked body got HTTP {status}, want 413: {body}"
    );
    let body: Value = serde_json::from_str(&body).with_context(|| format!("413 with {body}"))?;
    expect_code(&body, "INVALID_INPUT")?;
    // On /mcp, said as JSON-RPC says an error, which an MCP client shows.
    let (status, body) = post_oversized_to(&node, "/mcp", 1_200_000).await?;
    let body: Value = serde_json::from_str(&body).with_context(|| format!("413 with {body}"))?;
    ensure!(
        status == 413 && body["jsonrpc"] == "2.0" && text(&body, "/error/message")?.contains("body_limit_bytes"),
        "{status} {body}"
    );
    let (status, body) = node
        .post_graphql(Some(node.token.as_str()), &json!({ "query": "{ agents { " }))
        .await?;
    ensure!(has_errors(&body), "malformed query: HTTP {status} {body}");

    let kept = node.task(&before).await?;
    ensure!(
        kept["state"] == "SUCCEEDED" && kept["result"] == json!({ "keep": "me" }),
        "{kept}"
    );
    let after = node.submit_to(&echo, json!("after")).await?;
    let done = node.wait_task_state(&after, "SUCCEEDED").await?;
    ensure!(done["result"] == "after", "{done}");
    ensure!(text(&done, "/id")? == after, "{done}");
    Ok(())
}

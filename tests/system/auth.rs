//! Authentication and roles over HTTP and WebSocket, tokens from the CLI, and the
//! admin token file's permissions.

use std::os::unix::fs::PermissionsExt;

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;

use super::support::{expect_code, int, text, Deadline, Node, NodeOpts, Subscription};

const SPAWN: &str = "mutation { spawnAgent(input: { name: \"e\", backend: { builtin: { kind: \"echo\" } } }) { id } }";
const SUBMIT: &str = "mutation($agent: ID!) { submitTask(input: { agentId: $agent, payload: 1 }) { id } }";

async fn agent_count(node: &Node) -> Result<i64> {
    let data = node.gql_ok("{ agents { totalCount } }", json!({})).await?;
    int(&data, "/agents/totalCount")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_without_a_valid_token_is_unauthenticated_but_probes_are_open() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let body = json!({ "query": "{ node { name } }" });
    let wrong = format!("{}x", node.token);
    for token in [None, Some("nope"), Some(wrong.as_str())] {
        let (status, reply) = node.post_graphql(token, &body).await?;
        ensure!(status == 401, "token {token:?}: HTTP {status} {reply}");
        ensure!(reply["data"].is_null(), "token {token:?} got data: {reply}");
        expect_code(&reply, "UNAUTHENTICATED")?;
    }
    let (status, reply) = node.post_graphql(Some(node.token.as_str()), &body).await?;
    ensure!(
        status == 200 && reply["data"]["node"]["name"] == "solo",
        "admin token: {status} {reply}"
    );

    for path in ["/healthz", "/metrics", "/graphiql"] {
        let (status, page) = node.get(path).await?;
        ensure!(status == 200, "{path} without a token: {status} {page}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_token_can_query_but_not_mutate() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let echo = node.spawn_builtin("echo", &[]).await?;
    let viewer = node.create_token("viewer").await?;
    ensure!(viewer != node.token, "token create returned the admin token");

    let data = node
        .gql_ok_as(&viewer, "{ agents { totalCount } node { name } }", json!({}))
        .await?;
    ensure!(data["agents"]["totalCount"] == 1, "viewer query: {data}");

    let (status, reply) = node
        .post_graphql(Some(viewer.as_str()), &json!({ "query": SPAWN }))
        .await?;
    ensure!(
        status == 200,
        "FORBIDDEN is a GraphQL error on HTTP 200, got {status}: {reply}"
    );
    expect_code(&reply, "FORBIDDEN")?;
    ensure!(agent_count(&node).await? == 1, "a viewer's spawnAgent created an agent");

    let reply = node.gql_as(&viewer, SUBMIT, json!({ "agent": echo })).await?;
    expect_code(&reply, "FORBIDDEN")?;
    let q = "{ tasks { totalCount } }";
    ensure!(
        node.gql_ok(q, json!({})).await?["tasks"]["totalCount"] == 0,
        "a viewer's task was queued"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_token_can_spawn_submit_and_cancel() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let operator = node.create_token("operator").await?;
    let data = node.gql_ok_as(&operator, SPAWN, json!({})).await?;
    let agent = text(&data, "/spawnAgent/id")?;
    let data = node.gql_ok_as(&operator, SUBMIT, json!({ "agent": agent })).await?;
    let id = text(&data, "/submitTask/id")?;
    let done = node.wait_task_state(&id, "SUCCEEDED").await?;
    ensure!(done["result"] == 1, "{done}");

    // Allowed to cancel: the answer is about the task (already done), not the role.
    let cancel = "mutation($id: ID!) { cancelTask(id: $id) { id } }";
    let reply = node.gql_as(&operator, cancel, json!({ "id": id })).await?;
    expect_code(&reply, "CONFLICT")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_file_is_readable_by_owner_only() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let mode =
        |name: &str| -> Result<u32> { Ok(std::fs::metadata(node.data_dir().join(name))?.permissions().mode() & 0o777) };
    for file in ["admin.token", "troupe.redb", "gateway.addr"] {
        ensure!(mode(file)? == 0o600, "{file} mode is {:o}, want 600", mode(file)?);
    }
    ensure!(mode("")? == 0o700, "the data dir's mode is {:o}, want 700", mode("")?);
    let snapshots = mode("troupe.snapshots")?;
    ensure!(
        snapshots == 0o700,
        "the snapshots' directory mode is {snapshots:o}, want 700"
    );
    let log = mode("troupe.raftlog")?;
    ensure!(log == 0o700, "the Raft log's directory mode is {log:o}, want 700");
    ensure!(
        node.token.len() >= 16,
        "admin token looks too short to be secret: {:?}",
        node.token
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_without_a_valid_token_is_closed_instead_of_acked() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    for token in [None, Some("nope")] {
        match Subscription::init(&node.addr, token).await? {
            Ok(_) => bail!("connection_init with token {token:?} was acked"),
            Err((code, _)) => ensure!(code == Some(4403), "token {token:?}: close {code:?}"),
        }
    }

    // A viewer may subscribe.
    let viewer = node.create_token("viewer").await?;
    let Ok(mut sub) = Subscription::init(&node.addr, Some(viewer.as_str())).await? else {
        bail!("viewer token was not acked");
    };
    sub.subscribe("subscription { events { seq kind } }", json!({})).await?;
    node.spawn_builtin("echo", &[]).await?;
    let first = sub.next_with_deadline().await?;
    ensure!(
        first.as_ref().is_some_and(|d| d["events"]["kind"].is_string()),
        "viewer got {first:?}"
    );
    Ok(())
}

const CREATE: &str =
    "mutation($input: CreateTokenInput!) { createToken(input: $input) { secret token { id name role expiresAt } } }";
const REVOKE: &str = "mutation($id: ID!) { revokeToken(id: $id) { id revokedAt } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_tokens_over_graphql_and_a_revocation_takes_effect_at_once() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let operator = node.create_token("operator").await?;
    // Admin is more than operator: an operator cannot see or make tokens.
    let input = json!({ "input": { "role": "VIEWER", "name": "dashboard" } });
    expect_code(&node.gql_as(&operator, CREATE, input.clone()).await?, "FORBIDDEN")?;
    expect_code(
        &node.gql_as(&operator, "{ tokens { id } }", json!({})).await?,
        "FORBIDDEN",
    )?;

    let created = node.gql_ok(CREATE, input).await?["createToken"].clone();
    let secret = text(&created, "/secret")?;
    let id = text(&created, "/token/id")?;
    ensure!(
        created["token"]["role"] == "VIEWER" && created["token"]["name"] == "dashboard",
        "{created}"
    );
    node.gql_ok_as(&secret, "{ node { name } }", json!({})).await?;

    // The use is written without holding up the request that used the token: it is listed
    // once the write is applied.
    let deadline = Deadline::after(super::support::WAIT, "the token's use to be listed");
    let listed = loop {
        let listed = node
            .gql_ok("{ tokens { id name role createdAt lastUsedAt revokedAt } }", json!({}))
            .await?;
        let mine = listed["tokens"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["id"] == id.as_str()).cloned())
            .context("the new token is not listed")?;
        if mine["lastUsedAt"].is_string() {
            break listed;
        }
        deadline.tick(mine).await?;
    };
    let text_of_list = listed.to_string();
    ensure!(!text_of_list.contains(&secret), "a listing shows a secret");

    // A WebSocket opened with it is closed when it is revoked, and HTTP refuses it at once.
    let Ok(mut ws) = Subscription::init(&node.addr, Some(secret.as_str())).await? else {
        bail!("the new token was not acked");
    };
    // (Not the token's own events: TOKEN_REVOKED may reach the stream just before it closes.)
    ws.subscribe("subscription { events(kinds: [\"TASK_QUEUED\"]) { seq } }", json!({}))
        .await?;
    let revoked = node.gql_ok(REVOKE, json!({ "id": id })).await?;
    ensure!(revoked["revokeToken"]["revokedAt"].is_string(), "{revoked}");
    let (status, body) = node
        .post_graphql(Some(secret.as_str()), &json!({ "query": "{ node { name } }" }))
        .await?;
    ensure!(status == 401, "a revoked token still works: {status} {body}");
    expect_code(&body, "UNAUTHENTICATED")?;
    let (code, reason) = ws.expect_close().await?;
    ensure!(code == Some(4403) && reason.contains("revoked"), "{code:?} {reason}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let input = json!({ "input": { "role": "VIEWER", "name": "brief", "expiresInSeconds": 1 } });
    let created = node.gql_ok(CREATE, input).await?["createToken"].clone();
    let secret = text(&created, "/secret")?;
    ensure!(created["token"]["expiresAt"].is_string(), "{created}");
    let body = json!({ "query": "{ node { name } }" });
    let deadline = Deadline::after(super::support::WAIT, "the token to expire");
    loop {
        let (status, reply) = node.post_graphql(Some(secret.as_str()), &body).await?;
        if status == 401 {
            ensure!(reply.to_string().contains("expired"), "{reply}");
            break;
        }
        deadline.tick(format!("{status} {reply}")).await?;
    }
    for seconds in [json!(0), json!(i64::MAX), json!("9223372036854775807")] {
        let bad = json!({ "input": { "role": "VIEWER", "name": "x", "expiresInSeconds": seconds } });
        expect_code(&node.gql(CREATE, bad).await?, "INVALID_INPUT")?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_agent_never_sees_the_nodes_secrets() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    // The harness starts every node with TROUPE_COOKIE set: the node's own secret.
    let input = json!({
        "name": "env",
        "backend": { "exec": { "command": ["/bin/sh", "-c", "env | cut -d= -f1 | sort | tr '\\n' ' '"],
                               "env": [{ "name": "MINE", "value": "1" }] } },
    });
    let agent = text(&node.spawn_agent(input).await?, "/id")?;
    let id = node.submit_to(&agent, json!({})).await?;
    let done = node.wait_task_state(&id, "SUCCEEDED").await?;
    let names = text(&done, "/result")?;
    ensure!(!names.contains("TROUPE_COOKIE"), "the child saw the cookie: {names}");
    for want in ["MINE", "PATH", "TROUPE_TASK_ID", "TROUPE_TASK_ATTEMPT"] {
        ensure!(names.split_whitespace().any(|n| n == want), "{want} missing: {names}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_agent_inherits_no_descriptor_of_the_node() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    // What each open descriptor of the task's shell points to, but for its stdio.
    let input = json!({
        "name": "fds",
        "backend": { "exec": { "command": ["/bin/sh", "-c",
            "for f in /proc/$$/fd/*; do n=${f##*/}; [ \"$n\" -gt 2 ] && echo \"$n $(readlink $f)\"; done; true"] } },
    });
    let agent = text(&node.spawn_agent(input).await?, "/id")?;
    let id = node.submit_to(&agent, json!({})).await?;
    let done = node.wait_task_state(&id, "SUCCEEDED").await?;
    let open = done["result"].to_string();
    let data_dir = node.data_dir().canonicalize()?;
    ensure!(
        !open.contains(&*data_dir.to_string_lossy()) && !open.contains("socket:"),
        "the task inherited the node's descriptors: {open}"
    );
    Ok(())
}

//! GraphQL as the ecosystem's tools use it: the standard introspection query, the committed
//! SDL, the limits that refuse deep and costly queries, cursors, GraphiQL's pinned scripts,
//! and /metrics behind a token.

use anyhow::{ensure, Context, Result};
use serde_json::json;

use super::support::{expect_code, int, Node, NodeOpts, Subscription, WAIT};

const INTROSPECTION: &str = include_str!("../../gateway/src/schema/introspection.graphql");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_introspection_query_answers_over_http() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let body = node.gql(INTROSPECTION, json!({})).await?;
    ensure!(
        body.get("errors").is_none(),
        "introspection refused: {}",
        body["errors"]
    );
    let types = body["data"]["__schema"]["types"].as_array().context("types")?;
    ensure!(types.iter().any(|t| t["name"] == "Task"), "no Task type");
    let backend = types
        .iter()
        .find(|t| t["name"] == "BackendInput")
        .context("no BackendInput")?;
    ensure!(backend["kind"] == "INPUT_OBJECT", "{backend}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn troupe_schema_prints_the_committed_sdl() -> Result<()> {
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_troupe"))
            .arg("schema")
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    ensure!(
        out.status.success(),
        "troupe schema: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout)?;
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway/schema.graphql"))?;
    ensure!(
        printed == committed,
        "troupe schema differs from gateway/schema.graphql"
    );
    ensure!(printed.contains("input BackendInput @oneOf"), "@oneOf is not shown");
    ensure!(printed.contains("scalar Int64"), "no Int64 scalar");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_and_costly_queries_are_refused_and_ordinary_ones_answered() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let mut deep = String::from("{ supervisionTree {");
    for _ in 0..5 {
        deep.push_str(" children { supervisor {");
    }
    deep.push_str(" children { id }");
    deep.push_str(&" } }".repeat(5));
    deep.push_str(" } }");
    let body = node.gql(&deep, json!({})).await?;
    expect_code(&body, "INVALID_INPUT")?;

    let page = "tasks(first: 500) { nodes { id payload result } }";
    let body = node.gql(&format!("{{ a: {page} b: {page} }}"), json!({})).await?;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("complex"),
        "two aliased pages of 500 were not refused: {body}"
    );
    expect_code(&body, "INVALID_INPUT")?;
    expect_code(&node.gql("{ noSuchField }", json!({})).await?, "INVALID_INPUT")?;
    node.gql_ok(&format!("{{ {page} }}"), json!({})).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_from_the_future_is_refused_and_int64_takes_numbers_and_strings() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    node.spawn_builtin("echo", &[]).await?;
    let last = int(&node.gql_ok("{ node { lastSeq } }", json!({})).await?, "/node/lastSeq")?;
    let q = "query($after: Int64) { events(after: $after) { seq } }";
    expect_code(&node.gql(q, json!({ "after": last + 1000 })).await?, "INVALID_INPUT")?;
    // Past 2^31: valid Int64, still a cursor this node never reached.
    expect_code(
        &node.gql(q, json!({ "after": 5_000_000_000i64 })).await?,
        "INVALID_INPUT",
    )?;
    let from_string = node.gql_ok(q, json!({ "after": (last - 1).to_string() })).await?;
    ensure!(from_string["events"][0]["seq"] == last, "{from_string}");

    let sub = "subscription($after: Int64) { events(after: $after) { seq } }";
    let mut stream = Subscription::start(&node, sub, json!({ "after": last + 1000 })).await?;
    let err = stream
        .next_with_deadline()
        .await
        .expect_err("a future cursor must fail");
    ensure!(err.to_string().contains("INVALID_INPUT"), "{err:#}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiql_is_served_from_the_node_itself_with_pinned_files_and_a_strict_policy() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let resp = super::support::http_client()
        .build()?
        .get(node.url("/graphiql"))
        .send()
        .await?;
    ensure!(resp.status() == 200, "{}", resp.status());
    let csp = resp
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    ensure!(csp.contains("script-src 'self'") && !csp.contains("http"), "CSP: {csp}");
    let page = resp.text().await?;
    let refs: Vec<&str> = page
        .split(['"', '\''])
        .filter(|r| r.ends_with(".js") || r.ends_with(".css"))
        .collect();
    ensure!(refs.len() >= 4, "no scripts or styles found in:\n{page}");
    for r in refs {
        ensure!(r.starts_with("/graphiql/"), "loaded from elsewhere: {r}");
        let file = r.trim_start_matches("/graphiql/");
        ensure!(
            file.contains(|c: char| c.is_ascii_digit()) || ["start.js", "graphiql-page.css"].contains(&file),
            "not pinned to a version: {r}"
        );
        let (status, body) = node.get(r).await?;
        ensure!(status == 200 && !body.is_empty(), "{r}: {status}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_put_behind_a_token() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo").arg("--metrics-auth", "true")).await?;
    let (status, _) = node.get("/metrics").await?;
    ensure!(status == 401, "/metrics without a token: {status}");
    let viewer = node.create_token("viewer").await?;
    let resp = super::support::http_client()
        .build()?
        .get(node.url("/metrics"))
        .bearer_auth(&viewer)
        .send()
        .await?;
    ensure!(resp.status() == 200, "/metrics with a viewer token: {}", resp.status());
    ensure!(resp.text().await?.contains("troupe_"), "no Troupe metrics");
    Ok(())
}

//! The HTTP backend against a local server, an LLM agent's key kept from the node's own
//! secrets, and the limits and usage of process agents.

use anyhow::{bail, ensure, Result};
use serde_json::{json, Value};

use super::support::{error_code, int, text, FakeLlm, Node, NodeOpts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_agent_may_not_take_the_nodes_own_secrets_as_its_key() -> Result<()> {
    let keys = tempfile::tempdir()?;
    // Even an admin who allows the whole temporary directory (the data dir's parent) and
    // lists TROUPE_COOKIE does not give away the node's own secrets.
    let node = Node::start(
        NodeOpts::named("solo")
            .arg("--secret-dirs", std::env::temp_dir().display())
            .arg("--secret-env", "TROUPE_TEST_NOT_ALLOWED_ANYWAY,MY_KEY"),
    )
    .await;
    match node {
        Ok(_) => bail!("a TROUPE_* variable was accepted in secret_env"),
        Err(e) => ensure!(format!("{e:#}").contains("secret_env"), "{e:#}"),
    }
    let node = Node::start(
        NodeOpts::named("solo")
            .arg("--secret-dirs", std::env::temp_dir().display())
            .arg("--secret-env", "MY_KEY"),
    )
    .await?;
    let admin_token = node.data_dir().join("admin.token");
    ensure!(admin_token.exists(), "no admin token at {}", admin_token.display());
    let sneaky = keys.path().join("sneaky");
    std::os::unix::fs::symlink(&admin_token, &sneaky)?;
    let llm = |key: Value| {
        let mut backend = json!({ "baseUrl": "http://127.0.0.1:9", "model": "m" });
        if let Some(b) = backend.as_object_mut() {
            b.extend(key.as_object().cloned().unwrap_or_default());
        }
        json!({ "name": "thief", "backend": { "llm": backend } })
    };
    let create = "mutation($input: SpawnAgentInput!) { createAgent(input: $input) { id } }";
    let spawn = "mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }";
    let refused = [
        json!({ "apiKeyFile": admin_token.to_string_lossy() }),
        json!({ "apiKeyFile": node.data_dir().join("cookie").to_string_lossy() }),
        json!({ "apiKeyFile": sneaky.to_string_lossy() }),
        json!({ "apiKeyEnv": "TROUPE_COOKIE" }),
        json!({ "apiKeyEnv": "HOME" }),
    ];
    for key in refused {
        for mutation in [create, spawn] {
            let answer = node.gql(mutation, json!({ "input": llm(key.clone()) })).await?;
            ensure!(
                error_code(&answer).as_deref() == Some("FORBIDDEN"),
                "{key} was not refused: {answer}"
            );
            let message = answer["errors"][0]["message"].as_str().unwrap_or_default();
            ensure!(message.contains("apiKey"), "{message}");
        }
    }
    // Allowed, but not set on this node: a spawn (which starts the agent) is refused
    // before anything is made. It used to make the agent, which failed five starts.
    let unset = node
        .gql(spawn, json!({ "input": llm(json!({ "apiKeyEnv": "MY_KEY" })) }))
        .await?;
    ensure!(error_code(&unset).as_deref() == Some("INVALID_INPUT"), "{unset}");
    ensure!(
        unset["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("MY_KEY is not set on this node")),
        "{unset}"
    );
    let count = node.gql_ok("{ agents(first: 10) { totalCount } }", json!({})).await?;
    ensure!(count["agents"]["totalCount"] == 0, "an agent was made: {count}");
    // What the admin allows is accepted.
    std::fs::write(keys.path().join("good"), "k")?;
    for key in [
        json!({ "apiKeyFile": keys.path().join("good").to_string_lossy() }),
        json!({ "apiKeyEnv": "MY_KEY" }),
    ] {
        node.gql_ok(create, json!({ "input": llm(key) })).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_agent_fails_a_task_with_the_status_and_a_body_excerpt() -> Result<()> {
    let server = FakeLlm::start(&[]).await?;
    let node = Node::start(NodeOpts::named("solo")).await?;
    let input = json!({
        "name": "http",
        "backend": { "http": { "url": format!("{}/echo", server.url()), "headers": [{ "name": "X-Trace", "value": "t1" }] } },
    });
    let agent = text(&node.spawn_agent(input).await?, "/id")?;
    let out = node.run_on(&agent, json!({ "n": 1 })).await?;
    ensure!(
        out["payload"] == json!({ "n": 1 }) && out["headers"]["x-trace"] == "t1",
        "{out}"
    );
    let missing = json!({
        "name": "http-404",
        "backend": { "http": { "url": format!("{}/nowhere", server.url()) } },
    });
    let broken = text(&node.spawn_agent(missing).await?, "/id")?;
    let task = node
        .submit(json!({ "agentId": broken, "payload": 1, "maxAttempts": 1 }))
        .await?;
    let failed = node.wait_task_state(&text(&task, "/id")?, "DEAD").await?;
    ensure!(
        failed["error"].as_str().is_some_and(|e| e.contains("HTTP 404")),
        "{failed}"
    );
    let bad = node
        .gql(
            "mutation { spawnAgent(input: { name: \"x\", backend: { http: { url: \"ftp://x\" } } }) { id } }",
            json!({}),
        )
        .await?;
    ensure!(error_code(&bad).as_deref() == Some("INVALID_INPUT"), "{bad}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_agents_run_under_their_rlimits_and_report_usage() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let limits = json!({ "limits": { "openFiles": 77, "cpuSeconds": 600, "memoryMiB": 4096, "cpuCores": 0.5 } });
    let agent = node.spawn_process("limited", json!({}), limits).await?;
    let (pid, _) = node.agent_pid(&agent).await?;
    let table = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_owned()
    };
    ensure!(line("Max open files").contains("77"), "{table}");
    ensure!(line("Max cpu time").contains("600"), "{table}");
    ensure!(
        line("Max address space").contains(&(4096u64 << 20).to_string()),
        "{table}"
    );
    node.run_on(&agent, json!({ "op": "spin", "ms": 300 })).await?;
    let q =
        "query($id: ID!) { agent(id: $id) { limits { openFiles enforcement } usage { rssBytes cpuSeconds processes } \
             health { healthy lastHeartbeat successRate latencyP50Ms tasksInFlight } } }";
    let seen = node.gql_ok(q, json!({ "id": agent })).await?["agent"].clone();
    ensure!(
        seen["limits"]["openFiles"] == 77 && seen["limits"]["enforcement"] == "rlimit",
        "{seen}"
    );
    ensure!(
        int(&seen, "/usage/rssBytes")? > 0 && seen["usage"]["cpuSeconds"].as_f64() > Some(0.1),
        "{seen}"
    );
    ensure!(
        seen["health"]["healthy"] == true && seen["health"]["successRate"] == 1.0,
        "{seen}"
    );
    ensure!(seen["health"]["lastHeartbeat"].is_string(), "{seen}");
    let rss = super::support::metric(
        &node.metrics().await?,
        "troupe_agent_rss_bytes",
        &[&format!("agent=\"{agent}\"")],
    );
    ensure!(rss > 0.0, "troupe_agent_rss_bytes for the agent: {rss}");
    Ok(())
}

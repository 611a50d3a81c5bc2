//! GraphQL as the ecosystem's tools use it: the standard introspection query, the committed
//! SDL, the limits that refuse deep and costly queries, cursors, GraphiQL's pinned scripts,
//! and /metrics behind a token.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::support::{expect_code, int, text, Deadline, Node, NodeOpts, Subscription, WAIT};

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
    let first = node.spawn_builtin("echo", &[]).await?;
    node.spawn_builtin("echo", &[]).await?;
    // One entity's events, through the index by subject: the newest of them, or of a kind.
    let about = "query($s: ID, $k: [String!]) { events(subject: $s, kinds: $k, last: 50) { kind subject } }";
    let mine = node.gql_ok(about, json!({ "s": first })).await?;
    let mine = mine["events"].as_array().context("events")?.clone();
    ensure!(
        mine.len() >= 2 && mine.iter().all(|e| e["subject"] == json!(first)),
        "{mine:?}"
    );
    let spawned = node
        .gql_ok(about, json!({ "s": first, "k": ["AGENT_SPAWNED"] }))
        .await?;
    ensure!(
        spawned["events"] == json!([{ "kind": "AGENT_SPAWNED", "subject": first }]),
        "{spawned}"
    );
    // The subscription keeps the same: from the start, the first agent's events only.
    let sub = "subscription($s: ID) { events(after: 0, subject: $s) { kind subject } }";
    let mut stream = Subscription::start(&node, sub, json!({ "s": first })).await?;
    for kind in ["AGENT_SPAWNED", "AGENT_STARTED"] {
        let event = stream.next_with_deadline().await?.context("the stream ended")?;
        ensure!(event["events"] == json!({ "kind": kind, "subject": first }), "{event}");
    }
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
    // The newest instead of a page after a cursor, which the two do not mix with.
    let newest = node.gql_ok("{ events(last: 2) { seq } }", json!({})).await?;
    ensure!(
        newest["events"] == json!([{ "seq": last - 1 }, { "seq": last }]),
        "{newest}"
    );
    expect_code(
        &node.gql("{ events(after: 1, last: 2) { seq } }", json!({})).await?,
        "INVALID_INPUT",
    )?;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_made_for_a_data_dir_no_node_ran_in_says_where_it_works() -> Result<()> {
    // A token may be made before a node's first start; one made in a directory no node uses
    // (a typo) was made silently, and refused once the node ran elsewhere.
    let dir = tempfile::tempdir()?;
    let typo = dir.path().join("troupe-dta");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(["token", "create", "--role", "viewer", "--data-dir"])
        .arg(&typo)
        .output()
        .await?;
    let (stdout, stderr) = (String::from_utf8(out.stdout)?, String::from_utf8(out.stderr)?);
    ensure!(out.status.success(), "{stdout}{stderr}");
    ensure!(
        stdout.lines().count() == 1 && stdout.starts_with("trp_"),
        "the token alone on stdout: {stdout:?}"
    );
    ensure!(
        stderr.contains("no node has run with --data-dir") && stderr.contains("troupe-dta"),
        "{stderr}"
    );
    // In a node's data dir, nothing but the token (`Node::create_token` checks the rest).
    let node = Node::start(NodeOpts::named("solo")).await?;
    node.create_token("viewer").await?;
    Ok(())
}

/// Runs the command line against `node`: its exit code and what it printed.
async fn cli(node: &Node, args: &[&str]) -> Result<(i32, String, String)> {
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_troupe"))
            .args(args)
            .env("TROUPE_URL", format!("http://{}", node.addr))
            .env("TROUPE_TOKEN", &node.token)
            .output(),
    )
    .await??;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok((out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_lists_gets_by_name_submits_and_waits_with_exit_codes_that_mean_something() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let input = json!({ "name": "echoer", "backend": { "builtin": { "kind": "echo" } }, "capabilities": ["echo"] });
    let agent = text(&node.spawn_agent(input).await?, "/id")?;
    // A table for people, with the name.
    let (code, table, _) = cli(&node, &["agents", "list"]).await?;
    ensure!(
        code == 0 && table.starts_with("ID") && table.contains("echoer") && table.contains("RUNNING"),
        "{table}"
    );
    // By name, as JSON for scripts.
    let (code, json_out, _) = cli(&node, &["agents", "get", "echoer", "-o", "json"]).await?;
    let found: Value = serde_json::from_str(&json_out)?;
    ensure!(code == 0 && found[0]["id"] == agent.as_str(), "{json_out}");
    // With its breaker's state and its health.
    ensure!(
        found[0]["breaker"] == "CLOSED" && found[0]["health"] == true,
        "{json_out}"
    );
    // Submitted and waited for (over the WebSocket): the result, exit 0.
    let (code, done, err) = cli(
        &node,
        &[
            "submit",
            "--agent",
            "echoer",
            "--payload",
            r#"{"x":1}"#,
            "--wait",
            "-o",
            "json",
        ],
    )
    .await?;
    let done: Value = serde_json::from_str(&done).with_context(|| err.clone())?;
    ensure!(
        code == 0 && done[0]["state"] == "SUCCEEDED" && done[0]["result"]["x"] == 1,
        "{done} {err}"
    );
    // A task that fails: exit 1.
    let fail = json!({ "name": "failer", "backend": { "builtin": { "kind": "fail" } }, "capabilities": ["doomed"] });
    node.spawn_agent(fail).await?;
    let (code, _, err) = cli(&node, &["submit", "--capability", "doomed", "--wait"]).await?;
    ensure!(
        code == 1 && (err.contains("ended FAILED") || err.contains("ended DEAD")),
        "{code} {err}"
    );
    // Not found: 3; a bad token: 4; no node there: 5.
    let (code, _, err) = cli(&node, &["agents", "get", "nobody"]).await?;
    ensure!(code == 3 && err.contains("no agent nobody"), "{code} {err}");
    let (code, _, err) = cli(&node, &["agents", "list", "--token", "trp_wrong"]).await?;
    ensure!(code == 4 && err.contains("UNAUTHENTICATED"), "{code} {err}");
    let (code, _, _) = cli(&node, &["tasks", "list", "--url", "http://127.0.0.1:9"]).await?;
    ensure!(code == 5, "{code}");
    // Spawned from the command line: an exec agent from its argv (no shell splits it), and
    // any kind from a spec file; without anything to run, a usage error.
    let (code, out, err) = cli(
        &node,
        &[
            "agents",
            "spawn",
            "upper",
            "--capability",
            "upper",
            "--",
            "tr",
            "a-z",
            "A-Z",
        ],
    )
    .await?;
    ensure!(
        code == 0 && out.contains("upper") && out.contains("RUNNING"),
        "{code} {out} {err}"
    );
    let (code, done, err) = cli(
        &node,
        &[
            "submit",
            "--capability",
            "upper",
            "--payload",
            r#""hi""#,
            "--wait",
            "-o",
            "json",
        ],
    )
    .await?;
    ensure!(code == 0 && done.contains(r#""result": "HI""#), "{code} {done} {err}");
    let dir = tempfile::tempdir()?;
    let spec = dir.path().join("spec.json");
    std::fs::write(
        &spec,
        json!({ "name": "from-file", "backend": { "builtin": { "kind": "echo" } } }).to_string(),
    )?;
    let (code, out, err) = cli(
        &node,
        &[
            "agents",
            "spawn",
            "--file",
            spec.to_str().context("path")?,
            "-o",
            "name",
        ],
    )
    .await?;
    ensure!(code == 0 && out.trim().ends_with("@solo"), "{code} {out} {err}");
    // A second agent of the same name is made, and the answer warns that names no longer
    // find either.
    let (code, _, err) = cli(&node, &["agents", "spawn", "from-file", "--builtin", "echo"]).await?;
    ensure!(
        code == 0 && err.contains("warning: NAME_TAKEN:") && err.contains(out.trim()),
        "{code} {err}"
    );
    // A submit that names neither a capability nor an agent says both would do.
    let (code, _, err) = cli(&node, &["submit", "--payload", "1"]).await?;
    ensure!(
        code == 2 && err.contains("--capability <CAPABILITY>|--agent <AGENT>"),
        "{code} {err}"
    );
    let (code, _, err) = cli(&node, &["agents", "spawn", "idle"]).await?;
    ensure!(code == 2 && err.contains("say what the agent runs"), "{code} {err}");
    // On a member named with --node: one that is not is refused by the node.
    let (code, out, err) = cli(
        &node,
        &["agents", "spawn", "far", "--node", "solo", "--builtin", "echo"],
    )
    .await?;
    ensure!(code == 0 && out.contains("solo"), "{code} {out} {err}");
    let (code, _, err) = cli(
        &node,
        &["agents", "spawn", "far", "--node", "nowhere", "--builtin", "echo"],
    )
    .await?;
    ensure!(code != 0 && err.contains("nowhere"), "{code} {err}");
    // An exec agent's lines, by its name.
    let input = json!({ "name": "talker", "backend": { "exec": { "command": ["/bin/sh", "-c", "echo hello from talker >&2; echo {}"] } } });
    let talker = text(&node.spawn_agent(input).await?, "/id")?;
    let task = node.submit_to(&talker, json!({})).await?;
    node.wait_task_state(&task, "SUCCEEDED").await?;
    let (code, lines, err) = cli(&node, &["logs", "talker"]).await?;
    ensure!(
        code == 0 && lines.contains("stderr hello from talker"),
        "{code} {lines} {err}"
    );
    // Times for people: to the millisecond, in UTC ("2026-11-27 19:45:15.596Z ...").
    let at = lines.split(" stderr").next().unwrap_or_default();
    ensure!(
        at.len() == 24 && at.as_bytes()[10] == b' ' && at.ends_with('Z'),
        "{lines}"
    );
    // The last events, filtered.
    let (code, events, _) = cli(&node, &["events", "--kind", "TASK_SUCCEEDED", "-o", "jsonl"]).await?;
    ensure!(
        code == 0 && events.lines().count() == 3 && events.lines().all(|e| e.contains("TASK_SUCCEEDED")),
        "{events}"
    );
    // An operator's lifecycle changes, by name.
    let (code, stopped, err) = cli(&node, &["agents", "stop", "echoer", "-o", "json"]).await?;
    let stopped: Value = serde_json::from_str(&stopped).with_context(|| err.clone())?;
    ensure!(code == 0 && stopped[0]["id"] == agent.as_str(), "{stopped} {err}");
    node.wait_agent_state(&agent, "STOPPED").await?;
    let (code, _, err) = cli(&node, &["agents", "start", "echoer"]).await?;
    ensure!(code == 0, "{err}");
    node.wait_agent_state(&agent, "RUNNING").await?;
    let (code, _, err) = cli(&node, &["agents", "restart", "nobody"]).await?;
    ensure!(code == 3, "{code} {err}");
    // The last of a kind, however many events of other kinds came after it.
    let (code, events, _) = cli(
        &node,
        &["events", "--kind", "TASK_SUCCEEDED", "--tail", "1", "-o", "json"],
    )
    .await?;
    let events: Vec<Value> = serde_json::from_str(&events).with_context(|| events.clone())?;
    ensure!(
        code == 0 && events.len() == 1 && events[0]["kind"] == "TASK_SUCCEEDED",
        "{events:?}"
    );
    // Alert deliveries: none yet, and a channel that is not there is not found.
    let (code, table, _) = cli(&node, &["alerts", "list", "--failed"]).await?;
    ensure!(
        code == 0 && table.starts_with("ID") && table.lines().count() == 1,
        "{table}"
    );
    let (code, _, err) = cli(&node, &["alerts", "test", "pager"]).await?;
    ensure!(code == 3 && err.contains("NOT_FOUND"), "{code} {err}");
    // Completion scripts from the same definitions, for each shell clap_complete knows.
    for (shell, mark) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef troupe"),
        ("fish", "complete -c troupe"),
    ] {
        let (code, script, err) = cli(&node, &["completion", shell]).await?;
        ensure!(
            code == 0 && script.contains(mark) && script.contains("alerts"),
            "{shell}: {err}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_is_bounded_by_its_timeout_and_follows_its_task_across_a_restart() -> Result<()> {
    let mut node = Node::start(NodeOpts::named("solo")).await?;
    // A task nobody can run: --timeout ends the wait with exit 6, saying where the task is.
    let (code, _, err) = cli(
        &node,
        &["submit", "--capability", "nobody", "--wait", "--timeout", "1s"],
    )
    .await?;
    ensure!(
        code == 6 && err.contains("is still QUEUED after 1s; it goes on"),
        "{code} {err}"
    );
    let (code, _, err) = cli(&node, &["submit", "--capability", "x", "--wait", "--timeout", "soon"]).await?;
    ensure!(code == 2 && err.contains("give seconds"), "{code} {err}");
    // A wait that outlives its node's restart: the task is in the store, the command follows
    // it again once the node is back, and ends with its result, not with "ended QUEUED".
    let waiting = tokio::process::Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args([
            "submit",
            "--capability",
            "later",
            "--payload",
            r#"{"x":2}"#,
            "--wait",
            "-o",
            "json",
        ])
        .env("TROUPE_URL", format!("http://{}", node.addr))
        .env("TROUPE_TOKEN", &node.token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let deadline = Deadline::after(WAIT, "the waited-for task to be queued");
    loop {
        let waits = node.events(&["TASK_WAITING"]).await?;
        if waits.iter().any(|e| e.to_string().contains("later")) {
            break;
        }
        deadline.tick(json!(waits)).await?;
    }
    node.restart_on_its_port().await?;
    node.spawn_builtin("echo", &["later"]).await?;
    let out = tokio::time::timeout(WAIT, waiting.wait_with_output()).await??;
    let (done, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let done: Value = serde_json::from_str(&done).with_context(|| format!("{done} {err}"))?;
    ensure!(
        out.status.success() && done[0]["state"] == "SUCCEEDED" && done[0]["result"]["x"] == 2,
        "{done} {err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_member_keeps_a_history_of_what_the_overview_draws_the_clusters_tasks_included() -> Result<()> {
    let often = |name: &str| NodeOpts::named(name).arg("--history-interval-ms", "100");
    let (alpha, beta) = super::cluster::start_pair_of(often("alpha"), often("beta")).await?;
    let echo = alpha.spawn_builtin("echo", &[]).await?;
    for i in 0..5 {
        let id = alpha.submit_to(&echo, json!({ "i": i })).await?;
        alpha.wait_task_state(&id, "SUCCEEDED").await?;
    }
    let q = "{ history(minutes: 5) { at succeeded succeededPerSec failed latencyP50Ms latencyP99Ms agents { state count } cpuCores rssBytes } }";
    // Both members count the cluster's tasks (beta ran none): the overview's live figures,
    // read from the same events, go on from them on either.
    for node in [&alpha, &beta] {
        let deadline = Deadline::after(WAIT, format!("a sample of {} with the tasks that ended", node.name));
        let samples = loop {
            let samples = node.gql_ok(q, json!({})).await?["history"].clone();
            let ended: i64 = samples
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["succeeded"].as_i64())
                .sum();
            if ended == 5 {
                break samples;
            }
            deadline.tick(&samples).await?;
        };
        let last = samples.as_array().and_then(|s| s.last()).context("no sample")?;
        ensure!(last["rssBytes"].as_i64().is_some_and(|b| b > 1 << 20), "{last}");
        // The agents are the node's own.
        let agents = if node.name == "alpha" {
            json!([{ "state": "running", "count": 1 }])
        } else {
            json!([])
        };
        ensure!(last["agents"] == agents, "{}: {last}", node.name);
        ensure!(
            samples
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["latencyP50Ms"].is_number()),
            "{samples}"
        );
    }
    Ok(())
}

//! MCP servers as supervised agents, made with the Python `mcp` SDK (the venv `make deps`
//! installs): over stdio and streamable HTTP, their tools as tasks and as an LLM agent's
//! tools, a refreshed tool list, and a server that dies restarted by its supervisor.

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use super::support::messages::SEND;
use super::support::{expect_code, text, Deadline, FakeLlm, Node, NodeOpts, WAIT};

/// The Python of the venv with the `mcp` SDK.
fn python() -> Result<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/mcp-venv/bin/python");
    ensure!(
        std::path::Path::new(path).exists(),
        "{path} is missing: run `make deps`, which installs the Python mcp SDK these tests use"
    );
    Ok(path.into())
}

fn server() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mcp_server.py").into()
}

/// The calls of `charge` the server logged: (amount, key).
fn charges(log: &std::path::Path) -> Result<Vec<(i64, Value)>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l)?;
            Ok((v["amount"].as_i64().unwrap_or(0), v["key"].clone()))
        })
        .collect()
}

async fn tool_names(node: &Node, agent: &str) -> Result<Vec<String>> {
    let answer = node
        .gql_ok(
            SEND,
            json!({ "to": agent, "payload": { "op": "tools" }, "timeoutMs": 10_000 }),
        )
        .await?;
    Ok(answer["sendMessage"]["reply"]["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_server_over_stdio_is_a_supervised_agent_whose_tools_are_tasks_and_an_llm_agents_tools() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("charges.jsonl");
    let node = Node::start(NodeOpts::named("solo")).await?;
    let input = json!({
        "name": "calc",
        "backend": { "mcp": { "command": [python()?, server(), "--log", log.to_string_lossy()] } },
    });
    let calc = text(&node.spawn_agent(input).await?, "/id")?;
    node.wait_agent_state(&calc, "RUNNING").await?;
    // Each tool is a capability: mcp:<agent name>/<tool>, the payload its arguments; the
    // result is the tool's structured content (the Python SDK wraps a string in "result").
    let task = text(
        &node
            .submit(json!({ "capability": "mcp:calc/charge", "payload": { "amount": 5 } }))
            .await?,
        "/id",
    )?;
    let done = node.wait_task_state(&task, "SUCCEEDED").await?;
    ensure!(done["result"] == json!({ "result": "charged 5" }), "{done}");
    // The task's id went along as the call's idempotency key.
    ensure!(charges(&log)? == [(5, json!(task))], "{:?}", charges(&log)?);
    // A tool error fails the task with the server's words.
    let refused = text(
        &node
            .submit(json!({ "agentId": calc, "payload": { "tool": "charge", "arguments": { "amount": -1 } }, "maxAttempts": 1 }))
            .await?,
        "/id",
    )?;
    let dead = node.wait_task_state(&refused, "DEAD").await?;
    ensure!(text(&dead, "/error")?.contains("amount must be >= 0"), "{dead}");
    // What the server wrote on its stderr (the SDK reports the failed tool there) is the
    // agent's log, as an exec or process agent's is.
    let q = "query($id: ID!) { agentLogs(id: $id) { stream line } }";
    let deadline = Deadline::after(WAIT, "the server's stderr in the agent's log");
    loop {
        let lines = node.gql_ok(q, json!({ "id": calc })).await?["agentLogs"].clone();
        let said =
            lines.as_array().into_iter().flatten().any(|l| {
                l["stream"] == "stderr" && l["line"].as_str().is_some_and(|t| t.contains("amount must be >= 0"))
            });
        if said {
            break;
        }
        deadline.tick(&lines).await?;
    }

    // An LLM agent naming the server is offered its tools as calc__<tool>.
    let llm_log = dir.path().join("requests.jsonl");
    let fake = FakeLlm::start(&[
        "--tool",
        "calc__charge",
        "--tool-args",
        r#"{"amount":7}"#,
        "--log",
        &llm_log.to_string_lossy(),
    ])
    .await?;
    // Named by its name (one agent has it), kept as its id. One that does not exist, or is
    // no mcp agent, is refused: the model would be offered none of its tools.
    let cashier = |servers: Value| {
        json!({
            "name": "cashier",
            "backend": { "llm": { "baseUrl": fake.url(), "model": "tiny", "mcpServers": servers, "tools": ["calc__charge"] } },
        })
    };
    let spawn = "mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }";
    let echo = node.spawn_builtin("echo", &[]).await?;
    for wrong in ["files", echo.as_str()] {
        let refused = node.gql(spawn, json!({ "input": cashier(json!([wrong])) })).await?;
        expect_code(&refused, "INVALID_INPUT")?;
    }
    // A tool pattern that no tool it could be offered matches (misspelt) is refused too,
    // saying what the names are (before, the model was offered nothing, silently).
    let mut misspelt = cashier(json!(["calc"]));
    misspelt["backend"]["llm"]["tools"] = json!(["clac__charge"]);
    let refused = node.gql(spawn, json!({ "input": misspelt })).await?;
    expect_code(&refused, "INVALID_INPUT")?;
    ensure!(refused.to_string().contains("calc__<tool>"), "{refused}");
    let cashier = text(&node.spawn_agent(cashier(json!(["calc"]))).await?, "/id")?;
    let asked = node.submit_to(&cashier, json!("charge seven")).await?;
    let out = node.wait_task_state(&asked, "SUCCEEDED").await?;
    ensure!(out["result"]["content"] == "echo: charged 7", "{out}");
    let requests: Vec<Value> = std::fs::read_to_string(&llm_log)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let offered: Vec<_> = requests[0]["body"]["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t["function"]["name"].clone())
        .collect();
    ensure!(offered == [json!("calc__charge")], "{offered:?}");
    ensure!(
        charges(&log)?.last() == Some(&(7, json!(format!("{asked}/1/call_1")))),
        "{:?}",
        charges(&log)?
    );

    // A tool added at the server is listed again on its notification.
    let learned = node
        .submit(json!({ "agentId": calc, "payload": { "tool": "learn", "arguments": { "name": "shout" } } }))
        .await?;
    node.wait_task_state(&text(&learned, "/id")?, "SUCCEEDED").await?;
    let deadline = Deadline::after(WAIT, "the new tool to be listed");
    loop {
        let names = tool_names(&node, &calc).await?;
        if names.iter().any(|n| n == "shout") {
            break;
        }
        deadline.tick(format!("{names:?}")).await?;
    }
    // The new tool is a capability at once: shown on the agent, found by a listing,
    // and a task for it runs.
    let deadline = Deadline::after(WAIT, "the new tool among the agent's capabilities");
    loop {
        let q = "{ agents(capability: \"mcp:calc/shout\") { nodes { id capabilities } } }";
        let found = node.gql_ok(q, json!({})).await?["agents"]["nodes"].clone();
        let caps = &found[0]["capabilities"];
        if found[0]["id"] == json!(calc) && caps.as_array().is_some_and(|c| c.contains(&json!("mcp:calc/charge"))) {
            break;
        }
        deadline.tick(&found).await?;
    }
    let shout = node
        .submit(json!({ "capability": "mcp:calc/shout", "payload": { "text": "hey" } }))
        .await?;
    let done = node.wait_task_state(&text(&shout, "/id")?, "SUCCEEDED").await?;
    ensure!(done["result"] == json!({ "result": "hey" }), "{done}");

    // The server dies: its supervisor restarts the agent, which starts a new server.
    let killed = std::process::Command::new("pkill")
        .args(["-9", "-f", &log.to_string_lossy()])
        .status()?;
    ensure!(killed.success(), "no server process to kill");
    let deadline = Deadline::after(WAIT, "the agent to be restarted");
    loop {
        let agent = node.agent(&calc).await?;
        if agent["restarts"].as_i64() >= Some(1) && agent["state"] == "RUNNING" {
            break;
        }
        deadline.tick(&agent).await?;
    }
    let again = node
        .submit(json!({ "capability": "mcp:calc/charge", "payload": { "amount": 9 } }))
        .await?;
    let done = node.wait_task_state(&text(&again, "/id")?, "SUCCEEDED").await?;
    ensure!(done["result"] == json!({ "result": "charged 9" }), "{done}");
    ensure!(node.logged("the MCP server exited") >= 1, "{}", node.log_tail());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_server_over_streamable_http_serves_its_tools_as_tasks() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("charges.jsonl");
    let (_server, port) = http_server(&log, &[]).await?;
    let node = Node::start(NodeOpts::named("solo")).await?;
    let input = json!({
        "name": "remote",
        "backend": { "mcp": { "url": format!("http://127.0.0.1:{port}/mcp"), "pingMs": 500 } },
    });
    let remote = text(&node.spawn_agent(input).await?, "/id")?;
    node.wait_agent_state(&remote, "RUNNING").await?;
    let task = text(
        &node
            .submit(json!({ "capability": "mcp:remote/charge", "payload": { "amount": 3 } }))
            .await?,
        "/id",
    )?;
    let done = node.wait_task_state(&task, "SUCCEEDED").await?;
    ensure!(done["result"] == json!({ "result": "charged 3" }), "{done}");
    ensure!(charges(&log)? == [(3, json!(task))], "{:?}", charges(&log)?);
    let names = tool_names(&node, &remote).await?;
    if names != ["charge", "learn"] {
        bail!("{names:?}");
    }
    // A URL where nothing listens: the spawn says so without the MCP SDK's type names (its
    // text was "Send message error Transport [rmcp::transport::worker::WorkerTransport<…>]").
    let nowhere = json!({
        "name": "nowhere",
        "backend": { "mcp": { "url": format!("http://127.0.0.1:{}/mcp", super::support::free_port()?) } },
    });
    let spawn = "mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }";
    let refused = node.gql(spawn, json!({ "input": nowhere })).await?;
    let message = refused["errors"][0]["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("cannot be reached") && message.contains("Connection refused") && !message.contains("rmcp::"),
        "{refused}"
    );
    Ok(())
}

/// Starts the fixture serving streamable HTTP on a free port, with `extra` arguments, and
/// waits until it listens.
async fn http_server(log: &std::path::Path, extra: &[&str]) -> Result<(tokio::process::Child, u16)> {
    let port = super::support::free_port()?;
    let child = tokio::process::Command::new(python()?)
        .arg(server())
        .args(["--http", &port.to_string(), "--log", &log.to_string_lossy()])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("the HTTP MCP server")?;
    let deadline = Deadline::after(WAIT, "the HTTP MCP server to listen");
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        deadline.tick("not listening").await?;
    }
    Ok((child, port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_speaks_only_mcp_2026_07_28_is_discovered_and_serves_over_stdio_and_http() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("charges.jsonl");
    let node = Node::start(NodeOpts::named("solo")).await?;
    // Over stdio: the server refuses `initialize` (-32022); the agent starts it again and
    // speaks the stateless revision, probing with tools/list every 200 ms.
    let input = json!({
        "name": "modern",
        "backend": { "mcp": { "command": [python()?, server(), "--modern-only", "--log", log.to_string_lossy()], "pingMs": 200 } },
    });
    let modern = text(&node.spawn_agent(input).await?, "/id")?;
    node.wait_agent_state(&modern, "RUNNING").await?;
    ensure!(
        node.logged("the MCP server speaks 2026-07-28") == 1,
        "{}",
        node.log_tail()
    );
    let task = text(
        &node
            .submit(json!({ "capability": "mcp:modern/charge", "payload": { "amount": 4 } }))
            .await?,
        "/id",
    )?;
    let done = node.wait_task_state(&task, "SUCCEEDED").await?;
    ensure!(done["result"] == json!({ "result": "charged 4" }), "{done}");
    // The key travels in the request's own _meta, beside the revision's envelope.
    ensure!(charges(&log)? == [(4, json!(task))], "{:?}", charges(&log)?);
    // A tool added at the server becomes a capability (told on the listen stream, or seen
    // at the next probe), and a task for it runs.
    let learned = node
        .submit(json!({ "agentId": modern, "payload": { "tool": "learn", "arguments": { "name": "whisper" } } }))
        .await?;
    node.wait_task_state(&text(&learned, "/id")?, "SUCCEEDED").await?;
    let deadline = Deadline::after(WAIT, "the new tool among the agent's capabilities");
    loop {
        let agent = node.agent(&modern).await?;
        if agent["capabilities"]
            .as_array()
            .is_some_and(|c| c.contains(&json!("mcp:modern/whisper")))
        {
            break;
        }
        deadline.tick(&agent).await?;
    }
    let whisper = node
        .submit(json!({ "capability": "mcp:modern/whisper", "payload": { "text": "psst" } }))
        .await?;
    let done = node.wait_task_state(&text(&whisper, "/id")?, "SUCCEEDED").await?;
    ensure!(done["result"] == json!({ "result": "psst" }), "{done}");
    // Probed all along without a ping (which this revision has not): never unhealthy.
    let agent = node.agent(&modern).await?;
    ensure!(agent["state"] == "RUNNING" && agent["restarts"] == 0, "{agent}");

    // Over streamable HTTP: `initialize` answered with HTTP 400 and -32022.
    let http_log = dir.path().join("http-charges.jsonl");
    let (_server, port) = http_server(&http_log, &["--modern-only"]).await?;
    let input = json!({
        "name": "remote",
        "backend": { "mcp": { "url": format!("http://127.0.0.1:{port}/mcp"), "pingMs": 200 } },
    });
    let remote = text(&node.spawn_agent(input).await?, "/id")?;
    node.wait_agent_state(&remote, "RUNNING").await?;
    let task = text(
        &node
            .submit(json!({ "capability": "mcp:remote/charge", "payload": { "amount": 6 } }))
            .await?,
        "/id",
    )?;
    let done = node.wait_task_state(&task, "SUCCEEDED").await?;
    ensure!(done["result"] == json!({ "result": "charged 6" }), "{done}");
    ensure!(charges(&http_log)? == [(6, json!(task))], "{:?}", charges(&http_log)?);
    ensure!(
        node.logged("the MCP server speaks 2026-07-28") == 2,
        "{}",
        node.log_tail()
    );
    Ok(())
}

/// Runs the Python MCP client against `node`'s /mcp with `token`: its tools, and each
/// call's {isError, text, structured}.
async fn mcp_client(node: &Node, token: &str, calls: Value) -> Result<Value> {
    mcp_client_in(node, token, calls, "auto").await
}

/// As `mcp_client`, the client's `mode` "auto" (2026-07-28 where spoken) or "legacy".
async fn mcp_client_in(node: &Node, token: &str, calls: Value, mode: &str) -> Result<Value> {
    let client = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mcp_client.py");
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(python()?)
            .args([client, &node.url("/mcp"), token, &calls.to_string(), mode])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("the MCP client hung")??;
    ensure!(
        out.status.success(),
        "the MCP client failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut answer: Value = serde_json::from_slice(&out.stdout)?;
    answer["stderr"] = json!(String::from_utf8_lossy(&out.stderr));
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coding_agent_drives_the_fleet_through_mcp_with_the_roles_of_its_token() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let operator = node.create_token("operator").await?;
    let viewer = node.create_token("viewer").await?;
    let calls = json!([
        ["spawn_agent", { "input": { "name": "echoer", "backend": { "builtin": { "kind": "echo" } }, "capabilities": ["echo"] } }],
        ["submit_task", { "input": { "capability": "echo", "payload": { "said": "hi" } } }],
        ["list_agents", { "capability": "echo" }],
        ["read_events", { "kinds": ["TASK_SUCCEEDED"] }],
        ["stop_agent", { "id": "no-such-agent" }],
        ["get_task", { "id": "no-such-task" }],
        ["create_swarm", { "input": { "name": "s", "templates": [{ "count": 1 }] } }],
        ["submit_task", { "input": { "capability": "echo", "payload": 1 }, "timeoutMs": 700000 }],
        ["submit_task", {}],
    ]);
    let out = mcp_client(&node, &operator, calls).await?;
    // The SDK's client asks server/discover first: /mcp speaks the stateless revision.
    ensure!(out["protocol"] == "2026-07-28", "{}", out["protocol"]);
    let tools: Vec<_> = out["tools"].as_array().into_iter().flatten().cloned().collect();
    for name in [
        "spawn_agent",
        "stop_agent",
        "list_agents",
        "submit_task",
        "create_swarm",
        "submit_swarm_task",
        "swarm_memory_get",
        "swarm_memory_set",
        "read_events",
    ] {
        ensure!(tools.contains(&json!(name)), "{name} is not offered: {tools:?}");
    }
    let r = &out["results"];
    ensure!(
        r[0]["isError"] == false && r[0]["structured"]["spawnAgent"]["name"] == "echoer",
        "{}",
        r[0]
    );
    // submit_task waited for the task's end.
    let task = &r[1]["structured"]["submitTask"];
    ensure!(
        task["state"] == "SUCCEEDED" && task["result"]["said"] == "hi",
        "{}",
        r[1]
    );
    ensure!(r[2]["structured"]["agents"]["totalCount"] == 1, "{}", r[2]);
    ensure!(
        r[3]["structured"]["events"].as_array().is_some_and(|e| !e.is_empty()),
        "{}",
        r[3]
    );
    // An error is a result the agent reads, with the code GraphQL gives it.
    // Each error's text starts with its code: one nothing was found for, and requests the
    // schema or the tool refuses before anything runs.
    for (n, code) in [
        (4, "NOT_FOUND"),
        (5, "NOT_FOUND"),
        (6, "INVALID_INPUT"),
        (7, "INVALID_INPUT"),
        (8, "INVALID_INPUT"),
    ] {
        ensure!(
            r[n]["isError"] == true && r[n]["text"].as_str().is_some_and(|t| t.starts_with(code)),
            "{}",
            r[n]
        );
    }
    // A required argument left out is named as the tool's, not as GraphQL's variable.
    ensure!(
        r[8]["text"] == "INVALID_INPUT submit_task needs the argument input",
        "{}",
        r[8]
    );

    // A viewer lists every tool and reads, but may not spawn; a tool that is not there is
    // an error that starts with its code, as every other.
    let calls = json!([
        ["spawn_agent", { "input": { "name": "sneaky", "backend": { "builtin": { "kind": "echo" } } } }],
        ["list_agents", {}],
        ["no_such_tool", {}],
    ]);
    let out = mcp_client(&node, &viewer, calls).await?;
    ensure!(out["tools"].as_array().map(Vec::len) == Some(tools.len()), "{out}");
    let r = &out["results"];
    ensure!(
        r[0]["isError"] == true && r[0]["text"].as_str().is_some_and(|t| t.contains("FORBIDDEN")),
        "{}",
        r[0]
    );
    ensure!(r[1]["structured"]["agents"]["totalCount"] == 1, "{}", r[1]);
    ensure!(
        r[2]["isError"] == true && r[2]["text"] == "NOT_FOUND no tool named no_such_tool",
        "{}",
        r[2]
    );
    // A client of the initialize era (sessions) is served the same, roles included.
    let calls = json!([
        ["list_agents", { "capability": "echo" }],
        ["spawn_agent", { "input": { "name": "sneaky", "backend": { "builtin": { "kind": "echo" } } } }],
    ]);
    let out = mcp_client_in(&node, &viewer, calls, "legacy").await?;
    ensure!(out["protocol"] == "2025-11-25", "{}", out["protocol"]);
    // Its session ends as the client expects (rmcp's 202 made it say the end failed).
    ensure!(
        !out["stderr"]
            .as_str()
            .unwrap_or_default()
            .contains("termination failed"),
        "{}",
        out["stderr"]
    );
    let r = &out["results"];
    ensure!(r[0]["structured"]["agents"]["totalCount"] == 1, "{}", r[0]);
    ensure!(
        r[1]["isError"] == true && r[1]["text"].as_str().is_some_and(|t| t.contains("FORBIDDEN")),
        "{}",
        r[1]
    );
    // No token, no session: a 401 before MCP is spoken.
    let (status, _) = node.get("/mcp").await?;
    ensure!(status == 401, "{status}");
    Ok(())
}

//! Messages to agents through the gateway: request/response with builtin and process agents,
//! priority lanes, a bounded mailbox, and the message dead-letter queue.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::support::messages::{wait_answered, SEND};
use super::support::{error_code, expect_code, python_agent, text, Deadline, Gate, Node, NodeOpts, WAIT};

#[tokio::test]
async fn agents_answer_messages_and_unanswered_ones_become_dead_letters_that_replay() -> Result<()> {
    let node = Node::start(NodeOpts::named("messages")).await?;
    let echo = node.spawn_builtin("echo", &[]).await?;
    let answer = node
        .gql_ok(SEND, json!({ "to": echo, "payload": { "hello": 1 } }))
        .await?;
    ensure!(answer["sendMessage"]["reply"] == json!({ "hello": 1 }), "{answer}");
    let py = node
        .spawn_agent(json!({ "name": "py", "backend": { "process": { "command": python_agent() } } }))
        .await?;
    let py = text(&py, "/id")?;
    node.wait_agent_state(&py, "RUNNING").await?;
    let answer = node.gql_ok(SEND, json!({ "to": py, "payload": "hi" })).await?;
    ensure!(answer["sendMessage"]["reply"]["echo"] == "hi", "{answer}");
    let history = node
        .gql_ok(
            "query($id: ID!) { agent(id: $id) { messages { id outcome } messagesWaiting } }",
            json!({ "id": py }),
        )
        .await?;
    ensure!(history["agent"]["messages"][0]["outcome"] == "REPLIED", "{history}");
    ensure!(
        history["agent"]["messages"][0]["id"] == answer["sendMessage"]["id"],
        "{history}"
    );

    // An exec agent takes no messages: the message is a dead letter.
    let exec = node.spawn_exec(&["/bin/cat"], None).await?;
    let refused = node.gql(SEND, json!({ "to": exec, "payload": 1 })).await?;
    ensure!(error_code(&refused).as_deref() == Some("UNAVAILABLE"), "{refused}");
    // A stopped agent's message is a dead letter too, and is answered once replayed.
    let q = "mutation($id: ID!) { stopAgent(id: $id) { state } }";
    node.gql_ok(q, json!({ "id": echo })).await?;
    let lost = node
        .gql(SEND, json!({ "to": echo, "payload": { "again": true } }))
        .await?;
    expect_code(&lost, "UNAVAILABLE")?;
    let dead = node
        .gql_ok("{ messageDeadLetters { id to payload reason } }", json!({}))
        .await?;
    let dead = dead["messageDeadLetters"].as_array().context("dead letters")?.clone();
    ensure!(dead.len() == 2, "{dead:?}");
    ensure!(
        dead.iter()
            .any(|d| d["reason"].as_str().unwrap_or_default().contains("takes no messages")),
        "{dead:?}"
    );
    let stopped = dead
        .iter()
        .find(|d| d["to"] == echo.as_str())
        .context("the stopped agent's")?;
    ensure!(
        stopped["reason"].as_str().unwrap_or_default().contains("not running"),
        "{stopped}"
    );
    node.gql_ok(
        "mutation($id: ID!) { startAgent(id: $id) { state } }",
        json!({ "id": echo }),
    )
    .await?;
    node.wait_agent_state(&echo, "RUNNING").await?;
    let replayed = node
        .gql_ok(
            "mutation($id: ID!) { replayMessage(id: $id) { reply } }",
            json!({ "id": stopped["id"] }),
        )
        .await?;
    ensure!(
        replayed["replayMessage"]["reply"] == json!({ "again": true }),
        "{replayed}"
    );
    let left = node.gql_ok("{ messageDeadLetters { id } }", json!({})).await?;
    ensure!(left["messageDeadLetters"].as_array().map(Vec::len) == Some(1), "{left}");
    Ok(())
}

#[tokio::test]
async fn a_critical_message_overtakes_queued_normal_ones_and_a_full_mailbox_refuses() -> Result<()> {
    let node = Node::start(NodeOpts::named("lanes").arg("--agent-mailbox-size", 3)).await?;
    let (agent, log) = node.start_gated_agent(&[]).await?;
    let gate = Gate::new()?;
    let send = |payload: Value, priority: &'static str| {
        let (node, agent) = (&node, agent.clone());
        async move {
            node.gql(SEND, json!({ "to": agent, "payload": payload, "priority": priority }))
                .await
        }
    };
    let waiting = |n: i64| node.wait_messages_waiting(&agent, n);
    // The first is delivered and held at the gate; then two NORMAL ones queue, then a CRITICAL.
    let first = tokio::spawn({
        let (node_addr, token, agent, gate) = (
            node.addr.clone(),
            node.token.clone(),
            agent.clone(),
            gate.path().display().to_string(),
        );
        async move {
            super::support::http_client()
                .build()?
                .post(format!("http://{node_addr}/graphql"))
                .bearer_auth(token)
                .json(&json!({ "query": SEND, "variables": { "to": agent, "payload": { "n": 1, "gate": gate } } }))
                .send()
                .await?
                .json::<Value>()
                .await
        }
    });
    // The agent marks each message it receives: the first is in its hands, held at the gate.
    node.wait_gated_received().await?;
    let (n2, n3, n4, full) = tokio::join!(
        send(json!({ "n": 2 }), "NORMAL"),
        // `messagesWaiting` counts the one in the agent's hands too.
        async {
            waiting(2).await?;
            send(json!({ "n": 3 }), "NORMAL").await
        },
        async {
            waiting(3).await?;
            send(json!({ "n": 4 }), "CRITICAL").await
        },
        async {
            waiting(4).await?;
            // The mailbox holds 3: one more is refused at once.
            let refused = send(json!({ "n": 5 }), "LOW").await?;
            gate.open()?;
            anyhow::Ok(refused)
        },
    );
    let full = full?;
    ensure!(error_code(&full).as_deref() == Some("BACKPRESSURE"), "{full}");
    for answer in [n2?, n3?, n4?] {
        ensure!(answer["errors"].is_null(), "{answer}");
    }
    first.await??;
    let order: Vec<i64> = std::fs::read_to_string(&log)?
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).map(|v| v["n"].as_i64().unwrap_or(0)))
        .collect::<Result<_, _>>()?;
    ensure!(order == [1, 4, 2, 3], "answered in order {order:?}");
    Ok(())
}

#[tokio::test]
async fn published_messages_reach_the_agents_and_clients_whose_patterns_match() -> Result<()> {
    let node = Node::start(NodeOpts::named("topics")).await?;
    let mut ids = std::collections::HashMap::new();
    for (name, topics, team) in [
        ("health", vec!["health.*"], "a"),
        ("builds", vec!["builds.#"], "a"),
        ("all", vec!["#"], "b"),
    ] {
        let a = node
            .spawn_agent(
                json!({ "name": name, "backend": { "builtin": { "kind": "echo" } }, "topics": topics,
                                 "labels": [{ "key": "team", "value": team }] }),
            )
            .await?;
        ids.insert(name, text(&a, "/id")?);
    }
    // From the log's end now: the marker published next is seen however soon it commits.
    let now = node.gql_ok("{ node { lastSeq } }", json!({})).await?["node"]["lastSeq"].clone();
    let mut sub = super::support::Subscription::start(
        &node,
        "subscription($after: Int64) { messages(topic: \"builds.#\", after: $after) { topic payload } }",
        json!({ "after": now }),
    )
    .await?;
    let publish = "mutation($t: String!, $p: JSON!) { publish(topic: $t, payload: $p) { queued missingNodes } }";
    // A marker the client must see proves its subscription is live.
    let q = node.gql_ok(publish, json!({ "t": "builds", "p": 0 })).await?;
    ensure!(q["publish"]["queued"] == 2, "builds.# and # match builds: {q}");
    let seen = sub.next_with_deadline().await?.context("the marker")?;
    ensure!(seen["messages"]["topic"] == "builds", "{seen}");
    for (topic, queued) in [("health.db", 2), ("health.db.latency", 1), ("builds.linux.arm64", 2)] {
        let q = node
            .gql_ok(publish, json!({ "t": topic, "p": { "topic": topic } }))
            .await?;
        ensure!(q["publish"]["queued"] == queued, "{topic}: {q}");
    }
    // The client sees only builds.#: the next one is builds.linux.arm64, not the health ones.
    let seen = sub.next_with_deadline().await?.context("the build message")?;
    ensure!(
        seen["messages"]["topic"] == "builds.linux.arm64"
            && seen["messages"]["payload"]["topic"] == "builds.linux.arm64",
        "{seen}"
    );
    // Each agent answered what it got: health 1, builds 2, all 4.
    for (name, want) in [("health", 1), ("builds", 2), ("all", 4)] {
        let deadline = Deadline::after(WAIT, format!("{name} to answer {want} messages"));
        loop {
            let a = node
                .gql_ok(
                    "query($id: ID!) { agent(id: $id) { messages { outcome } } }",
                    json!({ "id": ids[name] }),
                )
                .await?;
            let n = a["agent"]["messages"].as_array().map_or(0, Vec::len);
            if n == want {
                break;
            }
            ensure!(n < want, "{name} got {n} messages, not {want}");
            deadline.tick(&a).await?;
        }
    }
    let topics = node.gql_ok("{ topics { pattern agents } }", json!({})).await?;
    ensure!(topics["topics"].as_array().map(Vec::len) == Some(3), "{topics}");
    let b = node
        .gql_ok(
            "mutation { broadcast(labels: [{ key: \"team\", value: \"a\" }], payload: \"hi team\") { queued } }",
            json!({}),
        )
        .await?;
    ensure!(b["broadcast"]["queued"] == 2, "{b}");
    expect_code(
        &node.gql(publish, json!({ "t": "bad..topic", "p": 1 })).await?,
        "INVALID_INPUT",
    )?;
    expect_code(
        &node.gql(publish, json!({ "t": "wild.*", "p": 1 })).await?,
        "INVALID_INPUT",
    )?;
    Ok(())
}

#[tokio::test]
async fn a_process_agent_sends_and_publishes_through_its_protocol() -> Result<()> {
    let node = Node::start(NodeOpts::named("agent-sends")).await?;
    let echo = node.spawn_builtin("echo", &[]).await?;
    let listener = node
        .spawn_agent(json!({ "name": "listener", "backend": { "builtin": { "kind": "echo" } }, "topics": ["news.#"] }))
        .await?;
    let listener = text(&listener, "/id")?;
    let script = node.data_dir().join("sender.py");
    std::fs::write(
        &script,
        r#"import json, sys
def out(m): print(json.dumps(m), flush=True)
def wait(kind, ident):
    for line in sys.stdin:
        m = json.loads(line)
        if m.get("type") == kind and m.get("id") == ident:
            return m
out({"type": "ready"})
for line in sys.stdin:
    m = json.loads(line)
    if m.get("type") == "task":
        p = m["payload"]
        out({"type": "send", "id": "s1", "to": p["to"], "payload": {"ping": 1}, "priority": "HIGH"})
        sent = wait("sent", "s1")
        out({"type": "publish", "id": "p1", "topic": "news.today", "payload": {"headline": "hi"}})
        published = wait("published", "p1")
        out({"type": "send", "id": "s2", "to": "nobody@agent-sends", "payload": 1})
        missing = wait("sent", "s2")
        out({"type": "result", "id": m["id"], "ok": True,
             "value": {"sent": sent, "published": published, "missing": missing}})
    elif m.get("type") == "shutdown":
        break
"#,
    )?;
    let sender = node
        .spawn_agent(json!({ "name": "sender", "backend": { "process": { "command": ["python3", script.display().to_string()] } } }))
        .await?;
    let sender = text(&sender, "/id")?;
    node.wait_agent_state(&sender, "RUNNING").await?;
    let task = node.submit_to(&sender, json!({ "to": echo })).await?;
    let done = node.wait_task_state(&task, "SUCCEEDED").await?;
    let r = &done["result"];
    ensure!(
        r["sent"]["ok"] == true && r["sent"]["value"] == json!({ "ping": 1 }),
        "{r}"
    );
    ensure!(
        r["published"]["ok"] == true && r["published"]["value"]["queued"] == 1,
        "{r}"
    );
    ensure!(
        r["missing"]["ok"] == false && r["missing"]["error"].as_str().unwrap_or_default().contains("no agent"),
        "{r}"
    );
    // The echo agent's history names the sender.
    let h = node
        .gql_ok(
            "query($id: ID!) { agent(id: $id) { messages { from priority outcome } } }",
            json!({ "id": echo }),
        )
        .await?;
    ensure!(
        h["agent"]["messages"][0]["from"] == sender.as_str() && h["agent"]["messages"][0]["priority"] == "HIGH",
        "{h}"
    );
    let deadline = Deadline::after(WAIT, "the listener to get the news");
    loop {
        let h = node
            .gql_ok(
                "query($id: ID!) { agent(id: $id) { messages { outcome } } }",
                json!({ "id": listener }),
            )
            .await?;
        if h["agent"]["messages"].as_array().map(Vec::len) == Some(1) {
            break;
        }
        deadline.tick(&h).await?;
    }
    Ok(())
}

#[tokio::test]
async fn messages_waiting_in_a_mailbox_and_the_history_survive_restarts() -> Result<()> {
    let mut node = Node::start(NodeOpts::named("durable-mail")).await?;
    let (agent, log) = node.start_gated_agent(&["jobs.#"]).await?;
    let gate = node.hold_one_and_queue_another(&agent, "jobs").await?;
    node.kill9().await?;
    node.restart().await?;
    node.wait_agent_state(&agent, "RUNNING").await?;
    gate.open()?;
    // Both are delivered again: the one held when the node died, and the one waiting.
    wait_answered(&log, &[1, 2], "both messages answered after the restart").await?;
    let dead = node.gql_ok("{ messageDeadLetters { id } }", json!({})).await?;
    ensure!(
        dead["messageDeadLetters"].as_array().is_some_and(Vec::is_empty),
        "{dead}"
    );
    // Its history survives a restart too (it lived in the node's memory).
    let history = "query($id: ID!) { agent(id: $id) { messages { id outcome } } }";
    let replied = |h: &serde_json::Value| {
        let lines = h["agent"]["messages"].as_array().cloned().unwrap_or_default();
        lines.iter().filter(|m| m["outcome"] == "REPLIED").count()
    };
    let deadline = Deadline::after(WAIT, "both deliveries in the agent's history");
    let before = loop {
        let h = node.gql_ok(history, json!({ "id": agent })).await?;
        if replied(&h) == 2 {
            break h;
        }
        deadline.tick(&h).await?;
    };
    node.terminate(WAIT).await?;
    node.restart().await?;
    let after = node.gql_ok(history, json!({ "id": agent })).await?;
    ensure!(after == before, "before the restart {before}, after it {after}");
    Ok(())
}

/// The messages waiting for an agent whose node dies are delivered where the agent moved,
/// as soon as it moved (not when that node's work next starts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_waiting_for_an_agent_whose_node_dies_are_delivered_where_it_moved() -> Result<()> {
    let mut nodes = super::failover::three_nodes_up().await?;
    let (agent, log) = nodes[2].start_gated_agent(&["moving.#"]).await?;
    let gate = nodes[2].hold_one_and_queue_another(&agent, "moving").await?;
    nodes[2].kill9().await?;
    super::failover::wait_moved(&nodes[0], &agent, "gamma").await?;
    gate.open()?;
    wait_answered(&log, &[1, 2], "both messages answered where the agent moved").await?;
    Ok(())
}

/// A node that stops answers a peer's request it is carrying out before its link goes: the
/// sender of a message its agent holds gets the agent's reply, not "went away before it
/// answered".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_answers_a_peers_message_under_way_before_its_link_goes() -> Result<()> {
    let (alpha, mut beta) = super::cluster::start_pair().await?;
    let (far, _) = beta.start_gated_agent(&[]).await?;
    let held = Gate::new()?;
    let long = alpha.gql(
        SEND,
        json!({ "to": far, "payload": { "gate": held.path().display().to_string() }, "timeoutMs": 60000 }),
    );
    let stop = async {
        beta.wait_gated_received().await?;
        beta.sigterm()?;
        let deadline = Deadline::after(WAIT, "beta to wait for the message under way as it stops");
        while beta.logged("answering the peers' requests under way") == 0 {
            deadline.tick(beta.log_tail()).await?;
        }
        held.open()?;
        beta.wait_exit(WAIT).await
    };
    let (long, stopped) = tokio::join!(long, stop);
    ensure!(stopped?.success(), "{}", beta.log_tail());
    let long = long?;
    ensure!(long["data"]["sendMessage"]["reply"]["gate"].is_string(), "{long}");
    Ok(())
}

/// A message to an agent on another node may wait there longer than an ordinary call to a
/// peer (5 s): it is answered when the agent answers. The dead-letter queue and the topics
/// are the whole cluster's, and a dead message is replayed through any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_across_nodes_wait_their_full_timeout_and_dead_letters_are_the_clusters() -> Result<()> {
    let (alpha, beta) = super::cluster::start_pair().await?;
    let spawn_gated = |node: &'static str| {
        let node = if node == "alpha" { &alpha } else { &beta };
        async move { anyhow::Ok(node.start_gated_agent(&["health.*"]).await?.0) }
    };
    let far = spawn_gated("beta").await?;
    let near = spawn_gated("alpha").await?;
    let held = Gate::new()?;
    let replayable = Gate::new()?;
    let gate = |g: &Gate| g.path().display().to_string();

    // Sent through alpha to beta's agent, which holds it until the test opens the gate.
    let long = alpha.gql(
        SEND,
        json!({ "to": far, "payload": { "far": true, "gate": gate(&held) }, "timeoutMs": 60000 }),
    );
    let meanwhile = async {
        let received = beta.data_dir().join("answered.log.received");
        let deadline = Deadline::after(WAIT, "the far message to reach its agent");
        while !received.exists() {
            deadline.tick("not yet").await?;
        }
        // A message that expires after 6 s (longer than a peer call may take) proves the
        // time has passed; only then is the far one let go.
        let expired = alpha
            .gql(
                SEND,
                json!({ "to": near, "payload": { "near": true, "gate": gate(&replayable) }, "timeoutMs": 6000 }),
            )
            .await?;
        expect_code(&expired, "UNAVAILABLE")?;
        held.open()?;
        anyhow::Ok(())
    };
    let (long, meanwhile) = tokio::join!(long, meanwhile);
    meanwhile?;
    let long = long?;
    ensure!(
        long["data"]["sendMessage"]["reply"]["far"] == true,
        "the far message was answered after more than 6 s: {long}"
    );

    // alpha's dead message is listed through beta, and replayed through it.
    let dead = beta.gql_ok("{ messageDeadLetters { id to } }", json!({})).await?;
    let dead = dead["messageDeadLetters"].as_array().context("dead letters")?.clone();
    ensure!(dead.len() == 1 && dead[0]["to"] == near.as_str(), "{dead:?}");
    replayable.open()?;
    let replayed = beta
        .gql_ok(
            "mutation($id: ID!) { replayMessage(id: $id) { reply } }",
            json!({ "id": dead[0]["id"] }),
        )
        .await?;
    ensure!(replayed["replayMessage"]["reply"]["near"] == true, "{replayed}");
    let left = alpha.gql_ok("{ messageDeadLetters { id } }", json!({})).await?;
    ensure!(left["messageDeadLetters"] == json!([]), "{left}");
    let topics = alpha.gql_ok("{ topics { pattern agents } }", json!({})).await?;
    ensure!(
        topics["topics"] == json!([{ "pattern": "health.*", "agents": 2 }]),
        "{topics}"
    );
    Ok(())
}

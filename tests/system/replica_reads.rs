//! Reads answered from each node's replica whatever its peer does: a frozen or killed
//! peer's agents, tasks, swarms, hosts, topics and dead letters are read here without asking
//! it, a peer's fault experiment is read and followed here (and recorded ABORTED when its
//! node restarts), and a write made through one node is read on another once it applied the
//! write's commit index.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::cluster::{spawn_held_on_beta, start_pair, start_pair_of, wait_member, SUBMIT_KEYED};
use super::command_line::{at, troupe};
use super::support::{expect_code, text, Deadline, Node, NodeOpts, Subscription, WAIT};

/// `agents` through `node`: the ids listed, `missingNodes`, and the error codes.
pub(super) async fn agents_through(node: &Node) -> Result<(Vec<String>, Value, Vec<String>)> {
    let body = node
        .gql("{ agents { totalCount missingNodes nodes { id } } }", json!({}))
        .await?;
    let ids = body["data"]["agents"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["id"].as_str().map(str::to_owned))
        .collect();
    let codes = body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["extensions"]["code"].as_str().map(str::to_owned))
        .collect();
    Ok((ids, body, codes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_peers_records_are_read_here_and_calls_to_its_live_agents_fail_fast_or_in_bounded_time() -> Result<()>
{
    let alpha = Node::start(
        NodeOpts::named("alpha")
            .arg("--http-timeout-ms", 1000)
            .arg("--http-max-in-flight", 1),
    )
    .await?;
    let join = format!("127.0.0.1:{}", alpha.cluster_port);
    let beta = Node::start(NodeOpts::named("beta").arg("--join", join)).await?;
    wait_member(&alpha, "beta", "UP").await?;
    let mine = alpha.spawn_builtin("echo", &[]).await?;
    let theirs = text(
        &alpha
            .spawn_agent(json!({ "name": "far", "backend": { "builtin": { "kind": "echo" } }, "node": "beta" }))
            .await?,
        "/id",
    )?;
    let task = alpha.submit_to(&theirs, json!(1)).await?;
    alpha.wait_task_state(&task, "SUCCEEDED").await?;
    // Messages answered by beta's agent: its history keeps the newest 50.
    let mut sent = Vec::new();
    for n in 0..52 {
        let answer = alpha
            .gql_ok(super::support::messages::SEND, json!({ "to": theirs, "payload": n }))
            .await?;
        sent.push(text(&answer, "/sendMessage/id")?);
    }
    let swarm = alpha
        .gql_ok(
            "mutation { createSwarm(input: { name: \"held\", node: \"beta\", templates: [] }) { id } }",
            json!({}),
        )
        .await?;
    let swarm = text(&swarm, "/createSwarm/id")?;
    let set = "mutation($id: ID!) { setSwarmMemory(id: $id, key: \"k\", value: 7) { version } }";
    alpha.gql_ok(set, json!({ "id": swarm })).await?;
    // Beta's hosts connected, as a beat of beta's told alpha.
    let beta_hosts_up = |hosts: &Value| {
        let theirs: Vec<&Value> = hosts["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|h| h["node"] == "beta")
            .collect();
        !theirs.is_empty() && theirs.iter().all(|h| h["state"] == "UP" && h["seenAt"].is_string())
    };
    let deadline = Deadline::after(WAIT, "beta's hosts to be reported UP to alpha");
    loop {
        let hosts = alpha.gql_ok("{ hosts { id node state seenAt } }", json!({})).await?;
        if beta_hosts_up(&hosts) {
            break;
        }
        deadline.tick(hosts).await?;
    }
    // Beta's agent as beta sampled it, as a beat of beta's told alpha.
    let observed = "query($id: ID!) { agent(id: $id) { observedAt processGroups usage { rssBytes } \
                    health { healthy } } }";
    let deadline = Deadline::after(WAIT, "beta's agent to be reported to alpha");
    let sampled = loop {
        let agent = alpha.gql_ok(observed, json!({ "id": theirs })).await?;
        if agent["agent"]["observedAt"].is_string() {
            break agent;
        }
        deadline.tick(agent).await?;
    };
    ensure!(sampled["agent"]["health"]["healthy"] == true, "{sampled}");
    // A VM on beta's host, with the usage sample a beat of beta's carried.
    let created = alpha
        .gql_ok(
            "mutation { createVm(input: { name: \"far-vm\", vcpus: 1, memoryMiB: 256, node: \"beta\" }) { id } }",
            json!({}),
        )
        .await?;
    let far_vm = text(&created, "/createVm/id")?;
    let vm_read = "query($id: ID!) { vm(id: $id) { state stats { memoryKiB sampledAt } } }";
    let deadline = Deadline::after(WAIT, "beta's VM's sample to be reported to alpha");
    let vm_sampled = loop {
        let vm = alpha.gql_ok(vm_read, json!({ "id": far_vm })).await?;
        if vm["vm"]["stats"]["sampledAt"].is_string() && vm["vm"]["stats"]["memoryKiB"] == 256 * 1024 {
            break vm;
        }
        deadline.tick(vm).await?;
    };
    // What libvirt lists on that host, as beta's last sweep found it and a beat carried it.
    let placed = alpha
        .gql_ok(
            "query($id: ID!) { vm(id: $id) { hostId spec { domain } } }",
            json!({ "id": far_vm }),
        )
        .await?;
    let (far_host, far_domain) = (text(&placed, "/vm/hostId")?, text(&placed, "/vm/spec/domain")?);
    let domains_read = "query($id: ID!) { host(id: $id) { domains { name state observedAt } } }";
    let lists_far_domain = |data: &Value| {
        let domains = data["host"]["domains"].as_array().into_iter().flatten();
        domains
            .into_iter()
            .any(|d| d["name"] == far_domain.as_str() && d["state"] == "RUNNING" && d["observedAt"].is_string())
    };
    let deadline = Deadline::after(WAIT, "beta's host's domains to be reported to alpha");
    loop {
        let host = alpha.gql(domains_read, json!({ "id": far_host })).await?;
        if lists_far_domain(&host["data"]) {
            break;
        }
        deadline.tick(host).await?;
    }

    // Beta's supervision tree, as a beat of beta's reported it, its agent in it.
    let tree_read = "{ supervisionTree(node: \"beta\") { observedAt children { id supervisor { \
                     children { id supervisor { children { id supervisor { children { id } } } } } } } } }";
    let deadline = Deadline::after(WAIT, "beta's tree, with its agent, reported to alpha");
    loop {
        // UNAVAILABLE until beta's first report.
        let tree = alpha.gql(tree_read, json!({})).await?;
        if tree["data"]["supervisionTree"]["observedAt"].is_string() && tree.to_string().contains(&theirs) {
            break;
        }
        deadline.tick(tree).await?;
    }

    // Beta's agent's history, as beta wrote it in the background: the newest 50.
    let history_read = "query($id: ID!) { agent(id: $id) { messages { id outcome } messagesWaiting } }";
    let newest: Vec<&str> = sent[2..].iter().map(String::as_str).collect();
    let replied = |mailbox: &Value| -> Vec<String> {
        let lines = mailbox["agent"]["messages"].as_array().into_iter().flatten();
        let replied = lines.filter(|m| m["outcome"] == "REPLIED");
        replied.filter_map(|m| m["id"].as_str().map(str::to_owned)).collect()
    };
    let deadline = Deadline::after(WAIT, "beta's agent's history to be written");
    loop {
        let mailbox = alpha.gql_ok(history_read, json!({ "id": theirs })).await?;
        if replied(&mailbox) == newest {
            break;
        }
        deadline.tick(mailbox).await?;
    }

    beta.freeze()?;
    // Its tree is read here (it asked beta's supervisors, and waited for them).
    let tree = alpha.gql_ok(tree_read, json!({})).await?;
    ensure!(tree.to_string().contains(&theirs), "{tree}");
    let unknown = alpha
        .gql("{ supervisionTree(node: \"nobody\") { name } }", json!({}))
        .await?;
    expect_code(&unknown, "NOT_FOUND")?;
    // A VM of beta's is read here too (it asked beta for its VM's view, and waited for it).
    let vm_frozen = alpha.gql_ok(vm_read, json!({ "id": far_vm })).await?;
    ensure!(
        vm_frozen["vm"]["state"] == "RUNNING" && vm_frozen["vm"]["stats"]["sampledAt"].is_string(),
        "{vm_frozen} (before the freeze: {vm_sampled})"
    );
    // And the domains of beta's host (it asked beta's driver, and waited for it).
    let listed = alpha.gql_ok(domains_read, json!({ "id": far_host })).await?;
    ensure!(lists_far_domain(&listed), "{listed}");
    // Reads are answered from alpha's replica: they never wait for beta (alpha cuts a
    // request at 1 s, and a call to a peer waits longer for a frozen one).
    let lookup = alpha
        .gql_ok("query($id: ID!) { task(id: $id) { id state } }", json!({ "id": task }))
        .await?;
    ensure!(lookup["task"]["state"] == "SUCCEEDED", "{lookup}");
    // Its agent's mailbox too (it asked beta's live mailbox).
    let mailbox = alpha.gql_ok(history_read, json!({ "id": theirs })).await?;
    ensure!(
        replied(&mailbox) == newest && mailbox["agent"]["messagesWaiting"] == 0,
        "the newest 50 of {sent:?}, oldest first: {mailbox}"
    );
    let swarms = alpha
        .gql_ok(
            "query($id: ID!) { swarms { id } swarm(id: $id) { node memory { key value } tasks { id } } \
             topics { pattern } messageDeadLetters { id } }",
            json!({ "id": swarm }),
        )
        .await?;
    ensure!(
        swarms["swarms"] == json!([{ "id": swarm }])
            && swarms["swarm"]["node"] == "beta"
            && swarms["swarm"]["memory"] == json!([{ "key": "k", "value": 7 }]),
        "{swarms}"
    );
    // Beta's hosts as its last beat reported them, and when.
    let hosts = alpha.gql_ok("{ hosts { id node state seenAt } }", json!({})).await?;
    ensure!(beta_hosts_up(&hosts), "{hosts}");
    let one = hosts["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|h| h["node"] == "beta")
        .map(|h| text(h, "/id"))
        .context("a host of beta")??;
    let host = alpha
        .gql_ok("query($id: ID!) { host(id: $id) { id state } }", json!({ "id": one }))
        .await?;
    ensure!(host["host"]["state"] == "UP", "{host}");
    // The command line's table tells the two nodes' sim-1 apart as `hosts get` names them.
    let (code, out, err) = troupe(&["hosts", "list"], &at(&alpha)).await?;
    ensure!(code == 0, "exit {code}: {out}{err}");
    let names: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    ensure!(
        names.contains(&"sim-1@alpha") && names.contains(&"sim-1@beta") && !names.contains(&"sim-1"),
        "{out}"
    );
    // And its events are asked for by that name; the bare name, which two hosts share, is
    // refused with both.
    let theirs_sim = alpha
        .gql_ok("query { host(id: \"sim-1@beta\") { id } }", json!({}))
        .await?;
    let theirs_sim = text(&theirs_sim, "/host/id")?;
    let (code, out, err) = troupe(&["events", "--subject", "sim-1@beta", "-o", "jsonl"], &at(&alpha)).await?;
    ensure!(
        code == 0 && !out.is_empty() && out.lines().all(|l| l.contains(&theirs_sim)),
        "exit {code}: {out}{err}"
    );
    let (code, _, err) = troupe(&["events", "--subject", "sim-1"], &at(&alpha)).await?;
    ensure!(
        code != 0 && err.contains("sim-1@alpha") && err.contains("sim-1@beta"),
        "exit {code}: {err}"
    );
    // What beta's agent shows of itself is beta's last sample, read here with its time.
    let frozen = alpha.gql_ok(observed, json!({ "id": theirs })).await?;
    ensure!(
        frozen["agent"]["observedAt"].is_string() && frozen["agent"]["health"]["healthy"] == true,
        "{frozen}"
    );
    // What needs beta's live agent (a lifecycle change) waits for it; the request is
    // bounded (408) and, while it waits, the one request slot is taken: of two such calls
    // sent together, one is shed at once (503) and the other cut at the timeout.
    let live = |n: u32| {
        let q = json!({ "query": format!("mutation {{ a{n}: pauseAgent(id: \"{theirs}\") {{ id }} }}") });
        let client = super::support::http_client().build().expect("http client");
        let (url, token) = (alpha.url("/graphql"), alpha.token.clone());
        async move {
            let resp = client.post(url).bearer_auth(token).json(&q).send().await?;
            Ok::<u16, anyhow::Error>(resp.status().as_u16())
        }
    };
    let (a, b) = tokio::join!(live(1), live(2));
    let mut statuses = vec![a?, b?];
    statuses.sort();
    ensure!(
        statuses == vec![408, 503],
        "two changes to a frozen peer's agent: {statuses:?}"
    );

    wait_member(&alpha, "beta", "DOWN").await?;
    // The list is whole: beta's agent is in alpha's replica, no node is missing.
    let (ids, body, codes) = agents_through(&alpha).await?;
    ensure!(
        ids.contains(&mine) && ids.contains(&theirs) && ids.len() == 2,
        "both agents listed: {body}"
    );
    ensure!(
        body["data"]["agents"]["missingNodes"] == json!([]) && codes.is_empty(),
        "{body}"
    );
    // Work for beta's agent needs beta: refused.
    let submit = alpha
        .gql(SUBMIT_KEYED, json!({ "input": { "agentId": theirs, "payload": 2 } }))
        .await?;
    expect_code(&submit, "UNAVAILABLE")?;
    beta.thaw()?;
    wait_member(&alpha, "beta", "UP").await?;
    let (ids, body, _) = agents_through(&alpha).await?;
    ensure!(
        ids.len() == 2 && body["data"]["agents"]["missingNodes"] == json!([]),
        "{body}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_peers_running_task_and_agents_are_still_read_here() -> Result<()> {
    let (alpha, mut beta) = start_pair().await?;
    let gate = super::support::Gate::new()?;
    let held = spawn_held_on_beta(&alpha, &gate).await?;
    let task = alpha.submit_to(&held, json!("never")).await?;
    alpha.wait_task_state(&task, "RUNNING").await?;
    let q = "subscription($id: ID!) { taskUpdates(id: $id) { state } }";
    let mut sub = Subscription::start(&alpha, q, json!({ "id": task })).await?;
    let first = sub.next_with_deadline().await?;
    ensure!(
        first.is_some_and(|d| d["taskUpdates"]["state"] == "RUNNING"),
        "first update"
    );

    beta.kill9().await?;
    wait_member(&alpha, "beta", "DOWN").await?;
    // Two voters, one gone: nothing can change, and alpha serves what the log last said,
    // without asking beta and without an error.
    let lookup = alpha
        .gql_ok("query($id: ID!) { task(id: $id) { state } }", json!({ "id": task }))
        .await?;
    ensure!(lookup["task"]["state"] == "RUNNING", "{lookup}");
    let (ids, body, codes) = agents_through(&alpha).await?;
    ensure!(
        ids == vec![held.clone()] && body["data"]["agents"]["missingNodes"] == json!([]) && codes.is_empty(),
        "{body}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_node_is_read_on_another_once_it_applied_the_writes_commit_index() -> Result<()> {
    let (alpha, beta) = start_pair().await?;
    let m = "mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }";
    let body = json!({ "query": m, "variables": { "input": { "name": "seen-elsewhere", "backend": { "builtin": { "kind": "echo" } } } } });
    let (_, answer) = alpha.post_graphql(Some(&alpha.token), &body).await?;
    let id = text(&answer, "/data/spawnAgent/id")?;
    let index = answer["extensions"]["commitIndex"]
        .as_u64()
        .with_context(|| format!("a mutation's answer carries its commit index: {answer}"))?;
    ensure!(index > 0, "{answer}");
    // A read on beta that names the index sees the write.
    let q = "query($id: ID!) { agent(id: $id) { id name } }";
    let read =
        |after: Value| json!({ "query": q, "variables": { "id": id }, "extensions": { "minCommitIndex": after } });
    let (_, seen) = beta.post_graphql(Some(&beta.token), &read(json!(index))).await?;
    ensure!(seen["data"]["agent"]["name"] == "seen-elsewhere", "{seen}");
    ensure!(
        seen["extensions"]["commitIndex"].is_null(),
        "a query carries no commit index: {seen}"
    );
    // An index the cluster never reached is waited for, boundedly; a malformed one is refused.
    let (_, ahead) = beta
        .post_graphql(Some(&beta.token), &read(json!(index + 1_000_000)))
        .await?;
    expect_code(&ahead, "UNAVAILABLE")?;
    let (_, bad) = beta.post_graphql(Some(&beta.token), &read(json!("soon"))).await?;
    expect_code(&bad, "INVALID_INPUT")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_experiment_is_read_here_while_the_peer_is_frozen_and_ends_aborted_when_the_peer_restarts() -> Result<()>
{
    let (alpha, mut beta) = super::cluster::start_pair_of(
        NodeOpts::named("alpha")
            .arg("--fault-injection", "true")
            .arg("--http-timeout-ms", 1000),
        NodeOpts::named("beta").arg("--fault-injection", "true"),
    )
    .await?;
    let agent = beta.spawn_builtin("echo", &["far"]).await?;
    let started = super::experiments::start(
        &alpha,
        json!({ "name": "held far", "durationMs": 120000, "faults": [{ "action": "HANG", "target": { "ids": [agent], "nodes": ["beta"] } }] }),
    )
    .await?;
    let id = text(&started, "/id")?;
    ensure!(id.ends_with("@beta"), "{started}");
    // Read through the node that answered the start, at once: its record was written first.
    let at_once = alpha
        .gql_ok("query($id: ID!) { experiment(id: $id) { id } }", json!({ "id": id }))
        .await?;
    ensure!(at_once["experiment"]["id"] == id, "{at_once}");
    let read = "query($id: ID!) { experiment(id: $id) { id state injections { outcome } } experiments { id state } }";
    let deadline = Deadline::after(WAIT, "beta's experiment, its hang armed, in alpha's replica");
    loop {
        let r = alpha.gql_ok(read, json!({ "id": id })).await?;
        if r["experiment"]["injections"][0]["outcome"] == "ARMED" {
            break;
        }
        deadline.tick(r).await?;
    }

    beta.freeze()?;
    // Read from alpha's replica: it asked beta (and was cut at alpha's 1 s).
    let frozen = alpha.gql_ok(read, json!({ "id": id })).await?;
    ensure!(
        frozen["experiment"]["state"] == "ACTIVE" && frozen["experiments"] == json!([{ "id": id, "state": "ACTIVE" }]),
        "{frozen}"
    );
    let q = "subscription($id: ID!) { experimentUpdates(id: $id) { state report { reason } } }";
    let mut updates = Subscription::start(&alpha, q, json!({ "id": id })).await?;
    let first = updates.next_with_deadline().await?.context("a first update")?;
    ensure!(first["experimentUpdates"]["state"] == "ACTIVE", "{first}");
    beta.thaw()?;

    // Its gates went with beta's process: beta's restart records it ABORTED, and alpha's
    // subscription, following its record, ends with that.
    beta.restart().await?;
    let last = updates.next_with_deadline().await?.context("the update of its end")?;
    let reason = last["experimentUpdates"]["report"]["reason"].as_str().unwrap_or("");
    ensure!(
        last["experimentUpdates"]["state"] == "ABORTED" && reason.contains("restarted"),
        "{last}"
    );
    ensure!(updates.next_with_deadline().await?.is_none(), "the stream ends with it");
    let ended = super::experiments::finished(&beta, &id).await?;
    ensure!(ended["state"] == "ABORTED", "{ended}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_agents_open_breaker_is_read_here_as_its_node_last_sampled_it() -> Result<()> {
    let (alpha, beta) = start_pair_of(
        NodeOpts::named("alpha").arg("--breaker-failures", 1),
        NodeOpts::named("beta"),
    )
    .await?;
    let agent = alpha
        .spawn_agent(json!({ "name": "broken", "backend": { "builtin": { "kind": "fail" } } }))
        .await?;
    let agent = text(&agent, "/id")?;
    let t = alpha
        .submit(json!({ "agentId": agent, "payload": {}, "maxAttempts": 1 }))
        .await?;
    alpha.wait_task_state(&text(&t, "/id")?, "DEAD").await?;
    let q = "query($id: ID!) { agent(id: $id) { breaker { state consecutiveFailures } observedAt } }";
    let here = alpha.gql_ok(q, json!({ "id": agent })).await?;
    ensure!(here["agent"]["breaker"]["state"] == "OPEN", "{here}");
    // beta holds no breaker of alpha's agents: it shows alpha's last sample, not a CLOSED
    // breaker nothing observed.
    let deadline = Deadline::after(WAIT, "beta to show the breaker alpha opened");
    loop {
        let there = beta.gql_ok(q, json!({ "id": agent })).await?;
        let b = &there["agent"]["breaker"];
        if b["state"] == "OPEN" && b["consecutiveFailures"] == 1 {
            break;
        }
        deadline.tick(there).await?;
    }
    Ok(())
}

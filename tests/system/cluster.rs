//! Two nodes on loopback: membership, spawning on a peer, tasks visible through either
//! node, and calls to a peer's live agents (the reads served from each node's replica are in
//! `replica_reads.rs`).

use std::collections::BTreeMap;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::replica_reads::agents_through;
use super::support::{expect_code, text, Deadline, Node, NodeOpts, Subscription, WAIT};

/// name -> status of every member `node` reports.
async fn members(node: &Node) -> Result<BTreeMap<String, String>> {
    let data = node
        .gql_ok("{ node { name members { name address status } } }", json!({}))
        .await?;
    let list = data["node"]["members"].as_array().cloned().unwrap_or_default();
    list.iter()
        .map(|m| -> Result<(String, String)> { Ok((text(m, "/name")?, text(m, "/status")?)) })
        .collect()
}

/// Starts "alpha", then "beta" joining it, and waits until each lists both as UP.
pub(super) async fn start_pair() -> Result<(Node, Node)> {
    start_pair_with(NodeOpts::named("beta")).await
}

/// [`start_pair`] with `beta` started with these options (its name must be `beta`).
pub(super) async fn start_pair_with(beta: NodeOpts) -> Result<(Node, Node)> {
    start_pair_of(NodeOpts::named("alpha"), beta).await
}

/// Starts `alpha`, then `beta` joined to it, and waits until each lists the other UP.
pub(super) async fn start_pair_of(alpha: NodeOpts, beta: NodeOpts) -> Result<(Node, Node)> {
    let alpha = Node::start(alpha).await?;
    let join = format!("127.0.0.1:{}", alpha.cluster_port);
    let beta = Node::start(beta.arg("--join", join)).await?;
    both_up(&alpha, &beta).await?;
    Ok((alpha, beta))
}

/// Waits until alpha and beta list each other UP.
pub(super) async fn both_up(alpha: &Node, beta: &Node) -> Result<()> {
    let want: BTreeMap<String, String> = [("alpha", "UP"), ("beta", "UP")]
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect();
    let deadline = Deadline::after(WAIT, "alpha and beta to list each other UP");
    loop {
        let (a, b) = (members(alpha).await?, members(beta).await?);
        if a == want && b == want {
            return Ok(());
        }
        deadline.tick(format!("alpha sees {a:?}, beta sees {b:?}")).await?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raft_lane_listens_where_raft_listen_says_and_the_log_travels_on_it() -> Result<()> {
    let port = super::support::free_port()?;
    let (alpha, beta) =
        start_pair_with(NodeOpts::named("beta").arg("--raft-listen", format!("127.0.0.1:{port}"))).await?;
    // beta's lane takes connections on the port it was given.
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .with_context(|| format!("nothing listens on beta's --raft-listen port {port}"))?;
    // A write on alpha, the leader, reaches beta over that lane.
    let (secret, _) = super::replicated::create_token(&alpha, "lane").await?;
    super::replicated::works_on(&beta, &secret).await?;
    let metrics = alpha.metrics().await?;
    let lane = metrics
        .lines()
        .find(|l| l.starts_with("troupe_raft_messages_total{way=\"lane\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or_default();
    ensure!(lane > 0.0, "alpha sent nothing on beta's lane: {metrics}");
    // The pre-votes are counted from the start, at 0 in a cluster that held no election
    // (the counter appeared only with the first pre-vote).
    for outcome in ["won", "lost"] {
        let zero = format!("troupe_raft_pre_votes_total{{outcome=\"{outcome}\"}} 0");
        ensure!(metrics.lines().any(|l| l == zero), "no {zero}: {metrics}");
    }
    // So are the snapshots held back for a member catching up.
    let held = "troupe_raft_snapshots_total{event=\"held\"} 0";
    ensure!(metrics.lines().any(|l| l == held), "no {held}: {metrics}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_nodes_list_each_other_up_with_addresses() -> Result<()> {
    let (alpha, beta) = start_pair().await?;
    for node in [&alpha, &beta] {
        let data = node
            .gql_ok("{ node { name members { name address status } } }", json!({}))
            .await?;
        ensure!(data["node"]["name"] == node.name.as_str(), "{data}");
        for member in data["node"]["members"].as_array().into_iter().flatten() {
            let address = text(member, "/address")?;
            ensure!(!address.is_empty(), "member without an address: {member}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_listening_on_port_0_advertises_the_port_it_got() -> Result<()> {
    let node = Node::start(NodeOpts {
        cluster_port: Some(0),
        ..NodeOpts::named("anyport")
    })
    .await?;
    let data = node
        .gql_ok("{ cluster { members { name address } } }", json!({}))
        .await?;
    let address = text(&data, "/cluster/members/0/address")?;
    let port: u16 = address.rsplit_once(':').map_or("", |(_, p)| p).parse()?;
    ensure!(port != 0, "{data}");
    // It is where the node listens: a peer could dial it.
    tokio::net::TcpStream::connect(address.as_str()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_spawned_on_peer_runs_tasks_visible_through_both_nodes() -> Result<()> {
    let (alpha, beta) = start_pair().await?;
    let input = json!({
        "name": "remote-echo",
        "backend": { "builtin": { "kind": "echo" } },
        "node": "beta",
    });
    let agent = alpha.spawn_agent(input).await?;
    ensure!(agent["node"] == "beta", "spawned through alpha for beta: {agent}");
    let agent = text(&agent, "/id")?;
    let on_beta = beta.wait_agent_state(&agent, "RUNNING").await?;
    ensure!(on_beta["node"] == "beta", "{on_beta}");

    let payload = json!({ "across": ["the", "cluster"] });
    let id = alpha.submit_to(&agent, payload.clone()).await?;
    let done = alpha.wait_task_state(&id, "SUCCEEDED").await?;
    ensure!(
        done["result"] == payload && done["agentId"] == agent.as_str(),
        "through alpha: {done}"
    );
    let seen: Value = beta.task(&id).await?;
    ensure!(
        seen["state"] == "SUCCEEDED" && seen["result"] == payload,
        "through beta: {seen}"
    );
    let remote = alpha.agent(&agent).await?;
    ensure!(remote["node"] == "beta", "agent looked up through alpha: {remote}");
    // Beta's supervision tree, described by beta's supervisors, read through alpha as
    // beta's heartbeat answers report it (sampled at most once a second).
    let tree = "query($n: String) { supervisionTree(node: $n) { name children { id supervisor { children { id supervisor { children { id kind } } } } } } }";
    let deadline = Deadline::after(WAIT, "beta's agent in beta's tree, read through alpha");
    loop {
        // UNAVAILABLE until beta's first report.
        let of_beta = alpha.gql(tree, json!({ "n": "beta" })).await?.to_string();
        if of_beta.contains(&agent) {
            break;
        }
        deadline.tick(of_beta).await?;
    }
    let of_alpha = alpha.gql_ok(tree, json!({ "n": null })).await?.to_string();
    ensure!(!of_alpha.contains(&agent), "beta's agent in alpha's tree: {of_alpha}");

    // Lists are the cluster's: an agent of alpha's own, paged one at a time, comes with beta's.
    let local = alpha.spawn_builtin("echo", &[]).await?;
    let mut seen_agents = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let q = "query($after: String) { agents(first: 1, after: $after) { totalCount nodes { id node } pageInfo { hasNextPage endCursor } } }";
        let data = alpha.gql_ok(q, json!({ "after": after })).await?;
        let page = &data["agents"];
        ensure!(page["totalCount"] == 2, "totalCount through alpha: {page}");
        for a in page["nodes"].as_array().into_iter().flatten() {
            seen_agents.push(text(a, "/id")?);
        }
        if page["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = Some(text(page, "/pageInfo/endCursor")?);
    }
    let mut want = vec![agent.clone(), local];
    want.sort();
    ensure!(
        seen_agents == want,
        "agents through alpha: {seen_agents:?}, want {want:?}"
    );
    // The task lives on beta (it was forwarded there); alpha lists it all the same.
    let tasks = alpha
        .gql_ok("{ tasks(state: SUCCEEDED) { totalCount nodes { id } } }", json!({}))
        .await?;
    ensure!(
        tasks["tasks"]["totalCount"] == 1 && tasks["tasks"]["nodes"][0]["id"] == id.as_str(),
        "tasks through alpha: {tasks}"
    );
    // A task queued on alpha may not depend on beta's: the refusal names where to send it.
    let m = "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id } }";
    let input = json!({ "capability": "nobody", "payload": 1, "dependsOn": [id] });
    let refused = alpha.gql(m, json!({ "input": input })).await?;
    expect_code(&refused, "INVALID_INPUT")?;
    ensure!(
        refused.to_string().contains("is held by node beta") && refused.to_string().contains("submit it to beta"),
        "{refused}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawning_on_an_unknown_node_is_invalid_input() -> Result<()> {
    let node = Node::start(NodeOpts::named("alpha")).await?;
    let q = "mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }";
    let input = json!({ "name": "lost", "backend": { "builtin": { "kind": "echo" } }, "node": "nope" });
    expect_code(&node.gql(q, json!({ "input": input })).await?, "INVALID_INPUT")?;
    let data = node.gql_ok("{ agents { totalCount } }", json!({})).await?;
    ensure!(data["agents"]["totalCount"] == 0, "{data}");
    // A swarm too: a name that is no member is the caller's mistake, not an outage.
    let q = "mutation($input: CreateSwarmInput!) { createSwarm(input: $input) { id } }";
    let input = json!({ "name": "lost", "templates": [], "node": "nope" });
    let refused = node.gql(q, json!({ "input": input })).await?;
    expect_code(&refused, "INVALID_INPUT")?;
    ensure!(
        refused
            .to_string()
            .contains("nope is not a member of the cluster; members: alpha"),
        "{refused}"
    );
    Ok(())
}

/// Waits until `node` reports `peer` with `status`.
pub(super) async fn wait_member(node: &Node, peer: &str, status: &str) -> Result<()> {
    let deadline = Deadline::after(WAIT, format!("{} to report {peer} {status}", node.name));
    loop {
        let seen = members(node).await?;
        if seen.get(peer).map(String::as_str) == Some(status) {
            return Ok(());
        }
        deadline.tick(format!("{} sees {seen:?}", node.name)).await?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_peer_is_reported_down_then_up_again_when_it_resumes() -> Result<()> {
    let (alpha, beta) = start_pair().await?;
    // A stopped process keeps its TCP session open: only the heartbeat can tell.
    beta.freeze()?;
    wait_member(&alpha, "beta", "DOWN").await?;
    let data = alpha.gql_ok("{ node { members { name status } } }", json!({})).await?;
    ensure!(
        members(&alpha).await?.get("alpha").map(String::as_str) == Some("UP"),
        "alpha should still list itself UP: {data}"
    );
    beta.thaw()?;
    wait_member(&alpha, "beta", "UP").await?;
    Ok(())
}

/// An exec agent on beta, spawned through `via`, whose every task waits for `gate`; its id.
pub(super) async fn spawn_held_on_beta(via: &Node, gate: &super::support::Gate) -> Result<String> {
    let input = json!({
        "name": "held",
        "backend": { "exec": { "command": ["/bin/sh", "-c", gate.script("cat")] } },
        "node": "beta",
    });
    text(&via.spawn_agent(input).await?, "/id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_updates_follow_a_task_queued_on_a_peer_to_its_end() -> Result<()> {
    let (alpha, _beta) = start_pair().await?;
    let gate = super::support::Gate::new()?;
    let held = spawn_held_on_beta(&alpha, &gate).await?;
    // One slot, held until the gate opens: the second task waits on beta while we
    // subscribe through alpha.
    alpha.submit_to(&held, json!("blocker")).await?;
    let id = alpha.submit_to(&held, json!("second")).await?;
    let q = "subscription($id: ID!) { taskUpdates(id: $id) { state } }";
    let mut sub = Subscription::start(&alpha, q, json!({ "id": id })).await?;
    let mut states = Vec::new();
    let first = sub.next_with_deadline().await?.context("no current state")?;
    states.push(text(&first, "/taskUpdates/state")?);
    gate.open()?;
    while let Some(data) = sub.next_with_deadline().await? {
        states.push(text(&data, "/taskUpdates/state")?);
    }
    ensure!(
        states.first().map(String::as_str) == Some("QUEUED"),
        "states: {states:?}"
    );
    ensure!(
        states.last().map(String::as_str) == Some("SUCCEEDED"),
        "states: {states:?}"
    );
    Ok(())
}

pub(super) const SUBMIT_KEYED: &str =
    "mutation($input: SubmitTaskInput!, $key: String) { submitTask(input: $input, idempotencyKey: $key) { id } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_submit_with_a_key_runs_once_however_often_it_is_sent() -> Result<()> {
    let (alpha, beta) = start_pair().await?;
    let spawn = "mutation($input: SpawnAgentInput!) { spawnAgent(input: $input, idempotencyKey: \"agent-9\") { id } }";
    let input = json!({ "input": { "name": "remote", "backend": { "builtin": { "kind": "echo" } }, "node": "beta" } });
    let agent = text(&alpha.gql_ok(spawn, input.clone()).await?, "/spawnAgent/id")?;
    ensure!(agent.ends_with("@beta"), "an agent's id names its node: {agent}");
    // The same spawn sent straight to beta with the same key is the same agent.
    let direct = text(&beta.gql_ok(spawn, input).await?, "/spawnAgent/id")?;
    ensure!(direct == agent, "{direct} / {agent}");
    let vars = json!({ "input": { "agentId": agent, "payload": "once" }, "key": "order-17" });
    let first = text(&alpha.gql_ok(SUBMIT_KEYED, vars.clone()).await?, "/submitTask/id")?;
    let again = text(&alpha.gql_ok(SUBMIT_KEYED, vars.clone()).await?, "/submitTask/id")?;
    let via_beta = text(&beta.gql_ok(SUBMIT_KEYED, vars).await?, "/submitTask/id")?;
    ensure!(first == again && first == via_beta, "{first} / {again} / {via_beta}");
    ensure!(first.ends_with("@beta"), "the task lives where its agent does: {first}");
    beta.wait_task_state(&first, "SUCCEEDED").await?;
    let count = beta.gql_ok("{ tasks { totalCount } }", json!({})).await?;
    ensure!(count["tasks"]["totalCount"] == 1, "{count}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_submit_answered_again_on_another_node_makes_the_holder_queue_the_task_it_never_queued() -> Result<()> {
    let (alpha, beta) = start_pair().await?;
    let worker = beta.spawn_builtin("echo", &["work"]).await?;
    // beta acknowledges the submit without queueing it, as when the write committed while
    // its answer was lost (the test gate of a fault-injection build).
    beta.inject_fault("lose-enqueue")?;
    let vars = json!({ "input": { "capability": "work", "payload": "once" }, "key": "lost-1" });
    let first = text(&beta.gql_ok(SUBMIT_KEYED, vars.clone()).await?, "/submitTask/id")?;
    ensure!(first.ends_with("@beta"), "{first}");
    beta.clear_fault("lose-enqueue")?;
    ensure!(beta.task(&first).await?["state"] == "QUEUED");
    // The same submit sent again lands on alpha: beta no longer has an agent for the
    // capability, alpha has one, and alpha knows it from beta's beats.
    beta.act("stopAgent", &worker).await?;
    alpha.spawn_builtin("echo", &["work"]).await?;
    let rooms = "{ cluster { members { name rooms { capability } } } }";
    let deadline = super::support::Deadline::after(super::support::WAIT, "alpha to hear beta has no room for work");
    loop {
        let view = alpha.gql_ok(rooms, json!({})).await?;
        let members = view["cluster"]["members"].as_array().cloned().unwrap_or_default();
        let beta_serves = members.iter().any(|m| {
            m["name"] == "beta"
                && m["rooms"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["capability"] == "work"))
        });
        if !beta_serves {
            break;
        }
        deadline.tick(view).await?;
    }
    // alpha answers from the key's record: beta's task. It asks beta to make sure the task
    // is queued (before, a replayed answer never queued it, and it stayed QUEUED for ever);
    // beta's scheduler then hands it to alpha's agent.
    let again = text(&alpha.gql_ok(SUBMIT_KEYED, vars).await?, "/submitTask/id")?;
    ensure!(again == first, "{again} / {first}");
    alpha.wait_task_state(&first, "SUCCEEDED").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_agent_is_paused_checkpointed_probed_and_stopped_through_this_node() -> Result<()> {
    let (alpha, _beta) = start_pair().await?;
    let input = json!({ "name": "remote-counter", "backend": { "builtin": { "kind": "counter" } }, "node": "beta",
                        "labels": [{ "key": "where", "value": "beta" }] });
    let id = text(&alpha.spawn_agent(input).await?, "/id")?;
    ensure!(id.ends_with("@beta"), "{id}");
    ensure!(alpha.run_on(&id, json!({ "add": 3 })).await?["count"] == 3);
    let saved = alpha
        .gql_ok(
            "mutation($id: ID!) { checkpointAgent(id: $id, description: \"three\") { id } }",
            json!({ "id": id }),
        )
        .await?;
    let checkpoint = text(&saved, "/checkpointAgent/id")?;
    ensure!(alpha.act("pauseAgent", &id).await?["state"] == "PAUSED");
    ensure!(alpha.act("resumeAgent", &id).await?["state"] == "RUNNING");
    alpha.run_on(&id, json!({ "add": 4 })).await?;
    let rollback = "mutation($id: ID!, $c: ID!) { rollbackAgent(id: $id, checkpointId: $c) { state } }";
    alpha.gql_ok(rollback, json!({ "id": id, "c": checkpoint })).await?;
    ensure!(
        alpha.run_on(&id, json!({})).await?["count"] == 3,
        "the peer's agent was not rolled back"
    );
    // Another agent, without the label: the filtered count leaves it out.
    alpha.spawn_builtin("echo", &[]).await?;
    let q = "query($id: ID!) { agent(id: $id) { checkpoints { description } \
             observedAt health { healthy successRate } } \
             agents(labels: [{ key: \"where\", value: \"beta\" }]) { totalCount } }";
    // The agent's health as beta sampled it after its runs, which a beat brings to alpha.
    let deadline = super::support::Deadline::after(super::support::WAIT, "beta's sample of its agent");
    let seen = loop {
        let seen = alpha.gql_ok(q, json!({ "id": id })).await?;
        if seen["agent"]["health"]["successRate"] == 1.0 {
            break seen;
        }
        deadline.tick(seen).await?;
    };
    ensure!(
        seen["agent"]["checkpoints"][0]["description"] == "three"
            && seen["agent"]["health"]["healthy"] == true
            && seen["agent"]["observedAt"].is_string(),
        "{seen}"
    );
    ensure!(
        seen["agents"]["totalCount"] == 1,
        "the count ignores the label filter: {seen}"
    );
    ensure!(alpha.act("stopAgent", &id).await?["state"] == "STOPPED");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_gone_past_the_drop_time_leaves_the_lists_with_an_event_and_returns_when_it_answers() -> Result<()> {
    // beta learns the log without voting: alpha alone is the majority that commits the
    // MEMBER_DROPPED it writes while beta is gone (with two voters it could not).
    let alpha = NodeOpts::named("alpha")
        .arg("--peer-drop-after-ms", 4000)
        .arg("--voters", 1);
    let (alpha, mut beta) = start_pair_of(alpha, NodeOpts::named("beta")).await?;
    let q = "subscription { events(kinds: [\"MEMBER_DROPPED\"]) { subject data } }";
    let mut dropped = Subscription::start(&alpha, q, json!({})).await?;
    beta.kill9().await?;
    // Once it is dropped, an event says so; lists, read from alpha's replica, never missed
    // beta's part and have no error.
    let event = dropped.next_with_deadline().await?.context("the events stream ended")?;
    ensure!(event["events"]["subject"] == "beta", "{event}");
    ensure!(event["events"]["data"]["silentMs"].as_u64() >= Some(4000), "{event}");
    // Each member drops a silent peer from its own lists: the event names which one did.
    ensure!(event["events"]["data"]["by"] == "alpha", "{event}");
    let (ids, body, codes) = agents_through(&alpha).await?;
    ensure!(
        ids.is_empty() && body["data"]["agents"]["missingNodes"] == json!([]) && codes.is_empty(),
        "{body}"
    );
    beta.restart().await?;
    wait_member(&alpha, "beta", "UP").await?;
    let deadline = Deadline::after(WAIT, "beta's agents to be listed through alpha again");
    loop {
        let (_, body, codes) = agents_through(&alpha).await?;
        if codes.is_empty() && body["data"]["agents"]["missingNodes"] == json!([]) {
            break;
        }
        deadline.tick(body).await?;
    }
    Ok(())
}

/// Polls `path` on `node` until it answers `status`; the body then.
async fn answers(node: &Node, path: &str, status: u16) -> Result<String> {
    let deadline = Deadline::after(WAIT, format!("{path} on {} to answer {status}", node.name));
    loop {
        let (code, body) = node.get(path).await?;
        if code == status {
            return Ok(body);
        }
        deadline.tick(format!("{code} {body}")).await?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_cannot_commit_is_alive_but_not_ready() -> Result<()> {
    let (mut alpha, beta) = start_pair().await?;
    answers(&alpha, "/readyz", 200).await?;
    answers(&beta, "/readyz", 200).await?;
    // Two voters, one gone: beta cannot commit. It says so on /readyz, and stays alive on
    // /healthz (restarting it would not bring the majority back).
    alpha.kill9().await?;
    let body = answers(&beta, "/readyz", 503).await?;
    // (It stands for no election: nobody would vote for it, as a pre-vote tells it.)
    ensure!(
        body.contains("no leader is known") || body.contains("no leader heard") || body.contains("no majority"),
        "{body}"
    );
    // With the way out, should the majority not come back.
    ensure!(body.contains("troupe recover --data-dir"), "{body}");
    let (code, body) = beta.get("/healthz").await?;
    ensure!(code == 200, "{code} {body}");
    // Neither leaving nor forgetting can happen without a majority: both say the way out.
    for change in ["leaveCluster", "forgetMember"] {
        let q = format!("mutation {{ {change}(node: \"alpha\") {{ name }} }}");
        let answer = beta.gql(&q, json!({})).await?;
        expect_code(&answer, "UNAVAILABLE")?;
        ensure!(answer.to_string().contains("troupe recover"), "{change}: {answer}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_the_other_of_two_voters_at_once_after_it_stopped_names_the_way_out() -> Result<()> {
    let (alpha, mut beta) = start_pair().await?;
    // The leader has not yet noticed that no majority answers it (it takes a couple of
    // seconds): the change waits for one, and when none comes its answer still says what to do.
    beta.terminate(WAIT).await?;
    // A write sent meanwhile waits for a majority too, and says the same way out.
    let forget = alpha.gql("mutation { forgetMember(node: \"beta\") { name } }", json!({}));
    let submit = alpha.submit(json!({ "capability": "none-here", "payload": 1 }));
    let (answer, written) = tokio::join!(forget, submit);
    let answer = answer?;
    expect_code(&answer, "UNAVAILABLE")?;
    ensure!(answer.to_string().contains("troupe recover"), "{answer}");
    let refused = format!(
        "{:#}",
        written.err().context("a write without a majority was acknowledged")?
    );
    ensure!(
        refused.contains("UNAVAILABLE") && refused.contains("troupe recover"),
        "{refused}"
    );
    Ok(())
}

/// A member's data dir started under another name stops at once, naming the member (it
/// dialled itself, then failed after 10 s: "the leader … did not answer").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_data_dir_under_another_name_is_refused_naming_the_member() -> Result<()> {
    let (_alpha, mut beta) = start_pair().await?;
    beta.terminate(WAIT).await?;
    let args = super::support::serve_args(beta.data_dir(), "127.0.0.1:0", "other", &[])?;
    let dir = tempfile::tempdir()?;
    let mut other = super::support::Guard::spawn(&args, dir.path())?;
    let status = other.wait_exit(WAIT).await?;
    let said = std::fs::read_to_string(dir.path().join("stderr.log"))?;
    ensure!(
        !status.success() && said.contains("this data dir is member beta's") && said.contains("--node-name beta"),
        "{status}: {said}"
    );
    Ok(())
}

//! Nodes that share one replicated log: a token, an event cursor and the cluster's view
//! moved between them, and a leader killed under load losing nothing acknowledged.

use std::collections::BTreeSet;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::support::{error_code, text, Deadline, Node, NodeOpts, Subscription, WAIT};

pub(super) const CLUSTER: &str =
    "{ cluster { leader term commitIndex members { name address role state lag appliedLag working incarnation lastHeartbeat } } }";

/// Starts `first` alone, then each of `rest` joining it, and waits until every node's log
/// lists all of them.
pub(super) async fn start_cluster(first: NodeOpts, rest: Vec<NodeOpts>) -> Result<Vec<Node>> {
    let first = Node::start(first).await?;
    let join = format!("127.0.0.1:{}", first.cluster_port);
    let mut nodes = vec![first];
    for opts in rest {
        nodes.push(Node::start(opts.arg("--join", &join)).await?);
    }
    let names: BTreeSet<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let deadline = Deadline::after(WAIT, "every node to list every member of the log");
    'wait: loop {
        for node in &nodes {
            let seen = log_members(node).await?;
            if seen != names {
                deadline.tick(format!("{} lists {seen:?}", node.name)).await?;
                continue 'wait;
            }
        }
        return Ok(nodes);
    }
}

pub(super) async fn log_members(node: &Node) -> Result<BTreeSet<String>> {
    let data = node.gql_ok(CLUSTER, json!({})).await?;
    data["cluster"]["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| text(m, "/name"))
        .collect()
}

pub(super) async fn create_token(node: &Node, name: &str) -> Result<(String, String)> {
    let m = "mutation($n: String!) { createToken(input: { role: VIEWER, name: $n }) { secret token { id } } }";
    let data = node.gql_ok(m, json!({ "n": name })).await?;
    Ok((
        text(&data, "/createToken/secret")?,
        text(&data, "/createToken/token/id")?,
    ))
}

pub(super) async fn token_names(node: &Node) -> Result<BTreeSet<String>> {
    let data = node.gql_ok("{ tokens { name } }", json!({})).await?;
    data["tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| text(t, "/name"))
        .collect()
}

/// `(seq, kind, subject)` of every event `node` has after `after`.
pub(super) async fn events(node: &Node, after: u64) -> Result<Vec<(u64, String, String)>> {
    let q = "query($a: Int64) { events(after: $a, first: 1000) { seq kind subject } }";
    let data = node.gql_ok(q, json!({ "a": after })).await?;
    Ok(data["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap_or_default(),
                e["kind"].as_str().unwrap_or_default().to_owned(),
                e["subject"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

/// Waits until `node` can do what `query` does with `token` (its copy of the log caught up).
pub(super) async fn works_on(node: &Node, token: &str) -> Result<()> {
    let deadline = Deadline::after(WAIT, format!("the token to work on {}", node.name));
    loop {
        let body = node.gql_as(token, "{ node { name } }", json!({})).await?;
        if body["data"]["node"]["name"] == node.name.as_str() {
            return Ok(());
        }
        deadline.tick(body).await?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_made_on_one_node_works_on_the_other_and_its_revocation_ends_it_on_both() -> Result<()> {
    let nodes = start_cluster(NodeOpts::named("alpha"), vec![NodeOpts::named("beta")]).await?;
    let (alpha, beta) = (&nodes[0], &nodes[1]);
    let (secret, id) = create_token(alpha, "made-on-alpha").await?;
    works_on(beta, &secret).await?;
    // Made with the command line in beta's data dir while beta runs: it works on alpha at
    // once (alpha refused it until its first use on beta had imported it).
    let made = beta.create_token("viewer").await?;
    let body = alpha.gql_as(&made, "{ node { name } }", json!({})).await?;
    ensure!(
        body["data"]["node"]["name"] == alpha.name.as_str(),
        "a token made with troupe token create on beta is refused on alpha: {body}"
    );
    // A long-lived connection on alpha, opened with the token, ends when beta revokes it.
    let mut socket = match Subscription::init(&alpha.addr, Some(secret.as_str())).await? {
        Ok(socket) => socket,
        Err((code, reason)) => anyhow::bail!("the token was not accepted on alpha: {code:?} {reason}"),
    };
    socket
        .subscribe("subscription { events(kinds: [\"NOTHING\"]) { seq } }", json!({}))
        .await?;
    beta.gql_ok(
        "mutation($id: ID!) { revokeToken(id: $id) { revokedAt } }",
        json!({ "id": id }),
    )
    .await?;
    for node in [alpha, beta] {
        let body = node.gql_as(&secret, "{ node { name } }", json!({})).await?;
        ensure!(
            error_code(&body).as_deref() == Some("UNAUTHENTICATED"),
            "{} still takes a token revoked on beta: {body}",
            node.name
        );
    }
    let closed = socket.next_with_deadline().await;
    ensure!(
        !matches!(closed, Ok(Some(_))),
        "alpha's connection with the revoked token still streams: {closed:?}"
    );
    // Every member confirmed: nothing says otherwise.
    let unconfirmed = beta.events(&["TOKEN_REVOCATION_UNCONFIRMED"]).await?;
    ensure!(unconfirmed.is_empty(), "{unconfirmed:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_has_one_event_sequence_and_a_cursor_from_one_resumes_on_another() -> Result<()> {
    let nodes = start_cluster(NodeOpts::named("alpha"), vec![NodeOpts::named("beta")]).await?;
    let (alpha, beta) = (&nodes[0], &nodes[1]);
    for i in 0..3 {
        create_token(alpha, &format!("a{i}")).await?;
        create_token(beta, &format!("b{i}")).await?;
    }
    let on_alpha = events(alpha, 0).await?;
    let mine = |e: &&(u64, String, String)| e.1 == "TOKEN_CREATED";
    ensure!(on_alpha.iter().filter(mine).count() >= 6, "{on_alpha:?}");
    // Every event written on either node is in alpha's log: the same sequence is on beta.
    let deadline = Deadline::after(WAIT, "beta to hold alpha's sequence");
    loop {
        let on_beta = events(beta, 0).await?;
        if on_beta.len() >= on_alpha.len() && on_beta[..on_alpha.len()] == on_alpha[..] {
            break;
        }
        deadline.tick(format!("alpha {on_alpha:?}\nbeta {on_beta:?}")).await?;
    }
    // A client that read up to the middle on alpha resumes on beta: the rest, no gap, no twice.
    let cursor = on_alpha[on_alpha.len() / 2].0;
    let q = "subscription($a: Int64) { events(after: $a) { seq kind subject } }";
    let mut resumed = Subscription::start(beta, q, json!({ "a": cursor })).await?;
    create_token(alpha, "after-the-move").await?;
    let mut seen = Vec::new();
    loop {
        let e = resumed.next_with_deadline().await?.context("the stream ended")?;
        let e = &e["events"];
        let seq = e["seq"].as_u64().context("seq")?;
        seen.push(seq);
        if e["kind"] == "TOKEN_CREATED" && e["subject"].is_string() && seq > on_alpha.last().map_or(0, |l| l.0) {
            let names = token_names(beta).await?;
            if names.contains("after-the-move") {
                break;
            }
        }
    }
    let expected: Vec<u64> = (cursor + 1..=*seen.last().context("no event")?).collect();
    ensure!(seen == expected, "beta resumed from {cursor} with {seen:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_shows_its_leader_and_members_voters_first_then_learners() -> Result<()> {
    let nodes = start_cluster(
        NodeOpts::named("alpha").arg("--voters", 2),
        vec![NodeOpts::named("beta"), NodeOpts::named("gamma")],
    )
    .await?;
    let mut joined = Subscription::start(
        &nodes[0],
        "subscription { events(after: 0, kinds: [\"MEMBER_JOINED\"]) { subject data } }",
        json!({}),
    )
    .await?;
    for (name, role) in [("beta", "VOTER"), ("gamma", "LEARNER")] {
        let e = joined.next_with_deadline().await?.context("the stream ended")?;
        ensure!(
            e["events"]["subject"] == name && e["events"]["data"]["role"] == role,
            "{e}"
        );
    }
    let deadline = Deadline::after(WAIT, "gamma to see every member UP with its address");
    let view = loop {
        let data = nodes[2].gql_ok(CLUSTER, json!({})).await?;
        let up = data["cluster"]["members"]
            .as_array()
            .is_some_and(|ms| ms.iter().all(|m| m["state"] == "UP" && m["address"] != ""));
        if up {
            break data["cluster"].clone();
        }
        deadline.tick(data).await?;
    };
    ensure!(view["leader"] == "alpha", "{view}");
    ensure!(
        view["term"].as_u64() >= Some(1) && view["commitIndex"].as_u64() > Some(0),
        "{view}"
    );
    let role = |name: &str| -> Value {
        view["members"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["name"] == name)
            .map(|m| m["role"].clone())
            .unwrap_or_default()
    };
    ensure!(
        (role("alpha"), role("beta"), role("gamma")) == (json!("VOTER"), json!("VOTER"), json!("LEARNER")),
        "{view}"
    );
    // Only the leader knows how far behind each member is.
    ensure!(view["members"][0]["lag"].is_null(), "a follower named a lag: {view}");
    // Each start is counted (written in the background as the node comes up).
    let deadline = Deadline::after(WAIT, "the leader to know every member's lag and first incarnation");
    loop {
        let on_leader = nodes[0].gql_ok(CLUSTER, json!({})).await?;
        let known = on_leader["cluster"]["members"]
            .as_array()
            .is_some_and(|ms| ms.iter().all(|m| m["lag"].is_u64() && m["incarnation"] == 1));
        if known {
            break;
        }
        deadline.tick(on_leader).await?;
    }
    // A voter leaves: the learner takes its place, and that is said as any role change is.
    let leave = "mutation { leaveCluster(node: \"beta\") { state } }";
    ensure!(nodes[0].gql_ok(leave, json!({})).await?["leaveCluster"]["state"] == "LEFT");
    let deadline = Deadline::after(WAIT, "gamma's change to a voter to be said");
    loop {
        let changed = nodes[0].events_after(None, &["MEMBER_ROLE_CHANGED"]).await?;
        let said = changed
            .iter()
            .any(|e| e["data"]["node"] == "gamma" && e["data"]["role"] == "VOTER");
        if said {
            break;
        }
        deadline.tick(format!("{changed:?}")).await?;
    }
    let gamma = super::failover::member(&nodes[2], "gamma").await?;
    ensure!(gamma["role"] == "VOTER", "{gamma}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_mid_load_loses_nothing_acknowledged_and_catches_up_when_back() -> Result<()> {
    let mut nodes = start_cluster(
        NodeOpts::named("alpha"),
        vec![NodeOpts::named("beta"), NodeOpts::named("gamma")],
    )
    .await?;
    let leader = text(&nodes[0].gql_ok(CLUSTER, json!({})).await?, "/cluster/leader")?;
    let at = nodes
        .iter()
        .position(|n| n.name == leader)
        .context("the leader is not a node")?;
    let mut acked = BTreeSet::new();
    // Writes through every node, the leader's own included, until the leader is killed.
    for i in 0..6 {
        let node = &nodes[i % 3];
        let name = format!("before-{i}");
        create_token(node, &name).await?;
        acked.insert(name);
    }
    nodes[at].kill9().await?;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != at).collect();
    // The survivors elect a leader and take writes again; those refused meanwhile are not
    // acknowledged, and a retry with the same key would be the client's to make.
    let deadline = Deadline::after(WAIT, "the survivors to take writes again");
    let mut i = 0;
    while acked.len() < 16 {
        let node = &nodes[survivors[i % 2]];
        let name = format!("after-{i}");
        i += 1;
        let m = "mutation($n: String!) { createToken(input: { role: VIEWER, name: $n }) { token { id } } }";
        let body = node.gql(m, json!({ "n": name })).await?;
        if body["data"]["createToken"]["token"]["id"].is_string() {
            acked.insert(name);
        } else {
            ensure!(
                error_code(&body).as_deref() == Some("UNAVAILABLE"),
                "a write during the election failed otherwise: {body}"
            );
            deadline.tick(body).await?;
        }
    }
    // A survivor stood as soon as the lost leader's lease passed, because its session to the
    // leader closed (kill -9 closes the socket), rather than a random election timeout later.
    let stood = survivors.iter().any(|s| {
        std::fs::read_to_string(nodes[*s].data_dir().join("stderr.log"))
            .is_ok_and(|log| log.contains("the leader's session closed and its lease passed"))
    });
    ensure!(stood, "no survivor stood for election when the leader's session closed");
    for s in &survivors {
        let node = &nodes[*s];
        let view = node.gql_ok(CLUSTER, json!({})).await?;
        ensure!(view["cluster"]["leader"] != leader.as_str(), "{view}");
        // A follower applies a write the leader acknowledged within about a round trip
        // (docs/cluster.md, "What a read may miss"): it has each one then, never misses one.
        let deadline = Deadline::after(WAIT, "every acknowledged write on each survivor");
        loop {
            let names = token_names(node).await?;
            let lost: Vec<&String> = acked.iter().filter(|n| !names.contains(*n)).collect();
            if lost.is_empty() {
                break;
            }
            deadline
                .tick(format!("{} lacks acknowledged writes {lost:?}", node.name))
                .await?;
        }
    }
    // The old leader started again where it reaches nobody (a cookie that is not the
    // cluster's): in its own eyes it leads the term it last led, which /readyz gives as
    // its reason, but it does not name itself the cluster's leader, nor give lags it
    // cannot know.
    let wrong = nodes[at].data_dir().join("not-the-clusters-cookie");
    std::fs::write(&wrong, "not-the-clusters-cookie")?;
    nodes[at]
        .restart_cut_off(&["--cookie-file", &wrong.display().to_string()])
        .await?;
    let deadline = Deadline::after(WAIT, "the cut-off node to lead in its own eyes");
    loop {
        let (code, body) = nodes[at].get("/readyz").await?;
        if code == 503 && body.contains("this node leads but no majority") {
            break;
        }
        deadline.tick(format!("{code} {body}")).await?;
    }
    // It is alive (a liveness probe leaves it be) though its work waits for a lease.
    let (code, body) = nodes[at].get("/livez").await?;
    ensure!(code == 200, "/livez: {code} {body}");
    // Once its tree is up (it is alive, and says it is starting, until then).
    let deadline = Deadline::after(WAIT, "the cut-off node's health to name its stopped work");
    loop {
        let (code, body) = nodes[at].get("/healthz").await?;
        if code == 503 && body.contains("the agents supervisor is not running") {
            // And why: it listed the stopped parts alone.
            ensure!(
                body.contains("waits for a lease") && body.contains("no majority"),
                "/healthz: {body}"
            );
            break;
        }
        ensure!(body.contains("the node is starting"), "/healthz: {code} {body}");
        deadline.tick(body).await?;
    }
    // A spawn there is refused at once, before anything is written: nothing would run it.
    let spawn = "mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }";
    let input = json!({ "name": "early", "backend": { "builtin": { "kind": "echo" } } });
    let refused = nodes[at].gql(spawn, json!({ "input": input })).await?;
    ensure!(
        refused.to_string().contains("the agents supervisor is not running")
            && refused.to_string().contains("waits for a lease"),
        "{refused}"
    );
    let view = nodes[at]
        .gql_ok("{ cluster { leader members { name lag } } }", json!({}))
        .await?;
    ensure!(view["cluster"]["leader"].is_null(), "it claims to lead: {view}");
    let members = view["cluster"]["members"].as_array().context("members")?;
    ensure!(members.iter().all(|m| m["lag"].is_null()), "{view}");
    // The old leader comes back as a follower and receives what it missed.
    nodes[at].restart().await?;
    let deadline = Deadline::after(WAIT, "the restarted node to catch up");
    loop {
        let names = token_names(&nodes[at]).await?;
        if acked.iter().all(|n| names.contains(n)) {
            break;
        }
        deadline
            .tick(format!("{} has {} tokens", nodes[at].name, names.len()))
            .await?;
    }
    let changed = events(&nodes[at], 0).await?;
    ensure!(
        changed.iter().any(|e| e.1 == "LEADER_CHANGED" && e.2 != leader),
        "no LEADER_CHANGED names the new leader: {changed:?}"
    );
    Ok(())
}

pub(super) async fn room_of(node: &Node, member: &str, capability: &str, free: Option<i64>) -> Result<()> {
    let q = "{ cluster { members { name rooms { capability agents free } } } }";
    let deadline = Deadline::after(WAIT, format!("{} to hear {member}'s room for {capability}", node.name));
    loop {
        let seen = node.gql_ok(q, json!({})).await?;
        let room = seen["cluster"]["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["name"] == member)
            .flat_map(|m| m["rooms"].as_array().cloned().unwrap_or_default())
            .find(|r| r["capability"] == capability);
        if room.as_ref().map(|r| r["free"].as_i64().unwrap_or(-1)) == free {
            return Ok(());
        }
        deadline.tick(seen).await?;
    }
}

/// The member that holds task `id`, as `node`'s replica says.
pub(super) async fn held_by(node: &Node, id: &str) -> Result<String> {
    let task = node
        .gql_ok("query($id: ID!) { task(id: $id) { node } }", json!({ "id": id }))
        .await?;
    text(&task, "/task/node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_for_a_capability_goes_by_its_strategy_across_the_cluster() -> Result<()> {
    let nodes = start_cluster(NodeOpts::named("alpha"), vec![NodeOpts::named("beta")]).await?;
    let (alpha, beta) = (&nodes[0], &nodes[1]);
    let gate = super::support::Gate::new()?;
    let held = alpha.spawn_gated(&gate, &["busy"], 2).await?;
    alpha.wait_agent_state(&held, "RUNNING").await?;
    let far = text(
        &beta
            .spawn_agent(json!({ "name": "far", "backend": { "builtin": { "kind": "echo" } },
                                 "capabilities": ["busy", "only-far"] }))
            .await?,
        "/id",
    )?;
    beta.wait_agent_state(&far, "RUNNING").await?;
    let submit =
        |cap: &str, n: i64| json!({ "capability": cap, "payload": { "n": n }, "strategy": "LEAST_CONNECTIONS" });

    // Alpha places by what beta's heartbeats say of its agents' room: a beat later, it
    // knows of beta's agent.
    room_of(alpha, "beta", "only-far", Some(1)).await?;
    // Only beta serves it: submitted on alpha, it is written there (its id names alpha) and
    // held by beta, which asked nothing per task, and it runs on beta's agent.
    let only = text(&alpha.submit(submit("only-far", 1)).await?, "/id")?;
    ensure!(only.ends_with("@alpha"), "made on {only}");
    ensure!(
        held_by(alpha, &only).await? == "beta",
        "held by beta, as alpha's replica says"
    );
    let done = alpha.wait_task_state(&only, "SUCCEEDED").await?;
    ensure!(done["agentId"] == far.as_str(), "{done}");

    // Both agents run nothing: a tie stays on the receiving node.
    let first = text(&alpha.submit(submit("busy", 2)).await?, "/id")?;
    ensure!(held_by(alpha, &first).await? == "alpha", "queued on alpha");
    alpha.wait_task_state(&first, "RUNNING").await?;
    room_of(alpha, "beta", "busy", Some(1)).await?;
    // alpha's agent still has a free slot, but runs one task and beta's none: the task goes
    // to beta, the cluster's least loaded agent, and runs now.
    let second = text(&alpha.submit(submit("busy", 3)).await?, "/id")?;
    ensure!(
        held_by(beta, &second).await? == "beta",
        "queued on beta, as its own replica says"
    );
    let done = alpha.wait_task_state(&second, "SUCCEEDED").await?;
    ensure!(done["agentId"] == far.as_str(), "{done}");
    gate.open()?;
    alpha.wait_task_state(&first, "SUCCEEDED").await?;
    Ok(())
}

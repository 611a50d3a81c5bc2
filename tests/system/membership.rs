//! The cluster's membership as users change it (leaving, forgetting, roles), where a lost
//! node's agents may go (pinned, node labels, a checkpoint that travels), and the local
//! three-node topology of deploy/local-cluster.sh.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::failover::{groups, member, three_nodes_up, wait_member_state, wait_moved};
use super::replicated::{start_cluster, CLUSTER};
use super::support::{pid_alive, python_agent, text, Deadline, Gate, NodeOpts, WAIT};

const MEMBER: &str = "name role state incarnation";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_leaves_stops_its_work_first_and_its_agents_move_before_it_goes() -> Result<()> {
    let mut nodes = three_nodes_up().await?;
    // A voter becomes a learner and a voter again.
    let role = format!("mutation($n: String!, $r: MemberRole!) {{ setMemberRole(node: $n, role: $r) {{ {MEMBER} }} }}");
    let learner = nodes[1].gql_ok(&role, json!({ "n": "gamma", "r": "LEARNER" })).await?;
    ensure!(learner["setMemberRole"]["role"] == "LEARNER", "{learner}");
    ensure!(member(&nodes[0], "gamma").await?["role"] == "LEARNER");
    let voter = nodes[2].gql_ok(&role, json!({ "n": "gamma", "r": "VOTER" })).await?;
    ensure!(voter["setMemberRole"]["role"] == "VOTER", "{voter}");
    // The leader cannot become a learner (it went on leading, as one).
    let (leader, _) = super::restarts::leader_and_term(&nodes[0]).await?;
    let refused = nodes[1].gql(&role, json!({ "n": leader, "r": "LEARNER" })).await?;
    ensure!(
        super::support::error_code(&refused).as_deref() == Some("CONFLICT")
            && refused.to_string().contains("leads the cluster"),
        "{refused}"
    );
    // The members by name, on every node (not in the order of their random Raft ids).
    for node in &nodes {
        let names = member_names(node).await?;
        ensure!(names == ["alpha", "beta", "gamma"], "{names:?}");
    }

    let agent = text(
        &nodes[2]
            .spawn_agent(json!({ "name": "leaver", "backend": { "process": { "command": python_agent() } } }))
            .await?,
        "/id",
    )?;
    nodes[2].wait_agent_state(&agent, "RUNNING").await?;
    // An agent of a capability of gamma's alone, one task at a time, held by a gate.
    let gate = Gate::new()?;
    let gated = nodes[2].spawn_gated(&gate, &["leaving"], 1).await?;
    nodes[2].wait_agent_state(&gated, "RUNNING").await?;
    let before = groups(&nodes[2], &agent).await?;
    ensure!(before.len() == 1, "{before:?}");
    // gamma's admin.token is the cluster's while gamma is a member.
    let me = "{ me { role } }";
    ensure!(nodes[0].gql_ok_as(&nodes[2].token, me, json!({})).await?["me"]["role"] == "ADMIN");
    let leave = format!("mutation($n: String!) {{ leaveCluster(node: $n) {{ {MEMBER} }} }}");
    let left = nodes[0].gql_ok(&leave, json!({ "n": "gamma" })).await?;
    // Its role is the one it had (it was a voter), not the learner it had to become to go.
    ensure!(
        left["leaveCluster"]["state"] == "LEFT" && left["leaveCluster"]["role"] == "VOTER",
        "{left}"
    );
    // It left with gamma: refused by the members that remain.
    for node in &nodes[..2] {
        let deadline = Deadline::after(WAIT, format!("gamma's admin token to be refused on {}", node.name));
        loop {
            let (status, body) = node
                .post_graphql(Some(&nodes[2].token), &json!({ "query": me }))
                .await?;
            if status == 401 {
                break;
            }
            deadline.tick(format!("{status} {body}")).await?;
        }
    }
    // gamma's own readiness says it left (not that it waits for a lease, or leads alone).
    let deadline = Deadline::after(WAIT, "gamma's /readyz to say it left");
    loop {
        let (status, body) = nodes[2].get("/readyz").await?;
        if status == 503 && body.contains("this node left the cluster") {
            break;
        }
        deadline.tick(format!("{status} {body}")).await?;
    }
    // So does its health, that alone (not its stopped scheduler); it is alive.
    let (status, body) = nodes[2].get("/healthz").await?;
    ensure!(
        status == 503 && body.contains("this node left the cluster") && !body.contains("scheduler"),
        "{body}"
    );
    let (status, body) = nodes[2].get("/livez").await?;
    ensure!(status == 200, "{status} {body}");
    // Its log says it once, and what to do (it ended at "leaving the cluster").
    let said = "this node left the cluster: it serves no request and runs no work from now; stop its process";
    let deadline = Deadline::after(WAIT, "gamma's log to say it left");
    while nodes[2].logged(said) == 0 {
        deadline.tick(nodes[2].log_tail()).await?;
    }
    // Nor does it ask the members for votes any longer (its own membership may still name
    // it a voter: from about 2 s after it left, it asked once a second for as long as it
    // ran). Watched over three election timeouts; this waits for nothing to happen, so
    // its length only bounds what it can see.
    let stands = "this node left the cluster: it no longer stands for election";
    let deadline = Deadline::after(WAIT, "gamma's election timer to stop");
    while nodes[2].logged(stands) == 0 {
        deadline.tick(nodes[2].log_tail()).await?;
    }
    let pre_votes = |text: &str| super::support::metric(text, "troupe_raft_pre_votes_total", &[]);
    let asked = pre_votes(&nodes[2].metrics().await?);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let asked_since = pre_votes(&nodes[2].metrics().await?);
    ensure!(
        asked_since == asked,
        "gamma asked for votes after it left: {asked} then {asked_since}"
    );
    // Its MCP endpoint says the same, as unavailable (it said 401, as to a bad token).
    let mcp = super::support::http_client()
        .no_proxy()
        .build()?
        .post(format!("http://{}/mcp", nodes[2].addr))
        .bearer_auth(&nodes[0].token)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": "ping" }))
        .send()
        .await?;
    ensure!(mcp.status() == 503, "{}", mcp.status());
    // What is asked of gamma now is refused, saying why: its replica no longer follows the
    // log (before, a submit was placed from that stale replica, or written here and
    // forwarded to a leader that never took it: "may still be applied" after 10 s).
    let submit = "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id } }";
    let input = json!({ "capability": "leaving", "payload": {} });
    let (status, body) = nodes[2]
        .post_graphql(
            Some(&nodes[0].token),
            &json!({ "query": submit, "variables": { "input": input } }),
        )
        .await?;
    ensure!(
        status == 503
            && body["errors"][0]["extensions"]["code"] == "UNAVAILABLE"
            && body["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("left the cluster")),
        "{status} {body}"
    );
    // Its process stopped before the agent started elsewhere; it runs there now, once.
    ensure!(!pid_alive(before[0] as i32), "gamma's process still runs");
    let home = wait_moved(&nodes[0], &agent, "gamma").await?;
    let after = groups(&nodes[if home == "alpha" { 0 } else { 1 }], &agent).await?;
    ensure!(after.len() == 1 && after != before, "{before:?} then {after:?}");
    let names = member_names(&nodes[1]).await?;
    ensure!(names == ["alpha", "beta"], "{names:?}");
    let events = nodes[1]
        .events_after(None, &["MEMBER_LEFT", "AGENT_MOVED", "MEMBER_ROLE_CHANGED"])
        .await?;
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    ensure!(
        kinds
            == [
                "MEMBER_ROLE_CHANGED",
                "MEMBER_ROLE_CHANGED",
                "MEMBER_LEFT",
                "AGENT_MOVED",
                "AGENT_MOVED"
            ],
        "{kinds:?}"
    );
    // The two that remain go on.
    let task = nodes[1]
        .submit_to(&agent, json!({ "op": "echo", "value": "after leave" }))
        .await?;
    nodes[0].wait_task_state(&task, "SUCCEEDED").await?;
    // gamma still runs and answers beats after it left, with no room for "leaving": its
    // agent moved. Two tasks of that capability, the second while the first holds the moved
    // agent's one slot, both run there (before, gamma's last room drew one to its stopped
    // scheduler, where it failed UNAVAILABLE).
    let moved = wait_moved(&nodes[0], &gated, "gamma").await?;
    ensure!(moved == "alpha" || moved == "beta", "{moved}");
    let at = if moved == "alpha" { 0 } else { 1 };
    let submit = |i: i64| nodes[at].submit(json!({ "capability": "leaving", "payload": { "i": i } }));
    let first = text(&submit(0).await?, "/id")?;
    nodes[at].wait_task_state(&first, "RUNNING").await?;
    // The other member has heard that the slot is taken, so the node asked has too.
    let other = &nodes[1 - at];
    super::replicated::room_of(other, &moved, "leaving", Some(0)).await?;
    let second = text(&submit(1).await?, "/id")?;
    let tasks = [first, second];
    gate.open()?;
    for task in &tasks {
        let done = nodes[1 - at].wait_task_state(task, "SUCCEEDED").await?;
        ensure!(done["agentId"] == gated.as_str(), "{done}");
    }
    // Stopped, gamma writes nothing of its stop and waits for no leader (before: each
    // supervisor's lifecycle records waited 5 s for one, then "final flush failed"); and
    // its readiness answered 503 without an ERROR line each time.
    let status = nodes[2].terminate(std::time::Duration::from_secs(60)).await?;
    ensure!(status.success(), "gamma stopped with {status}: {}", nodes[2].log_tail());
    // (The 503s it answered above are no failures of its own: said at INFO.)
    for noise in ["final flush", "lifecycle record was not taken", "response failed"] {
        ensure!(
            nodes[2].logged(noise) == 0,
            "gamma logged {noise:?}: {}",
            nodes[2].log_tail()
        );
    }
    ensure!(nodes[2].logged("this node left the cluster: its stop is not written") == 1);
    // Started again from its data dir, it stops at once saying why (before, it ran, and its
    // sessions under the name closed those of whichever member took the name since).
    let refused = nodes[2]
        .restart()
        .await
        .err()
        .context("gamma started again after it left")?;
    ensure!(
        format!("{refused:#}").contains("node gamma left the cluster"),
        "{refused:#}"
    );
    Ok(())
}

/// The members of the log as `node` lists them, in its order.
async fn member_names(node: &super::support::Node) -> Result<Vec<String>> {
    let view = node.gql_ok(CLUSTER, json!({})).await?;
    Ok(view["cluster"]["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str().map(str::to_owned))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_down_for_good_is_forgotten_and_the_rest_go_on() -> Result<()> {
    let mut nodes = start_cluster(
        NodeOpts::named("alpha"),
        vec![NodeOpts::named("beta"), NodeOpts::named("gamma")],
    )
    .await?;
    for m in ["alpha", "beta", "gamma"] {
        wait_member_state(&nodes[0], m, "UP").await?;
    }
    let forget = format!("mutation($n: String!) {{ forgetMember(node: $n) {{ {MEMBER} }} }}");
    // A member that is there is drained, not forgotten.
    let refused = nodes[0].gql(&forget, json!({ "n": "gamma" })).await?;
    ensure!(
        super::support::error_code(&refused).as_deref() == Some("CONFLICT"),
        "{refused}"
    );
    // Each refusal names the way out: forgotten once DOWN (they pointed at each other).
    let way_out = "forgotten once the leader declares it DOWN";
    ensure!(refused.to_string().contains(way_out), "{refused}");
    // A node started under the name of a member that is up is refused at once, and stops
    // saying why: it asked again twice a second for two minutes, each of its sessions
    // displacing the member's, which was declared DOWN and lost its work meanwhile. It asks
    // before its link dials under the name (which could displace the member's sessions, the
    // cluster's links knowing a node by its name): so its link never starts. Asked through
    // the leader, and through a follower.
    let join = format!("127.0.0.1:{}", nodes[0].cluster_port);
    for asked in [&nodes[0], &nodes[1]] {
        let through = format!("127.0.0.1:{}", asked.cluster_port);
        let twin_dir = tempfile::tempdir()?;
        let args = super::support::serve_args(
            twin_dir.path(),
            "127.0.0.1:0",
            "gamma",
            &["--join", &through, "--join-timeout-ms", "10000"],
        )?;
        let mut twin = super::support::Guard::spawn(&args, twin_dir.path())?;
        let status = twin.wait_exit(WAIT).await?;
        let said = std::fs::read_to_string(twin_dir.path().join("stderr.log")).unwrap_or_default();
        ensure!(status.code() == Some(1), "{status}: {said}");
        ensure!(
            said.contains("is a member that is up") && said.contains("--node-name"),
            "{said}"
        );
        ensure!(!said.contains("cluster listening"), "the twin's link started: {said}");
    }
    wait_member_state(&nodes[0], "gamma", "UP").await?;
    nodes[2].kill9().await?;
    let leave = format!("mutation($n: String!) {{ leaveCluster(node: $n) {{ {MEMBER} }} }}");
    let unreachable = nodes[0].gql(&leave, json!({ "n": "gamma" })).await?;
    match super::support::error_code(&unreachable).as_deref() {
        Some("UNAVAILABLE") => ensure!(
            unreachable
                .to_string()
                .contains("forgotten (forgetMember) once the leader declares it DOWN"),
            "{unreachable}"
        ),
        // Declared DOWN already (a slow machine): "forget it".
        Some("CONFLICT") => ensure!(unreachable.to_string().contains("forgetMember"), "{unreachable}"),
        _ => anyhow::bail!("leaveCluster of a killed member: {unreachable}"),
    }
    // A fresh node under gamma's name (a replaced machine, started once the old member fell
    // silent and before it is forgotten) is refused admission but asks again, and its beats
    // renew nothing of gamma: the member is judged DOWN by its own silence (before, they kept
    // it UP and it could not be forgotten).
    let deadline = Deadline::after(WAIT, "gamma to fall silent");
    loop {
        let seen = member(&nodes[0], "gamma").await?;
        if seen["state"] != "UP" {
            break;
        }
        deadline.tick(&seen).await?;
    }
    let impostor_dir = tempfile::tempdir()?;
    let args = super::support::serve_args(impostor_dir.path(), "127.0.0.1:0", "gamma", &["--join", &join])?;
    let impostor = super::support::Guard::spawn(&args, impostor_dir.path())?;
    let deadline = Deadline::after(WAIT, "the impostor to be refused admission");
    loop {
        let log = std::fs::read_to_string(impostor_dir.path().join("stderr.log")).unwrap_or_default();
        if log.contains("is in the cluster already") {
            break;
        }
        deadline.tick(log.lines().last().unwrap_or_default().to_owned()).await?;
    }
    wait_member_state(&nodes[0], "gamma", "DOWN").await?;
    // Stopped before gamma is forgotten: it asks to join again and again, and asked once the
    // old member was gone it was admitted (a learner named gamma that then died, which the
    // test waited on for ever).
    drop(impostor);
    let gone = nodes[1].gql_ok(&forget, json!({ "n": "gamma" })).await?;
    ensure!(
        gone["forgetMember"]["state"] == "LEFT" && gone["forgetMember"]["role"] == "VOTER",
        "{gone}"
    );
    two_members(&nodes[0], "gamma to be out of the membership").await?;
    let m = "mutation($n: String!) { createToken(input: { role: VIEWER, name: $n }) { token { id } } }";
    nodes[0].gql_ok(m, json!({ "n": "after-forget" })).await?;
    // The forgotten member started again from its data dir (it never applied the entry that
    // forgot it) is told by the members it reaches, and stops saying why. It ran on, cut off
    // and unready, its writes waiting for a leader that never took them.
    let refused = nodes[2]
        .restart()
        .await
        .err()
        .context("the forgotten gamma started again and ran")?;
    let said = format!("{refused:#}");
    ensure!(
        said.contains("says the sender is a member that left the cluster") && said.contains("fresh data dir"),
        "{said}"
    );
    // A node admitted under the forgotten name that dies before it caught up (the log cut
    // off to it here) stays in the membership, a learner whose name's record says LEFT and
    // whom the leader judges no more: it is forgotten as a member gone for good is. It was
    // "has left the cluster already", for good, and a new node of that name was refused
    // admission while it stayed; the leader's wait for it to catch up held every other
    // change of the membership back for a minute.
    for member in &nodes[..2] {
        member.inject_fault("raft-partition-gamma")?;
    }
    let dying_dir = tempfile::tempdir()?;
    let args = super::support::serve_args(dying_dir.path(), "127.0.0.1:0", "gamma", &["--join", &join])?;
    let dying = super::support::Guard::spawn(&args, dying_dir.path())?;
    let deadline = Deadline::after(WAIT, "the new gamma to be a learner");
    loop {
        let view = nodes[0].gql_ok(CLUSTER, json!({})).await?;
        let listed = view["cluster"]["members"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["name"] == "gamma" && m["role"] == "LEARNER"));
        if listed {
            break;
        }
        deadline.tick(&view).await?;
    }
    drop(dying);
    for member in &nodes[..2] {
        member.clear_fault("raft-partition-gamma")?;
    }
    let asked = std::time::Instant::now();
    let gone = nodes[0].gql_ok(&forget, json!({ "n": "gamma" })).await?;
    ensure!(gone["forgetMember"]["role"] == "LEARNER", "{gone}");
    ensure!(
        asked.elapsed() < std::time::Duration::from_secs(30),
        "forgetMember waited {:?} for the admission of a dead learner",
        asked.elapsed()
    );
    two_members(&nodes[0], "the dead learner to be out of the membership").await?;
    // A new machine under the forgotten name (a fresh data dir) joins as a member that is UP
    // and gets a lease: its work runs (the harness's start waits for /healthz).
    let again = super::support::Node::start(NodeOpts::named("gamma").arg("--join", &join)).await?;
    wait_member_state(&nodes[0], "gamma", "UP").await?;
    let agent = again.spawn_builtin("echo", &["again"]).await?;
    again.wait_agent_state(&agent, "RUNNING").await?;
    Ok(())
}

/// Waits until `node` lists two members.
async fn two_members(node: &super::support::Node, what: &str) -> Result<()> {
    let deadline = Deadline::after(WAIT, what);
    loop {
        let view = node.gql_ok(CLUSTER, json!({})).await?;
        if view["cluster"]["members"].as_array().is_some_and(|m| m.len() == 2) {
            return Ok(());
        }
        deadline.tick(&view).await?;
    }
}

/// A base port with it and the next two free, for the three nodes of local-cluster.sh.
fn three_free_ports() -> Result<u16> {
    // Below the range the system hands out ephemeral ports from: a port it gives another
    // socket between this check and the nodes' start (a node's Raft lane listens on one,
    // connections take them) can never be one of these.
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let (low, high) = (10_000u16, ephemeral_from.max(10_200) - 3);
    let mut pick = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos()
        ^ std::process::id();
    for _ in 0..200 {
        pick = pick.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let base = low + (pick % u32::from(high - low)) as u16;
        if (0..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return Ok(base);
        }
    }
    anyhow::bail!("no three free ports in a row below {ephemeral_from}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_sh_starts_the_three_node_topology_and_stops_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let base = dir.path().join("cluster");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local-cluster.sh");
    let gateway = three_free_ports()?;
    let cluster = loop {
        let cluster = three_free_ports()?;
        if cluster.abs_diff(gateway) >= 3 {
            break cluster;
        }
    };
    let run = |command: &str| {
        std::process::Command::new("bash")
            .args([script, command, "--dir", &base.display().to_string()])
            .args(["--bin", env!("CARGO_BIN_EXE_troupe")])
            .args([
                "--gateway-port",
                &gateway.to_string(),
                "--cluster-port",
                &cluster.to_string(),
            ])
            .output()
    };
    let started = run("start")?;
    let said = String::from_utf8_lossy(&started.stdout).into_owned() + &String::from_utf8_lossy(&started.stderr);
    ensure!(started.status.success(), "{said}");
    let stop = scopeguard(|| {
        let _ = run("stop");
    });
    let token = std::fs::read_to_string(base.join("a").join("admin.token"))?;
    let http = super::support::http_client().no_proxy().build()?;
    let deadline = Deadline::after(WAIT, "the three nodes to be UP");
    loop {
        let answer: Value = http
            .post(format!("http://127.0.0.1:{gateway}/graphql"))
            .bearer_auth(token.trim())
            .json(&json!({ "query": "{ cluster { members { name state role } } }" }))
            .send()
            .await?
            .json()
            .await?;
        let members = answer["data"]["cluster"]["members"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if members.len() == 3 && members.iter().all(|m| m["state"] == "UP" && m["role"] == "VOTER") {
            break;
        }
        deadline.tick(&answer).await?;
    }
    ensure!(run("status")?.status.success());
    drop(stop);
    ensure!(
        !run("status")?.status.success(),
        "status after stop says the cluster runs"
    );
    Ok(())
}

/// Runs `f` when dropped (so a failed check still stops the cluster).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_nodes_agents_move_only_where_their_placement_allows_else_wait_for_it() -> Result<()> {
    let mut nodes = start_cluster(
        NodeOpts::named("alpha").arg("--node-label", "zone=a"),
        vec![
            NodeOpts::named("beta").arg("--node-label", "zone=b"),
            NodeOpts::named("gamma").arg("--node-label", "zone=c"),
        ],
    )
    .await?;
    let spawn = |name: &str, extra: Value| {
        let mut input = json!({ "name": name, "backend": { "builtin": { "kind": "echo" } } });
        input.as_object_mut().into_iter().for_each(|o| {
            o.extend(extra.as_object().cloned().unwrap_or_default());
        });
        input
    };
    let to_b = text(
        &nodes[2]
            .spawn_agent(spawn(
                "to-b",
                json!({ "nodeLabels": [{ "key": "zone", "value": "b" }] }),
            ))
            .await?,
        "/id",
    )?;
    let pinned = text(
        &nodes[2].spawn_agent(spawn("pinned", json!({ "pinned": true }))).await?,
        "/id",
    )?;
    let nowhere = text(
        &nodes[2]
            .spawn_agent(spawn(
                "nowhere",
                json!({ "nodeLabels": [{ "key": "zone", "value": "z" }] }),
            ))
            .await?,
        "/id",
    )?;
    // A counter at 5 in its last checkpoint, at 10 when its node is lost.
    let counter = text(
        &nodes[2]
            .spawn_agent(
                json!({ "name": "counted", "backend": { "builtin": { "kind": "counter" } },
                                 "nodeLabels": [{ "key": "zone", "value": "a" }] }),
            )
            .await?,
        "/id",
    )?;
    for id in [&to_b, &pinned, &nowhere, &counter] {
        nodes[2].wait_agent_state(id, "RUNNING").await?;
    }
    nodes[2].run_on(&counter, json!({ "add": 5 })).await?;
    let checkpoint = "mutation($id: ID!) { checkpointAgent(id: $id, description: \"five\") { id } }";
    nodes[2].gql_ok(checkpoint, json!({ "id": counter })).await?;
    ensure!(nodes[2].run_on(&counter, json!({ "add": 5 })).await?["count"] == 10);
    for m in ["alpha", "beta", "gamma"] {
        wait_member_state(&nodes[0], m, "UP").await?;
    }
    nodes[2].kill9().await?;
    ensure!(wait_moved(&nodes[0], &to_b, "gamma").await? == "beta");
    // The checkpoint travelled with the counter: it restarts on alpha from 5.
    ensure!(wait_moved(&nodes[1], &counter, "gamma").await? == "alpha");
    let read = nodes[1].run_on(&counter, json!({})).await?;
    ensure!(
        read["count"] == 5,
        "the counter restarted from {read}, not its checkpoint"
    );
    wait_member_state(&nodes[0], "gamma", "DOWN").await?;
    let stayed = nodes[0].events_after(None, &["AGENT_NOT_MOVED"]).await?;
    let why = |id: &str| {
        stayed
            .iter()
            .find(|e| e["subject"] == id)
            .and_then(|e| e["data"]["why"].as_str().map(str::to_owned))
    };
    ensure!(why(&pinned).is_some_and(|w| w.contains("pinned")), "{stayed:?}");
    ensure!(why(&nowhere).is_some_and(|w| w.contains("zone=z")), "{stayed:?}");
    // They wait for their node, and run there again once it is back.
    nodes[2].restart().await?;
    for id in [&pinned, &nowhere] {
        let agent = nodes[0].wait_agent_state(id, "RUNNING").await?;
        ensure!(agent["node"] == "gamma", "{agent}");
    }
    Ok(())
}

//! Failover: a member that dies or freezes is declared DOWN by the leader once its lease has
//! lapsed, and what it ran serves on the survivors, once.

use std::time::Instant;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::replicated::{start_cluster, CLUSTER};
use super::support::{int, pid_alive, python_agent, text, wait_pid_gone, Deadline, Gate, Node, NodeOpts, WAIT};

/// The member `name` as `node`'s cluster view shows it.
pub(super) async fn member(node: &Node, name: &str) -> Result<Value> {
    let view = node.gql_ok(CLUSTER, json!({})).await?;
    view["cluster"]["members"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == name)
        .cloned()
        .with_context(|| format!("{name} is not in {view}"))
}

pub(super) async fn wait_member_state(node: &Node, name: &str, state: &str) -> Result<Value> {
    let deadline = Deadline::after(WAIT, format!("{name} to be {state} on {}", node.name));
    loop {
        let m = member(node, name).await?;
        if m["state"] == state {
            return Ok(m);
        }
        deadline.tick(&m).await?;
    }
}

/// Reads the member `name` on `node` until `node` has heard it for a second since `since`
/// (four beats, each judged), checking every read with `check`: the last read.
pub(super) async fn heard_for_a_second(
    node: &Node,
    name: &str,
    since: chrono::DateTime<chrono::Utc>,
    check: impl Fn(&Value) -> Result<()>,
) -> Result<Value> {
    let deadline = Deadline::after(WAIT, format!("{} to hear {name} for a second", node.name));
    loop {
        let seen = member(node, name).await?;
        check(&seen)?;
        let heard = seen["lastHeartbeat"]
            .as_str()
            .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok());
        if heard.is_some_and(|at| at > since + chrono::Duration::seconds(1)) {
            return Ok(seen);
        }
        deadline.tick(&seen).await?;
    }
}

/// Waits until `node` says the agent runs on a node other than `not`; that node's name.
pub(super) async fn wait_moved(node: &Node, id: &str, not: &str) -> Result<String> {
    let q = "query($id: ID!) { agent(id: $id) { node state } }";
    let deadline = Deadline::after(WAIT, format!("agent {id} to run off {not}"));
    loop {
        let body = node.gql(q, json!({ "id": id })).await?;
        let agent = &body["data"]["agent"];
        if agent["state"] == "RUNNING" && agent["node"].as_str().is_some_and(|n| n != not) {
            return text(agent, "/node");
        }
        deadline.tick(&body).await?;
    }
}

/// Three nodes, alpha, beta and gamma, each UP as the first sees it.
pub(super) async fn three_nodes_up() -> Result<Vec<Node>> {
    let nodes = start_cluster(
        NodeOpts::named("alpha"),
        vec![NodeOpts::named("beta"), NodeOpts::named("gamma")],
    )
    .await?;
    for m in ["alpha", "beta", "gamma"] {
        wait_member_state(&nodes[0], m, "UP").await?;
    }
    Ok(nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_agents_swarm_hosts_and_tasks_serve_on_the_survivors_once() -> Result<()> {
    let mut nodes = start_cluster(
        NodeOpts::named("alpha"),
        vec![NodeOpts::named("beta"), NodeOpts::named("gamma")],
    )
    .await?;
    let mut agents = Vec::new();
    for i in 0..4 {
        let caps = [format!("echo-{i}")];
        let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
        let id = nodes[2].spawn_builtin("echo", &caps).await?;
        nodes[2].wait_agent_state(&id, "RUNNING").await?;
        agents.push(id);
    }
    // A swarm of two on gamma: its coordinator and members move together.
    let member = json!({ "count": 2, "agent": { "name": "echo", "capabilities": ["swarmed"],
                                                 "backend": { "builtin": { "kind": "echo" } } } });
    let q = "mutation($input: CreateSwarmInput!) { createSwarm(input: $input) { id members { id } } }";
    let made = nodes[2]
        .gql_ok(q, json!({ "input": { "name": "pair", "templates": [member] } }))
        .await?;
    let swarm = text(&made, "/createSwarm/id")?;
    // A VM on one of gamma's (simulated) hosts: the host moves, and its driver re-creates it.
    let vm = text(
        &super::support::vms::create_vm(&nodes[2], json!({ "name": "web", "vcpus": 1, "memoryMiB": 256 })).await?,
        "/id",
    )?;
    // A task that ended on gamma before it dies: still readable everywhere after.
    let ended = nodes[2].submit_to(&agents[0], json!({ "before": "the kill" })).await?;
    nodes[2].wait_task_state(&ended, "SUCCEEDED").await?;
    // A task running on gamma when it dies, held there by a gate.
    let gate = Gate::new()?;
    let held = nodes[2].spawn_gated(&gate, &["slow"], 1).await?;
    nodes[2].wait_agent_state(&held, "RUNNING").await?;
    let running = text(
        &nodes[2]
            .submit(json!({ "capability": "slow", "payload": { "n": 1 } }))
            .await?,
        "/id",
    )?;
    nodes[2].wait_task_state(&running, "RUNNING").await?;
    for m in ["alpha", "beta", "gamma"] {
        wait_member_state(&nodes[0], m, "UP").await?;
    }

    let killed = Instant::now();
    nodes[2].kill9().await?;
    let mut homes = Vec::new();
    for id in agents.iter().chain([&held]) {
        homes.push(wait_moved(&nodes[0], id, "gamma").await?);
    }
    eprintln!("gamma's agents served elsewhere {:?} after the kill", killed.elapsed());
    ensure!(
        homes.iter().any(|h| h == "alpha") && homes.iter().any(|h| h == "beta"),
        "{homes:?}"
    );
    let q = "query($id: ID!) { swarm(id: $id) { node status members { id node state } } }";
    let deadline = Deadline::after(WAIT, "the swarm to serve off gamma");
    loop {
        let seen = nodes[0].gql(q, json!({ "id": swarm })).await?;
        let s = &seen["data"]["swarm"];
        let members = s["members"].as_array().cloned().unwrap_or_default();
        let moved = s["node"].as_str().is_some_and(|n| n != "gamma")
            && s["status"] == "HEALTHY"
            && members.len() == 2
            && members
                .iter()
                .all(|m| m["state"] == "RUNNING" && m["node"] == s["node"]);
        if moved {
            break;
        }
        deadline.tick(&seen).await?;
    }
    let q = "query($id: ID!) { vm(id: $id) { state host { name node state } } }";
    let deadline = Deadline::after(WAIT, "the VM to run off gamma");
    loop {
        let seen = nodes[1].gql(q, json!({ "id": vm })).await?;
        let v = &seen["data"]["vm"];
        if v["state"] == "RUNNING"
            && v["host"]["state"] == "UP"
            && v["host"]["node"].as_str().is_some_and(|n| n != "gamma")
        {
            break;
        }
        deadline.tick(&seen).await?;
    }
    let down = wait_member_state(&nodes[1], "gamma", "DOWN").await?;
    let read = nodes[0].task(&ended).await?;
    ensure!(read["state"] == "SUCCEEDED", "{read}");
    ensure!(down["lastHeartbeat"].is_string(), "{down}");

    // The leader told the story: gamma suspect, down, each of its agents moved.
    let events = nodes[1]
        .events_after(
            None,
            &[
                "MEMBER_SUSPECT",
                "MEMBER_DOWN",
                "AGENT_MOVED",
                "SWARM_MOVED",
                "HOST_MOVED",
                "TASKS_MOVED",
            ],
        )
        .await?;
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    let down_at = kinds
        .iter()
        .position(|k| *k == "MEMBER_DOWN")
        .context("no MEMBER_DOWN")?;
    ensure!(kinds[..down_at].contains(&"MEMBER_SUSPECT"), "{kinds:?}");
    let moved: Vec<&Value> = events.iter().filter(|e| e["kind"] == "AGENT_MOVED").collect();
    ensure!(moved.len() == 5, "{moved:?}");
    for e in &moved {
        ensure!(e["data"]["from"] == "gamma" && e["data"]["reason"].is_string(), "{e}");
    }
    let hosts_moved = events.iter().filter(|e| e["kind"] == "HOST_MOVED").count();
    ensure!(hosts_moved == 3, "gamma's three simulated hosts: {kinds:?}");
    let swarm_moved: Vec<&Value> = events.iter().filter(|e| e["kind"] == "SWARM_MOVED").collect();
    ensure!(
        swarm_moved.len() == 1 && swarm_moved[0]["subject"] == swarm.as_str() && swarm_moved[0]["data"]["members"] == 2,
        "{swarm_moved:?}"
    );

    // The task that was running is queued again on the agent's new node, not charged an
    // attempt, and ends there once the gate opens.
    let task = nodes[0].wait_task_state(&running, "RUNNING").await?;
    ensure!(task["failedAttempts"] == 0, "{task}");
    gate.open()?;
    let done = nodes[1].wait_task_state(&running, "SUCCEEDED").await?;
    ensure!(done["agentId"] == held.as_str(), "{done}");

    // A moved agent takes new work wherever it is asked.
    for (i, id) in agents.iter().enumerate() {
        let task = nodes[i % 2].submit_to(id, json!({ "i": i })).await?;
        nodes[(i + 1) % 2].wait_task_state(&task, "SUCCEEDED").await?;
    }

    // gamma comes back: it drives none of the hosts that moved off it, so each is listed
    // once, by the survivor that drives it, and the VM runs once.
    nodes[2].restart().await?;
    wait_member_state(&nodes[0], "gamma", "UP").await?;
    // Its count of the agents it holds follows its replica: the agents that moved off it
    // while it was down leave it once it applied their moves.
    let deadline = Deadline::after(WAIT, "gamma to count none of the agents that moved off it");
    loop {
        let (_, metrics) = nodes[2].get("/metrics").await?;
        let held: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("troupe_agents{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if held == 0.0 {
            break;
        }
        deadline.tick(metrics).await?;
    }
    for node in &nodes {
        let listed = node
            .gql_ok("{ hosts { id node qualifiedName uri } }", json!({}))
            .await?;
        let hosts = listed["hosts"].as_array().cloned().unwrap_or_default();
        let ids: Vec<&str> = hosts.iter().filter_map(|h| h["id"].as_str()).collect();
        let unique: std::collections::BTreeSet<&str> = ids.iter().copied().collect();
        ensure!(
            ids.len() == 9 && unique.len() == 9,
            "{} lists a host twice: {listed}",
            node.name
        );
        ensure!(hosts.iter().all(|h| h["node"] != "gamma"), "{listed}");
        // Each still named apart, gamma's moved `sim-1` beside its new node's own.
        let names: std::collections::BTreeSet<&str> =
            hosts.iter().filter_map(|h| h["qualifiedName"].as_str()).collect();
        ensure!(names.len() == 9, "two hosts share a qualified name: {listed}");
        // ... and each driven from a node file of its own.
        let uris: std::collections::BTreeSet<&str> = hosts.iter().filter_map(|h| h["uri"].as_str()).collect();
        ensure!(uris.len() == 9, "two hosts share a URI: {listed}");
    }
    let q = "query($id: ID!) { host(id: $id) { id node qualifiedName } }";
    let moved = nodes[2].gql_ok(q, json!({ "id": "sim-1@gamma" })).await?;
    ensure!(
        moved["host"]["qualifiedName"] == "sim-1@gamma" && moved["host"]["node"] != "gamma",
        "{moved}"
    );
    let holder = moved["host"]["node"].as_str().context("its node")?;
    // A VM put on the moved host by its qualified name, asked through gamma, which holds it
    // no more: the name is looked up, not read as an id of gamma's (it was NOT_FOUND "no
    // host sim-1@gamma on node gamma").
    let v = nodes[2]
        .gql_ok(
            "mutation($input: CreateVmInput!) { createVm(input: $input) { state host { qualifiedName node } } }",
            json!({ "input": { "name": "on-moved", "vcpus": 1, "memoryMiB": 256, "host": "sim-1@gamma" } }),
        )
        .await?;
    ensure!(
        v["createVm"]["host"]["qualifiedName"] == "sim-1@gamma" && v["createVm"]["host"]["node"] == holder,
        "{v}"
    );
    let holder = nodes.iter().find(|n| n.name == holder).context("its holder")?;
    let on_holder = holder.gql(q, json!({ "id": "sim-1" })).await?;
    ensure!(
        on_holder["errors"][0]["extensions"]["code"] == "INVALID_INPUT",
        "a bare name two hosts of one node share: {on_holder}"
    );
    // gamma came back as a member declared DOWN, whose replica held the fencing epoch it
    // had before: what its services recorded as they started (before its lease) was
    // still taken, not refused as stale once it caught up.
    let down_seq = int(
        events
            .iter()
            .find(|e| e["kind"] == "MEMBER_DOWN")
            .context("MEMBER_DOWN")?,
        "/seq",
    )?;
    let deadline = Deadline::after(WAIT, "gamma's services' starts to be recorded");
    loop {
        let started = nodes[1].events_after(Some(down_seq), &["SERVICE_STARTED"]).await?;
        let watchdogs: Vec<&Value> = started.iter().filter(|e| e["subject"] == "watchdog").collect();
        if let [one] = watchdogs.as_slice() {
            // Which node's: every node has a watchdog.
            ensure!(one["data"]["node"] == "gamma", "{one}");
            break;
        }
        deadline.tick(&json!(started)).await?;
    }
    let seen = nodes[2]
        .gql_ok(
            "query($id: ID!) { vm(id: $id) { state host { node } } }",
            json!({ "id": vm }),
        )
        .await?;
    ensure!(
        seen["vm"]["state"] == "RUNNING" && seen["vm"]["host"]["node"] != "gamma",
        "{seen}"
    );
    Ok(())
}

/// The process groups `node` says the agent runs now.
pub(super) async fn groups(node: &Node, id: &str) -> Result<Vec<i64>> {
    let q = "query($id: ID!) { agent(id: $id) { processGroups } }";
    let seen = node.gql_ok(q, json!({ "id": id })).await?;
    Ok(seen["agent"]["processGroups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_i64)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_is_declared_down_then_finds_itself_fenced_and_rejoins_without_duplicates() -> Result<()> {
    let nodes = start_cluster(
        NodeOpts::named("alpha"),
        vec![NodeOpts::named("beta"), NodeOpts::named("gamma")],
    )
    .await?;
    let agent = text(
        &nodes[2]
            .spawn_agent(json!({ "name": "worker", "backend": { "process": { "command": python_agent() } } }))
            .await?,
        "/id",
    )?;
    nodes[2].wait_agent_state(&agent, "RUNNING").await?;
    for m in ["alpha", "beta", "gamma"] {
        wait_member_state(&nodes[0], m, "UP").await?;
    }
    let first = groups(&nodes[2], &agent).await?;
    ensure!(first.len() == 1, "{first:?}");
    // A VM on one of gamma's simulated hosts, counted by gamma's `troupe_vms`.
    let vm = text(
        &super::support::vms::create_vm(&nodes[2], json!({ "name": "db", "vcpus": 1, "memoryMiB": 256 })).await?,
        "/id",
    )?;
    super::support::vms::wait_vm(&nodes[2], &vm, "RUNNING", |v| v["state"] == "RUNNING").await?;
    wait_vms_counted(&nodes[2], 1.0).await?;

    let (leader, term) = super::restarts::leader_and_term(&nodes[0]).await?;
    let elected = nodes[0].events_after(None, &["LEADER_CHANGED"]).await?.len();
    nodes[2].freeze()?;
    let home = wait_moved(&nodes[0], &agent, "gamma").await?;
    wait_member_state(&nodes[0], "gamma", "DOWN").await?;
    let at = if home == "alpha" { 0 } else { 1 };
    let second = groups(&nodes[at], &agent).await?;
    ensure!(second.len() == 1 && second != first, "{first:?} then {second:?}");

    nodes[2].thaw()?;
    // Back, gamma finds its lease lapsed: it stops its work, the old process included,
    // and starts again as UP, without the agent that moved.
    wait_pid_gone(first[0] as i32).await?;
    wait_member_state(&nodes[0], "gamma", "UP").await?;
    let deadline = Deadline::after(WAIT, "gamma to record its fencing");
    loop {
        let fenced = nodes[2].events_after(None, &["NODE_FENCED"]).await?;
        if fenced.iter().any(|e| e["subject"] == "gamma") {
            break;
        }
        deadline.tick(format!("{fenced:?}")).await?;
    }
    let q = "query($id: ID!) { agent(id: $id) { node state } }";
    let seen = nodes[2].gql_ok(q, json!({ "id": agent })).await?;
    ensure!(seen["agent"]["node"] == home.as_str(), "{seen}");
    ensure!(seen["agent"]["state"] == "RUNNING", "{seen}");
    // gamma started no copy after it came back: the moved one still runs, alone.
    ensure!(groups(&nodes[at], &agent).await? == second, "the moved agent restarted");
    ensure!(pid_alive(second[0] as i32), "the moved agent's process stopped");
    // What gamma shows of the moved agent's processes is the home node's sample, carried by
    // a beat answer: it comes with gamma's first beats after the thaw, and is never another
    // process (the old one least of all).
    let deadline = Deadline::after(WAIT, "gamma to show the moved agent's process");
    loop {
        let seen = groups(&nodes[2], &agent).await?;
        if seen == second {
            break;
        }
        ensure!(seen.is_empty(), "gamma sees another process: {seen:?}, not {second:?}");
        deadline.tick(format!("{seen:?}")).await?;
    }
    // gamma takes writes again, under its new epoch.
    let task = nodes[2]
        .submit_to(&agent, json!({ "op": "echo", "value": "after thaw" }))
        .await?;
    nodes[0].wait_task_state(&task, "SUCCEEDED").await?;
    // The VM's host moved with the agent's node's others: gamma counts none of its VMs
    // now (it counted the VM before its work stopped), the host's new node counts it.
    let q = "query($id: ID!) { vm(id: $id) { state host { node } } }";
    let deadline = Deadline::after(WAIT, "the VM to run off gamma");
    let holder = loop {
        let seen = nodes[0].gql_ok(q, json!({ "id": vm })).await?;
        let node = seen["vm"]["host"]["node"].clone();
        if seen["vm"]["state"] == "RUNNING" && node != "gamma" {
            break nodes
                .iter()
                .find(|n| node == n.name.as_str())
                .context("the VM's node")?;
        }
        deadline.tick(seen).await?;
    };
    wait_vms_counted(&nodes[2], 0.0).await?;
    wait_vms_counted(holder, 1.0).await?;
    // gamma, back, stood in no election: the others had heard their leader within its
    // lease and would not vote for it (a pre-vote), and it followed that leader.
    let now = super::restarts::leader_and_term(&nodes[0]).await?;
    ensure!(
        now == (leader.clone(), term),
        "{leader} led in term {term}; now {now:?}"
    );
    let changes = nodes[0].events_after(None, &["LEADER_CHANGED"]).await?;
    ensure!(changes.len() == elected, "{changes:?}");
    Ok(())
}

/// Waits until `node`'s `troupe_vms` gauges sum to `want`.
async fn wait_vms_counted(node: &Node, want: f64) -> Result<()> {
    let deadline = Deadline::after(WAIT, format!("{} to count {want} VMs", node.name));
    loop {
        let metrics = node.metrics().await?;
        if super::support::metric(&metrics, "troupe_vms", &[]) == want {
            return Ok(());
        }
        deadline.tick(metrics).await?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leaders_agents_move_once_a_new_leader_has_judged_it() -> Result<()> {
    let mut nodes = start_cluster(
        NodeOpts::named("alpha"),
        vec![NodeOpts::named("beta"), NodeOpts::named("gamma")],
    )
    .await?;
    let leader = text(&nodes[1].gql_ok(CLUSTER, json!({})).await?, "/cluster/leader")?;
    let at = nodes.iter().position(|n| n.name == leader).context("no leader")?;
    let agent = nodes[at].spawn_builtin("echo", &["led"]).await?;
    nodes[at].wait_agent_state(&agent, "RUNNING").await?;
    let survivor = (at + 1) % 3;
    for m in ["alpha", "beta", "gamma"] {
        wait_member_state(&nodes[survivor], m, "UP").await?;
    }
    let killed = Instant::now();
    nodes[at].kill9().await?;
    let home = wait_moved(&nodes[survivor], &agent, &leader).await?;
    eprintln!(
        "the old leader's agent served on {home} {:?} after the kill",
        killed.elapsed()
    );
    let view = nodes[survivor].gql_ok(CLUSTER, json!({})).await?;
    ensure!(view["cluster"]["leader"] != leader.as_str(), "{view}");
    wait_member_state(&nodes[survivor], &leader, "DOWN").await?;
    let task = nodes[survivor]
        .submit_to(&agent, json!({ "after": "leader loss" }))
        .await?;
    nodes[survivor].wait_task_state(&task, "SUCCEEDED").await?;
    Ok(())
}

/// One run of a task as its agent recorded it: (task, agent, start ns, end ns if it ended).
type Run = (String, String, u128, Option<u128>);

/// The runs recorded in `path` by the agents of the test below.
fn runs(path: &std::path::Path) -> Vec<Run> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out: Vec<Run> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [what, task, agent, at] = f[..] else { continue };
        let Ok(at) = at.parse::<u128>() else { continue };
        match what {
            "start" => out.push((task.into(), agent.into(), at, None)),
            "end" => {
                if let Some(run) = out
                    .iter_mut()
                    .rev()
                    .find(|r| r.0 == task && r.1 == agent && r.3.is_none())
                {
                    run.3 = Some(at);
                }
            }
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_a_killed_nodes_tasks_all_complete_and_no_agent_runs_twice_at_once() -> Result<()> {
    let mut nodes = start_cluster(
        NodeOpts::named("alpha"),
        vec![NodeOpts::named("beta"), NodeOpts::named("gamma")],
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("runs");
    // Each run appends its start and, once the gate is open, its end, with the agent that
    // ran it: the first runs on gamma are still running when it is killed.
    let gate = super::support::Gate::new()?;
    let script = format!(
        "echo start $TROUPE_TASK_ID $TROUPE_AGENT_ID $(date +%s%N) >> {log}; {}",
        gate.script(&format!(
            "echo end $TROUPE_TASK_ID $TROUPE_AGENT_ID $(date +%s%N) >> {log}; cat",
            log = log.display()
        )),
        log = log.display()
    );
    for i in 0..4 {
        let input = json!({ "name": format!("worker-{i}"), "capabilities": ["work"], "maxConcurrentTasks": 1,
                            "backend": { "exec": { "command": ["/bin/sh", "-c", script] } } });
        let id = text(&nodes[2].spawn_agent(input).await?, "/id")?;
        nodes[2].wait_agent_state(&id, "RUNNING").await?;
    }
    for m in ["alpha", "beta", "gamma"] {
        wait_member_state(&nodes[0], m, "UP").await?;
    }
    let mut acked = Vec::new();
    let submit = "mutation($i: Int!) { submitTask(input: { capability: \"work\", payload: { i: $i } }) { id } }";
    for i in 0..12 {
        acked.push(text(
            &nodes[i % 2].gql_ok(submit, json!({ "i": i })).await?,
            "/submitTask/id",
        )?);
    }
    // Some are running on gamma now.
    let deadline = Deadline::after(WAIT, "gamma's agents to be running tasks");
    while runs(&log).iter().filter(|r| r.3.is_none()).count() < 2 {
        deadline.tick(format!("{:?}", runs(&log))).await?;
    }
    nodes[2].kill9().await?;
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    gate.open()?;
    // Load goes on through the failover: what is acknowledged must complete.
    let mut i = 12;
    let deadline = Deadline::after(WAIT, "submissions through the failover");
    while acked.len() < 30 {
        let body = nodes[i % 2].gql(submit, json!({ "i": i })).await?;
        i += 1;
        match body["data"]["submitTask"]["id"].as_str() {
            Some(id) => acked.push(id.to_owned()),
            None => deadline.tick(&body).await?,
        }
    }
    wait_member_state(&nodes[0], "gamma", "DOWN").await?;
    for id in &acked {
        nodes[0].wait_task_state(id, "SUCCEEDED").await?;
    }
    let all = runs(&log);
    for id in &acked {
        ensure!(
            all.iter().any(|r| r.0 == *id && r.3.is_some()),
            "task {id} never ended a run: {all:?}"
        );
    }
    // No agent ran two tasks at once (one slot each), on whichever node: a run cut by the
    // kill ends at the kill.
    let mut by_agent: std::collections::BTreeMap<&str, Vec<(u128, u128)>> = Default::default();
    for (_, agent, start, end) in &all {
        by_agent
            .entry(agent)
            .or_default()
            .push((*start, end.unwrap_or(killed_at)));
    }
    for (agent, mut spans) in by_agent {
        spans.sort();
        for pair in spans.windows(2) {
            ensure!(pair[0].1 <= pair[1].0, "agent {agent} ran two tasks at once: {pair:?}");
        }
    }
    Ok(())
}

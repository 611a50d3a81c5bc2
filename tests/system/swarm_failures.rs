//! Swarms through failures, with real process agents: a member that cannot start, a member
//! SIGKILLed mid-work, the coordinator crashing, a member given up on, and the node killed
//! and restarted.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::support::swarms::{
    alive, create, members, pid_dir, run_task, submit_task, swarm, template, wait_swarm, wait_task,
};
use super::support::{error_code, text, Deadline, Gate, Node, NodeOpts, WAIT};

#[tokio::test]
async fn a_swarm_whose_member_cannot_start_answers_the_members_error_and_leaves_nothing() -> Result<()> {
    let node = Node::start(NodeOpts::named("swarm-bad-member")).await?;
    let adopted = node.spawn_builtin("echo", &["echo"]).await?;
    let member = |name: &str, backend: Value| json!({ "count": 1, "agent": { "name": name, "backend": backend } });
    let echo = member("echo", json!({ "builtin": { "kind": "echo" } }));
    let q = "mutation($input: CreateSwarmInput!) { createSwarm(input: $input) { id } }";
    // A program that is not there, after a member that started, with an agent to adopt.
    let missing = member(
        "reviewer",
        json!({ "process": { "command": ["/nonexistent/reviewer"] } }),
    );
    let input = json!({ "name": "reviewers", "templates": [echo, missing], "members": [adopted] });
    let r = node.gql(q, json!({ "input": input })).await?;
    let message = r["errors"][0]["message"].as_str().unwrap_or_default();
    ensure!(error_code(&r).as_deref() == Some("INVALID_INPUT"), "{r}");
    ensure!(message.contains("program not found"), "{r}");
    // A program that exits before it is ready: UNAVAILABLE with why.
    let exits = member(
        "quitter",
        json!({ "process": { "command": ["/bin/sh", "-c", "exit 3"] } }),
    );
    let input = json!({ "name": "quitters", "templates": [echo, exits] });
    let r = node.gql(q, json!({ "input": input })).await?;
    ensure!(error_code(&r).as_deref() == Some("UNAVAILABLE"), "{r}");
    ensure!(
        r["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("did not start")),
        "{r}"
    );
    // Nothing is left: no swarm, no member, no coordinator; the adopted agent is the node's again.
    let left = node
        .gql_ok("{ swarms { id } agents { totalCount } }", json!({}))
        .await?;
    ensure!(left["swarms"] == json!([]), "{left}");
    ensure!(left["agents"]["totalCount"] == 1, "only the adopted agent: {left}");
    node.wait_agent_state(&adopted, "RUNNING").await?;
    let owner = "query($id: ID!) { agent(id: $id) { owner } }";
    let agent = node.gql_ok(owner, json!({ "id": adopted })).await?;
    ensure!(agent["agent"]["owner"] == "agents", "{agent}");
    let tree = node
        .gql_ok(
            "{ supervisionTree { children { id supervisor { children { id supervisor { children { id } } } } } } }",
            json!({}),
        )
        .await?;
    ensure!(!tree.to_string().contains("coordinator"), "{tree}");
    Ok(())
}

#[tokio::test]
async fn a_mesh_swarm_loses_nothing_when_a_member_is_killed_or_the_coordinator_crashes() -> Result<()> {
    let node = Node::start(NodeOpts::named("swarm-mesh").arg("--fault-injection", "true")).await?;
    let gate = Gate::new()?;
    let log = node.data_dir().join("done.log");
    let env = [
        ("GATE", gate.path().display().to_string()),
        ("DONE_LOG", log.display().to_string()),
    ];
    let s = create(
        &node,
        json!({ "name": "mesh", "topology": "MESH", "templates": [template("gated", &["math"], 3, &env)] }),
    )
    .await?;
    let id = text(&s, "/id")?;
    wait_swarm(&node, &id, "HEALTHY", |s| s["status"] == "HEALTHY").await?;
    // Twelve pieces of work in the shared queue; the members hold them at the gate.
    let q = "mutation($id: ID!, $input: SubmitSwarmTaskInput!) { submitSwarmTask(id: $id, input: $input) { id } }";
    let mut tasks = Vec::new();
    for n in 1..=12 {
        let t = node
            .gql_ok(q, json!({ "id": id, "input": { "mode": "SINGLE", "payload": n } }))
            .await?;
        tasks.push(text(&t, "/submitSwarmTask/id")?);
    }
    // Wait until every member holds work, then kill one member's process and crash the
    // coordinator.
    let running = "query($id: ID!) { swarm(id: $id) { queue { running } members { id processGroups } } }";
    let deadline = Deadline::after(WAIT, "each member to hold work");
    let held = loop {
        let r = node.gql_ok(running, json!({ "id": id })).await?;
        if r["swarm"]["queue"]["running"].as_i64() >= Some(12) {
            break r;
        }
        deadline.tick(&r).await?;
    };
    let victim = held["swarm"]["members"][0]["processGroups"][0]
        .as_i64()
        .context("a process group")?;
    super::support::send_signal(-(victim as i32), libc::SIGKILL)?;
    let fault = "mutation($t: ID!) { injectFault(target: $t, kind: SWARM_COORDINATOR_CRASH) }";
    node.gql_ok(fault, json!({ "t": id })).await?;
    gate.open()?;
    let q = "query($id: ID!) { swarmTask(id: $id) { state result topology } }";
    for (n, t) in tasks.iter().enumerate() {
        let deadline = Deadline::after(WAIT, format!("swarm task {t}"));
        loop {
            let r = node.gql_ok(q, json!({ "id": t })).await?["swarmTask"].clone();
            if r["state"] != "RUNNING" {
                let n = n as i64 + 1;
                ensure!(r["state"] == "SUCCEEDED" && r["result"] == n * n, "{r}");
                ensure!(r["topology"] == "MESH", "{r}");
                break;
            }
            deadline.tick(&r).await?;
        }
    }
    let starts = node.events_for("SWARM_COORDINATOR_STARTED", &id).await?;
    ensure!(starts.len() == 2, "the coordinator was restarted once: {starts:?}");
    ensure!(starts[1]["data"]["members"] == 3, "it found its 3 members: {starts:?}");
    // It re-adopted its members instead of starting more.
    let s = wait_swarm(&node, &id, "HEALTHY with 3", |s| {
        s["status"] == "HEALTHY" && members(s).len() == 3
    })
    .await?;
    ensure!(members(&s).len() == 3, "{s}");
    Ok(())
}

#[tokio::test]
async fn a_node_killed_and_restarted_brings_back_every_swarm_with_its_members_and_memory() -> Result<()> {
    let mut node = Node::start(NodeOpts::named("swarm-crash")).await?;
    let pids = pid_dir(&node)?;
    let env = [("PID_DIR", pids.display().to_string())];
    let a = create(
        &node,
        json!({ "name": "a", "templates": [template("math", &["math"], 2, &env)] }),
    )
    .await?;
    let b = create(
        &node,
        json!({ "name": "b", "topology": "MESH", "strategy": "ONE_FOR_ALL", "templates": [template("upper", &["upper"], 1, &env)] }),
    )
    .await?;
    let (a, b) = (text(&a, "/id")?, text(&b, "/id")?);
    let set = "mutation($id: ID!, $k: String!, $v: JSON!) { setSwarmMemory(id: $id, key: $k, value: $v) { version } }";
    node.gql_ok(set, json!({ "id": a, "k": "plan", "v": { "step": 3 } }))
        .await?;
    let before_a = swarm(&node, &a).await?;
    node.kill9().await?;
    node.restart().await?;
    let after_a = wait_swarm(&node, &a, "HEALTHY", |s| s["status"] == "HEALTHY").await?;
    let after_b = wait_swarm(&node, &b, "HEALTHY", |s| s["status"] == "HEALTHY").await?;
    let ids = |s: &Value| members(s).iter().map(|m| m["id"].clone()).collect::<Vec<_>>();
    ensure!(
        ids(&after_a) == ids(&before_a),
        "the same members: {after_a} vs {before_a}"
    );
    ensure!(
        members(&after_b).len() == 1 && after_b["topology"] == "MESH",
        "{after_b}"
    );
    let mem = node
        .gql_ok(
            "query($id: ID!) { swarm(id: $id) { memory { key value } } }",
            json!({ "id": a }),
        )
        .await?;
    ensure!(
        mem["swarm"]["memory"] == json!([{ "key": "plan", "value": { "step": 3 } }]),
        "{mem}"
    );
    let answer = run_task(
        &node,
        &a,
        json!({ "mode": "SINGLE", "capabilities": ["math"], "payload": 6 }),
    )
    .await?;
    ensure!(answer["result"] == 36, "{answer}");
    // The first incarnation's processes died with the node; three run now.
    let deadline = Deadline::after(WAIT, "three member processes");
    while alive(&pids).len() != 3 {
        deadline.tick(format!("{:?}", alive(&pids))).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_failed_members_work_returns_to_the_swarm_and_its_health_follows() -> Result<()> {
    let node = Node::start(NodeOpts::named("swarm-health")).await?;
    let single = json!({ "mode": "SINGLE", "payload": 5 });
    let id = lose_a_member(&node, "fragile", single, 2).await?;
    let health: Vec<Value> = node
        .events(&["SWARM_HEALTHY", "SWARM_DEGRADED", "SWARM_FAILED"])
        .await?
        .into_iter()
        .filter(|e| e["subject"] == id.as_str())
        .map(|e| e["kind"].clone())
        .collect();
    ensure!(
        health == [json!("SWARM_HEALTHY"), json!("SWARM_DEGRADED")],
        "{health:?}"
    );
    // A plan's step returns the same way, and the step after it still gets its result.
    let plan = json!({ "mode": "PLAN", "steps": [
        { "key": "square", "capabilities": ["math"], "payload": 5 },
        { "key": "total", "capabilities": ["math"], "dependsOn": ["square"] },
    ] });
    lose_a_member(&node, "fragile-plan", plan, 3).await?;
    Ok(())
}

/// A swarm of two gated members that are never restarted is given `input`, whose first
/// subtask's member is then killed: the swarm goes DEGRADED, and once the gate opens the
/// task succeeds with 25 after `subtasks` subtasks, the work returned once. The swarm's id.
async fn lose_a_member(node: &Node, name: &str, input: Value, subtasks: usize) -> Result<String> {
    let gate = Gate::new()?;
    let mut member = template("gated", &["math"], 2, &[("GATE", gate.path().display().to_string())]);
    // No restart: a member whose process dies is FAILED at once.
    member["agent"]["restartLimit"] = json!({ "maxRestarts": 0, "windowMs": 60000 });
    let s = create(node, json!({ "name": name, "templates": [member] })).await?;
    let id = text(&s, "/id")?;
    wait_swarm(node, &id, "HEALTHY", |s| s["status"] == "HEALTHY").await?;
    let task = submit_task(node, &id, input).await?;
    let holder = kill_the_holder(node, &task).await?;
    node.wait_agent_state(&holder, "FAILED").await?;
    let s = wait_swarm(node, &id, "DEGRADED", |s| s["status"] == "DEGRADED").await?;
    ensure!(
        s["statusReason"] == "1 of 2 members are running (at least 1 wanted)",
        "{s}"
    );
    gate.open()?;
    let done = wait_task(node, &task).await?;
    ensure!(done["state"] == "SUCCEEDED" && done["result"] == 25, "{done}");
    ensure!(done["subtasks"].as_array().map(Vec::len) == Some(subtasks), "{done}");
    let returned = node.events_for("SWARM_WORK_RETURNED", &id).await?;
    ensure!(
        returned.len() == 1 && returned[0]["data"]["lostMember"] == holder.as_str(),
        "{returned:?}"
    );
    Ok(id)
}

/// Waits until the swarm task's first subtask runs, then SIGKILLs its member's processes;
/// that member's id.
async fn kill_the_holder(node: &Node, task: &str) -> Result<String> {
    let q = "query($id: ID!) { swarmTask(id: $id) { subtasks } }";
    let deadline = Deadline::after(WAIT, "the subtask to run");
    let holder = loop {
        let t = node.gql_ok(q, json!({ "id": task })).await?;
        if let Some(sub) = t["swarmTask"]["subtasks"][0].as_str() {
            let r = node
                .gql_ok(
                    "query($id: ID!) { task(id: $id) { state agentId } }",
                    json!({ "id": sub }),
                )
                .await?;
            if r["task"]["state"] == "RUNNING" {
                break text(&r, "/task/agentId")?;
            }
        }
        deadline.tick(&t).await?;
    };
    let a = node
        .gql_ok(
            "query($id: ID!) { agent(id: $id) { processGroups } }",
            json!({ "id": holder }),
        )
        .await?;
    let group = a["agent"]["processGroups"][0].as_i64().context("a process group")?;
    super::support::send_signal(-(group as i32), libc::SIGKILL)?;
    Ok(holder)
}

#[tokio::test]
async fn a_task_whose_member_was_lost_goes_on_as_it_was_handed_out_after_its_coordinator_restarts() -> Result<()> {
    let node = Node::start(NodeOpts::named("swarm-resume").arg("--fault-injection", "true")).await?;
    let single = json!({ "mode": "SINGLE", "payload": 5 });
    lose_a_member_and_the_coordinator(&node, "resume-single", "HIERARCHICAL", single, 25).await?;
    // Three items fit the eight free slots, so the map went to members; after the loss they
    // would not fit, but the map goes on as it was handed out.
    let map = json!({ "mode": "MAP_REDUCE", "items": [1, 2, 3] });
    lose_a_member_and_the_coordinator(&node, "resume-map", "ADAPTIVE", map, 14).await?;
    let scatter = json!({ "mode": "SCATTER_GATHER", "k": 2, "aggregate": "FIRST", "payload": 5 });
    lose_a_member_and_the_coordinator(&node, "resume-scatter", "HIERARCHICAL", scatter, 25).await?;
    Ok(())
}

/// A swarm of two gated members that are never restarted is given `input`; its first
/// subtask's member is killed, and once that member is FAILED (and its work returned, unless
/// the task is a scatter-gather) the coordinator crashes. Once it has started again and the
/// gate opens, the task succeeds with `result`.
async fn lose_a_member_and_the_coordinator(
    node: &Node,
    name: &str,
    topology: &str,
    input: Value,
    result: i64,
) -> Result<()> {
    let gate = Gate::new()?;
    let mut member = template("gated", &["math"], 2, &[("GATE", gate.path().display().to_string())]);
    member["agent"]["restartLimit"] = json!({ "maxRestarts": 0, "windowMs": 60000 });
    let s = create(
        node,
        json!({ "name": name, "topology": topology, "templates": [member] }),
    )
    .await?;
    let id = text(&s, "/id")?;
    wait_swarm(node, &id, "HEALTHY", |s| s["status"] == "HEALTHY").await?;
    let scatter = input["mode"] == "SCATTER_GATHER";
    let task = submit_task(node, &id, input).await?;
    let holder = kill_the_holder(node, &task).await?;
    node.wait_agent_state(&holder, "FAILED").await?;
    if !scatter {
        node.wait_event("SWARM_WORK_RETURNED", &id).await?;
    }
    let fault = "mutation($t: ID!) { injectFault(target: $t, kind: SWARM_COORDINATOR_CRASH) }";
    node.gql_ok(fault, json!({ "t": id })).await?;
    let deadline = Deadline::after(WAIT, "the coordinator to start again");
    loop {
        let starts = node.events_for("SWARM_COORDINATOR_STARTED", &id).await?;
        if starts.len() == 2 {
            break;
        }
        deadline.tick(format!("{starts:?}")).await?;
    }
    gate.open()?;
    let done = wait_task(node, &task).await?;
    ensure!(done["state"] == "SUCCEEDED" && done["result"] == result, "{done}");
    Ok(())
}

#[tokio::test]
async fn scatter_gather_first_answers_with_the_first_answer_to_arrive_while_a_member_hangs() -> Result<()> {
    let node = Node::start(NodeOpts::named("swarm-first")).await?;
    // Never opened: the first member takes its work and never answers.
    let gate = Gate::new()?;
    let hung = template("gated", &["math"], 1, &[("GATE", gate.path().display().to_string())]);
    let s = create(
        &node,
        json!({ "name": "first", "templates": [hung, template("math", &["math"], 1, &[])] }),
    )
    .await?;
    let id = text(&s, "/id")?;
    wait_swarm(&node, &id, "HEALTHY", |s| s["status"] == "HEALTHY").await?;
    let input = json!({ "mode": "SCATTER_GATHER", "k": 2, "aggregate": "FIRST", "payload": 6 });
    let done = run_task(&node, &id, input).await?;
    ensure!(done["state"] == "SUCCEEDED" && done["result"] == 36, "{done}");
    Ok(())
}

#[tokio::test]
async fn destroying_a_mesh_swarm_cancels_the_work_it_left_in_the_queue() -> Result<()> {
    let node = Node::start(NodeOpts::named("swarm-destroy-mesh")).await?;
    let gate = Gate::new()?;
    let env = [("GATE", gate.path().display().to_string())];
    let s = create(
        &node,
        json!({ "name": "mesh", "topology": "MESH", "templates": [template("gated", &["math"], 1, &env)] }),
    )
    .await?;
    let id = text(&s, "/id")?;
    wait_swarm(&node, &id, "HEALTHY", |s| s["status"] == "HEALTHY").await?;
    // Six pieces of work for one member that takes four at a time: two wait in the queue.
    let q = "mutation($id: ID!, $input: SubmitSwarmTaskInput!) { submitSwarmTask(id: $id, input: $input) { id } }";
    for n in 1..=6 {
        node.gql_ok(q, json!({ "id": id, "input": { "mode": "SINGLE", "payload": n } }))
            .await?;
    }
    let open = |state: &'static str| {
        let node = &node;
        async move {
            let q = "query($s: TaskState) { tasks(state: $s, first: 100) { edges { node { id } } } }";
            let r = node.gql_ok(q, json!({ "s": state })).await?;
            anyhow::Ok(r["tasks"]["edges"].as_array().map_or(0, Vec::len))
        }
    };
    let deadline = Deadline::after(WAIT, "four running and two queued");
    loop {
        let (running, queued) = (open("RUNNING").await?, open("QUEUED").await?);
        if running == 4 && queued == 2 {
            break;
        }
        deadline.tick(format!("{running} running, {queued} queued")).await?;
    }
    node.gql_ok(
        "mutation($id: ID!) { destroySwarm(id: $id) { id } }",
        json!({ "id": id }),
    )
    .await?;
    let deadline = Deadline::after(WAIT, "no work of the swarm left open");
    loop {
        let (running, queued) = (open("RUNNING").await?, open("QUEUED").await?);
        if running == 0 && queued == 0 {
            break;
        }
        deadline.tick(format!("{running} running, {queued} queued")).await?;
    }
    Ok(())
}

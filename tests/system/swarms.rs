//! Swarms through the gateway with real process agents (examples/agents/swarm_agent.py):
//! lifecycle and scaling, the team patterns, memory, and what survives a crash.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::support::swarms::{
    alive, child, children, create, in_tree, members, pid_dir, run_task, swarm, template, wait_swarm, SWARM_FIELDS,
};
use super::support::{error_code, text, Deadline, Gate, Node, NodeOpts, WAIT};

#[tokio::test]
async fn a_swarm_starts_its_members_scales_and_its_destruction_leaves_no_process() -> Result<()> {
    let node = Node::start(NodeOpts::named("swarm-life")).await?;
    let pids = pid_dir(&node)?;
    let env = [("PID_DIR", pids.display().to_string())];
    let s = create(
        &node,
        json!({ "name": "team", "templates": [template("math", &["math"], 3, &env)], "minAgents": 1, "maxAgents": 6 }),
    )
    .await?;
    let id = text(&s, "/id")?;
    ensure!(members(&s).len() == 3, "{s}");
    for m in members(&s) {
        let caps = m["capabilities"].as_array().context("capabilities")?;
        ensure!(caps.contains(&json!(format!("swarm:{id}"))), "{m}");
    }
    let s = wait_swarm(&node, &id, "HEALTHY", |s| s["status"] == "HEALTHY").await?;
    ensure!(s["statusReason"] == "all 3 members are running", "{s}");
    // Members are the swarm's own subtree: core > swarms > the swarm > members, coordinator.
    let ours = in_tree(&node, &[&id]).await?;
    ensure!(ours["kind"] == "SWARM", "{ours}");
    ensure!(children(&ours) == ["members", "coordinator"], "{ours}");
    let in_tree = child(&ours, "members")?["supervisor"]["children"]
        .as_array()
        .map(Vec::len);
    ensure!(in_tree == Some(3), "{ours}");
    // A member's owner names its swarm's members supervisor, not just "members".
    let member = text(&members(&s)[0], "/id")?;
    let owner = node
        .gql_ok("query($id: ID!) { agent(id: $id) { owner } }", json!({ "id": member }))
        .await?;
    ensure!(
        owner["agent"]["owner"] == format!("swarms/{id}/members").as_str(),
        "{owner}"
    );

    let q = format!("mutation($id: ID!, $n: Int!) {{ scaleSwarm(id: $id, size: $n) {{ {SWARM_FIELDS} }} }}");
    let up = node.gql_ok(&q, json!({ "id": id, "n": 5 })).await?["scaleSwarm"].clone();
    ensure!(members(&up).len() == 5, "{up}");
    let down = node.gql_ok(&q, json!({ "id": id, "n": 2 })).await?["scaleSwarm"].clone();
    ensure!(members(&down).len() == 2, "{down}");
    // The two that stay are the oldest.
    let first_two: Vec<Value> = members(&s).into_iter().take(2).map(|m| m["id"].clone()).collect();
    let kept: Vec<Value> = members(&down).into_iter().map(|m| m["id"].clone()).collect();
    ensure!(first_two == kept, "kept {kept:?}, not the oldest {first_two:?}");
    let beyond = node.gql(&q, json!({ "id": id, "n": 7 })).await?;
    ensure!(error_code(&beyond).as_deref() == Some("INVALID_INPUT"), "{beyond}");
    let scaled = node.events_for("SWARM_SCALED", &id).await?;
    ensure!(scaled.len() == 2, "{scaled:?}");
    ensure!(scaled[1]["data"]["reason"] == "scaleSwarm", "{scaled:?}");
    // Its reason follows its size, though its health did not change.
    wait_swarm(&node, &id, "HEALTHY at 2, said so", |s| {
        s["status"] == "HEALTHY" && members(s).len() == 2 && s["statusReason"] == "all 2 members are running"
    })
    .await?;
    ensure!(alive(&pids).len() == 2, "processes alive: {:?}", alive(&pids));

    let q = "mutation($id: ID!) { destroySwarm(id: $id) { id } }";
    node.gql_ok(q, json!({ "id": id })).await?;
    let deadline = Deadline::after(WAIT, "every member process to be gone");
    while !alive(&pids).is_empty() {
        deadline.tick(format!("{:?}", alive(&pids))).await?;
    }
    ensure!(swarm(&node, &id).await?.is_null(), "the swarm is gone");
    for m in members(&down) {
        let a = node
            .gql_ok("query($id: ID!) { agent(id: $id) { id } }", json!({ "id": m["id"] }))
            .await?;
        ensure!(a["agent"].is_null(), "member {m} is gone: {a}");
    }
    node.wait_event("SWARM_DESTROYED", &id).await?;
    Ok(())
}

#[tokio::test]
async fn hierarchical_plans_scatter_gather_pipeline_and_map_reduce_give_the_right_answers() -> Result<()> {
    let node = Node::start(NodeOpts::named("swarm-work")).await?;
    let s = create(
        &node,
        json!({ "name": "mathematicians", "topology": "HIERARCHICAL", "templates": [
            template("math", &["math", "exact"], 2, &[]),
            template("faulty", &["math"], 1, &[]),
            template("planner", &["plan"], 1, &[]),
            template("upper", &["upper"], 1, &[]),
            template("exclaim", &["exclaim"], 1, &[]),
        ] }),
    )
    .await?;
    let id = text(&s, "/id")?;
    wait_swarm(&node, &id, "HEALTHY", |s| s["status"] == "HEALTHY").await?;
    let math_members: Vec<String> = members(&s)
        .iter()
        .filter(|m| m["name"].as_str().is_some_and(|n| n.starts_with("math-")))
        .map(|m| m["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let faulty: Vec<String> = members(&s)
        .iter()
        .filter(|m| m["name"].as_str().is_some_and(|n| n.starts_with("faulty-")))
        .map(|m| m["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    ensure!(math_members.len() == 2 && faulty.len() == 1, "{s}");

    // A plan given in the task: squares of 1, 2, 3, then their sum, on exact members (the
    // faulty one has `math` but not `exact`).
    let steps = json!([
        { "key": "a", "capabilities": ["exact"], "payload": 1 },
        { "key": "b", "capabilities": ["exact"], "payload": 2 },
        { "key": "c", "capabilities": ["exact"], "payload": 3 },
        { "key": "sum", "capabilities": ["exact"], "dependsOn": ["a", "b", "c"] },
    ]);
    let plan = run_task(&node, &id, json!({ "mode": "PLAN", "steps": steps })).await?;
    ensure!(plan["state"] == "SUCCEEDED", "{plan}");
    ensure!(plan["topology"] == "HIERARCHICAL", "{plan}");
    ensure!(plan["subtasks"].as_array().map(Vec::len) == Some(4), "{plan}");
    ensure!(plan["result"] == 14, "{plan}");

    // A plan asked of the planner member.
    let planned = run_task(&node, &id, json!({ "mode": "PLAN", "input": { "numbers": [2, 3] } })).await?;
    ensure!(planned["state"] == "SUCCEEDED", "{planned}");
    ensure!(
        planned["subtasks"].as_array().map(Vec::len) == Some(4),
        "planner + 3: {planned}"
    );
    ensure!(planned["result"] == 13, "{planned}");

    // Majority over the three math-capable members outvotes the faulty one, named as dissent.
    let vote = run_task(
        &node,
        &id,
        json!({ "mode": "SCATTER_GATHER", "k": 3, "aggregate": "MAJORITY", "capabilities": ["math"], "payload": 7 }),
    )
    .await?;
    ensure!(vote["state"] == "SUCCEEDED", "{vote}");
    ensure!(vote["result"]["result"] == 49, "{vote}");
    ensure!(vote["result"]["votes"] == 2, "{vote}");
    ensure!(
        vote["result"]["dissent"] == json!([{ "agent": faulty[0], "result": 50 }]),
        "{vote}"
    );

    // A pipeline: each stage's output is the next one's input.
    let piped = run_task(
        &node,
        &id,
        json!({ "mode": "PIPELINE", "input": "hello", "stages": [
            { "capabilities": ["upper"] }, { "capabilities": ["exclaim"] }, { "capabilities": ["exclaim"] }
        ] }),
    )
    .await?;
    ensure!(piped["result"] == "HELLO!!", "{piped}");

    // Map-reduce on the exact members: squares of 1..4, summed.
    let mr = run_task(
        &node,
        &id,
        json!({ "mode": "MAP_REDUCE", "items": [1, 2, 3, 4],
                "map": { "capabilities": ["exact"] }, "reduce": { "capabilities": ["exact"] } }),
    )
    .await?;
    ensure!(mr["result"] == 30, "{mr}");
    ensure!(mr["subtasks"].as_array().map(Vec::len) == Some(5), "{mr}");

    // Work no member can do fails the swarm task, with the reason.
    let missing = run_task(
        &node,
        &id,
        json!({ "mode": "SINGLE", "capabilities": ["juggling"], "payload": 1 }),
    )
    .await?;
    ensure!(missing["state"] == "FAILED", "{missing}");
    ensure!(
        missing["error"].as_str().unwrap_or_default().contains("juggling"),
        "{missing}"
    );
    Ok(())
}

#[tokio::test]
async fn swarm_memory_compare_and_set_loses_no_update_and_expires_and_is_bounded() -> Result<()> {
    let node = Node::start(NodeOpts::named("swarm-mem")).await?;
    let s = create(
        &node,
        json!({ "name": "hive", "templates": [template("math", &["math"], 1, &[])], "memoryLimitBytes": 2000 }),
    )
    .await?;
    let id = text(&s, "/id")?;
    let set = "mutation($id: ID!, $k: String!, $v: JSON!, $ttl: Int64, $expect: Int64) { \
               setSwarmMemory(id: $id, key: $k, value: $v, ttlMs: $ttl, expectVersion: $expect) { key value version } }";
    let get = "query($id: ID!, $p: String!) { swarm(id: $id) { memory(prefix: $p) { key value version expiresAt } } }";
    // 8 writers each add 1 five times, each by compare-and-set, retrying on CONFLICT.
    let writers = (0..8).map(|_| {
        let node = &node;
        let id = id.clone();
        async move {
            let mut conflicts = 0;
            for _ in 0..5 {
                loop {
                    let now = node.gql_ok(get, json!({ "id": id, "p": "counter" })).await?;
                    let entry = now["swarm"]["memory"].as_array().and_then(|m| m.first()).cloned();
                    let (value, version) = match &entry {
                        Some(e) => (e["value"].as_i64().unwrap_or(0), e["version"].as_i64().unwrap_or(0)),
                        None => (0, 0),
                    };
                    let r = node
                        .gql(
                            set,
                            json!({ "id": id, "k": "counter", "v": value + 1, "expect": version }),
                        )
                        .await?;
                    match error_code(&r).as_deref() {
                        None => break,
                        Some("CONFLICT") => conflicts += 1,
                        Some(other) => anyhow::bail!("{other}: {r}"),
                    }
                }
            }
            anyhow::Ok(conflicts)
        }
    });
    let conflicts: Vec<usize> = futures::future::try_join_all(writers).await?;
    let now = node.gql_ok(get, json!({ "id": id, "p": "counter" })).await?;
    ensure!(
        now["swarm"]["memory"] == json!([{ "key": "counter", "value": 40, "version": 40, "expiresAt": null }]),
        "40 increments, none lost ({} conflicts retried): {now}",
        conflicts.iter().sum::<usize>()
    );
    let sets = node.events_for("SWARM_MEMORY_SET", &id).await?;
    ensure!(sets.len() == 40, "each change is an event: {}", sets.len());

    // A key that must not exist yet; a prefix listing; a TTL.
    node.gql_ok(set, json!({ "id": id, "k": "jobs/1", "v": "a", "expect": 0 }))
        .await?;
    let again = node
        .gql(set, json!({ "id": id, "k": "jobs/1", "v": "b", "expect": 0 }))
        .await?;
    ensure!(error_code(&again).as_deref() == Some("CONFLICT"), "{again}");
    node.gql_ok(set, json!({ "id": id, "k": "jobs/2", "v": "c", "ttl": 1 }))
        .await?;
    node.wait_event("SWARM_MEMORY_EXPIRED", &id).await?;
    let jobs = node.gql_ok(get, json!({ "id": id, "p": "jobs/" })).await?;
    ensure!(
        jobs["swarm"]["memory"] == json!([{ "key": "jobs/1", "value": "a", "version": 1, "expiresAt": null }]),
        "{jobs}"
    );
    // Beyond the swarm's bound: a clear error, nothing written.
    let big = "x".repeat(3000);
    let full = node.gql(set, json!({ "id": id, "k": "big", "v": big })).await?;
    ensure!(error_code(&full).as_deref() == Some("INVALID_INPUT"), "{full}");
    ensure!(full.to_string().contains("above its limit of 2000"), "{full}");
    // Members read and write it through their protocol: 3 members, 4 tasks at a time each,
    // 24 compare-and-set increments.
    let counters = create(
        &node,
        json!({ "name": "counters", "topology": "MESH", "templates": [template("counter", &["count"], 3, &[])] }),
    )
    .await?;
    let cid = text(&counters, "/id")?;
    let submit = "mutation($id: ID!) { submitSwarmTask(id: $id, input: { mode: SINGLE }) { id } }";
    let mut runs = Vec::new();
    for _ in 0..24 {
        runs.push(text(
            &node.gql_ok(submit, json!({ "id": cid })).await?,
            "/submitSwarmTask/id",
        )?);
    }
    let q = "query($id: ID!) { swarmTask(id: $id) { state result error } }";
    let mut written = Vec::new();
    for r in &runs {
        let deadline = Deadline::after(WAIT, format!("counter task {r}"));
        loop {
            let t = node.gql_ok(q, json!({ "id": r })).await?["swarmTask"].clone();
            if t["state"] != "RUNNING" {
                ensure!(t["state"] == "SUCCEEDED", "{t}");
                written.push(t["result"].as_i64().context("a count")?);
                break;
            }
            deadline.tick(&t).await?;
        }
    }
    written.sort_unstable();
    ensure!(
        written == (1..=24).collect::<Vec<_>>(),
        "each increment once: {written:?}"
    );
    let count = node.gql_ok(get, json!({ "id": cid, "p": "count" })).await?;
    ensure!(count["swarm"]["memory"][0]["value"] == 24, "{count}");

    let del = "mutation($id: ID!, $k: String!) { deleteSwarmMemory(id: $id, key: $k) }";
    node.gql_ok(del, json!({ "id": id, "k": "jobs/1" })).await?;
    let jobs = node.gql_ok(get, json!({ "id": id, "p": "jobs/" })).await?;
    ensure!(jobs["swarm"]["memory"] == json!([]), "{jobs}");
    Ok(())
}

#[tokio::test]
async fn autoscale_grows_a_swarm_with_its_queue_and_shrinks_it_when_idle() -> Result<()> {
    let node = Node::start(NodeOpts::named("swarm-scale")).await?;
    let gate = Gate::new()?;
    let mut member = template("gated", &["math"], 1, &[("GATE", gate.path().display().to_string())]);
    member["agent"]["maxConcurrentTasks"] = json!(1);
    let s = create(
        &node,
        json!({ "name": "elastic", "topology": "MESH", "templates": [member], "minAgents": 1, "maxAgents": 4,
                "autoscale": { "queuePerAgent": 0.5, "idleBelow": 0.5, "cooldownMs": 0 } }),
    )
    .await?;
    let id = text(&s, "/id")?;
    // Six gated tasks: whenever autoscale looks (the submits may still be coming), a swarm of
    // n < 4 members has 6 - n waiting, more than 0.5 each, so it grows until 4. (With 1.0 a
    // look that found 3 waiting for 1 member made it 3, where 3 waiting for 3 stopped it.)
    let q = "mutation($id: ID!, $n: JSON!) { submitSwarmTask(id: $id, input: { mode: SINGLE, payload: $n }) { id } }";
    let mut tasks = Vec::new();
    for n in 1..=6 {
        tasks.push(text(
            &node.gql_ok(q, json!({ "id": id, "n": n })).await?,
            "/submitSwarmTask/id",
        )?);
    }
    wait_swarm(&node, &id, "grown to 4", |s| s["size"] == 4 && members(s).len() == 4).await?;
    let grew = node.events_for("SWARM_SCALED", &id).await?;
    let reason = grew[0]["data"]["reason"].as_str().unwrap_or_default();
    ensure!(
        reason.starts_with("autoscale:") && reason.contains("tasks wait"),
        "{grew:?}"
    );
    gate.open()?;
    let q = "query($id: ID!) { swarmTask(id: $id) { state } }";
    for t in &tasks {
        let deadline = Deadline::after(WAIT, format!("task {t}"));
        while node.gql_ok(q, json!({ "id": t })).await?["swarmTask"]["state"] != "SUCCEEDED" {
            deadline.tick("not yet").await?;
        }
    }
    wait_swarm(&node, &id, "shrunk to 1", |s| s["size"] == 1 && members(s).len() == 1).await?;
    let all = node.events_for("SWARM_SCALED", &id).await?;
    let last = all.last().context("scaled")?;
    ensure!(
        last["data"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("nothing waits"),
        "{all:?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_adaptive_swarm_goes_mesh_for_independent_work_under_load_and_back_for_dependencies() -> Result<()> {
    let node = Node::start(NodeOpts::named("swarm-adapt")).await?;
    let s = create(
        &node,
        json!({ "name": "adaptive", "topology": "ADAPTIVE", "templates": [template("math", &["math"], 2, &[])] }),
    )
    .await?;
    let id = text(&s, "/id")?;
    ensure!(s["activeTopology"] == "HIERARCHICAL", "{s}");
    wait_swarm(&node, &id, "HEALTHY", |s| s["status"] == "HEALTHY").await?;
    // 20 independent squares for 8 free slots: mesh.
    let items: Vec<i64> = (1..=20).collect();
    let mr = run_task(
        &node,
        &id,
        json!({ "mode": "MAP_REDUCE", "items": items, "map": { "capabilities": ["math"] }, "reduce": {} }),
    )
    .await?;
    ensure!(mr["result"] == 2870 && mr["topology"] == "MESH", "{mr}");
    // Dependencies: hierarchical again.
    let steps = json!([{ "key": "a", "payload": 3 }, { "key": "b", "dependsOn": ["a"] }]);
    let plan = run_task(&node, &id, json!({ "mode": "PLAN", "steps": steps })).await?;
    ensure!(plan["result"] == 9 && plan["topology"] == "HIERARCHICAL", "{plan}");
    let switches = node.events_for("SWARM_TOPOLOGY_SWITCHED", &id).await?;
    let seen: Vec<(Value, Value)> = switches
        .iter()
        .map(|e| (e["data"]["to"].clone(), e["data"]["reason"].clone()))
        .collect();
    ensure!(switches.len() == 2, "{seen:?}");
    ensure!(
        seen[0].0 == "MESH" && seen[0].1.as_str().unwrap_or_default().contains("under load"),
        "{seen:?}"
    );
    ensure!(
        seen[1].0 == "HIERARCHICAL" && seen[1].1 == "the work has dependencies",
        "{seen:?}"
    );
    Ok(())
}

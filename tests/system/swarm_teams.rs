//! Sub-teams (a member leading a nested swarm) and swarms on a peer, through the gateway with
//! real process agents.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::support::swarms::{
    alive, children, create, in_tree, members, pid_dir, run_task, swarm, template, wait_swarm, SWARM_FIELDS,
};
use super::support::{error_code, text, Deadline, Node, NodeOpts, WAIT};

#[tokio::test]
async fn a_member_leads_a_sub_team_that_does_its_part_of_a_plan_inside_the_swarms_subtree() -> Result<()> {
    let mut node = Node::start(NodeOpts::named("swarm-nested")).await?;
    let pids = pid_dir(&node)?;
    let env = [("PID_DIR", pids.display().to_string())];
    // The leader is the newest member, so scaling down would pick it first.
    let company = create(
        &node,
        json!({ "name": "company", "templates": [
            template("math", &["exact"], 1, &env),
            template("lead", &["lead"], 1, &env),
        ] }),
    )
    .await?;
    let company_id = text(&company, "/id")?;
    let leader = members(&company)
        .iter()
        .find(|m| m["name"].as_str().is_some_and(|n| n.starts_with("lead-")))
        .and_then(|m| m["id"].as_str().map(str::to_owned))
        .context("the lead member")?;
    let math = text(&members(&company)[0], "/id")?;

    let team = |leader: &str| {
        json!({ "name": "squad", "parent": company_id, "leader": leader,
        "templates": [template("math", &["exact"], 3, &env)] })
    };
    let q = format!(
        "mutation($input: CreateSwarmInput!) {{ createSwarm(input: $input) {{ {SWARM_FIELDS} parent {{ id }} leader {{ id }} }} }}"
    );
    let squad = node.gql_ok(&q, json!({ "input": team(&leader) })).await?["createSwarm"].clone();
    let squad_id = text(&squad, "/id")?;
    ensure!(
        squad["parent"]["id"] == company_id && squad["leader"]["id"] == leader,
        "{squad}"
    );
    ensure!(members(&squad).len() == 3, "{squad}");
    let again = node.gql(&q, json!({ "input": team(&leader) })).await?;
    ensure!(
        error_code(&again).as_deref() == Some("CONFLICT"),
        "one team per leader: {again}"
    );
    let outsider = text(&members(&squad)[0], "/id")?;
    let outsider = node.gql(&q, json!({ "input": team(&outsider) })).await?;
    ensure!(error_code(&outsider).as_deref() == Some("INVALID_INPUT"), "{outsider}");
    let half = node
        .gql(&q, json!({ "input": { "name": "x", "parent": company_id } }))
        .await?;
    ensure!(error_code(&half).as_deref() == Some("INVALID_INPUT"), "{half}");

    // The team's subtree runs inside the company's: core > swarms > company > squad.
    let tree = in_tree(&node, &[&company_id]).await?;
    ensure!(
        children(&tree) == ["members", "coordinator", squad_id.as_str()],
        "{tree}"
    );
    let inner = in_tree(&node, &[&company_id, &squad_id]).await?;
    ensure!(
        inner["kind"] == "SWARM" && children(&inner) == ["members", "coordinator"],
        "{inner}"
    );

    // The leader's step goes to its team (a MAP_REDUCE the team's members do); the step
    // after it sums what it got: 1 + 4 + 9 + 16.
    let plan = json!({ "mode": "PLAN", "steps": [
        { "key": "squares", "capabilities": ["lead"], "payload": { "numbers": [1, 2, 3, 4] } },
        { "key": "total", "capabilities": ["exact"], "dependsOn": ["squares"] },
    ] });
    let done = run_task(&node, &company_id, plan).await?;
    ensure!(done["state"] == "SUCCEEDED" && done["result"] == 30, "{done}");
    let q = "query($id: ID!) { swarm(id: $id) { teams { id } tasks { mode state result subtasks } } }";
    let seen = node.gql_ok(q, json!({ "id": squad_id })).await?["swarm"].clone();
    let tasks = seen["tasks"].as_array().context("tasks")?;
    ensure!(
        tasks.len() == 1
            && tasks[0]["mode"] == "MAP_REDUCE"
            && tasks[0]["result"] == 30
            && tasks[0]["subtasks"].as_array().map(Vec::len) == Some(5),
        "the squad did the squaring: {seen}"
    );
    let teams = node.gql_ok(q, json!({ "id": company_id })).await?["swarm"]["teams"].clone();
    ensure!(teams == json!([{ "id": squad_id }]), "{teams}");

    // Scaling the company down keeps the member leading a team.
    let q = format!("mutation($id: ID!, $n: Int!) {{ scaleSwarm(id: $id, size: $n) {{ {SWARM_FIELDS} }} }}");
    let down = node.gql_ok(&q, json!({ "id": company_id, "n": 1 })).await?["scaleSwarm"].clone();
    let kept: Vec<Value> = members(&down).iter().map(|m| m["id"].clone()).collect();
    ensure!(kept == [json!(leader)], "kept {kept:?}, not the leader; {math} goes");

    // A node killed and restarted brings the team back inside the company.
    node.kill9().await?;
    node.restart().await?;
    wait_swarm(&node, &squad_id, "HEALTHY", |s| s["status"] == "HEALTHY").await?;
    // The team may report HEALTHY before the company's start (which starts the team) is done.
    let deadline = Deadline::after(WAIT, "the company's subtree to run again with its team");
    loop {
        let tree = in_tree(&node, &[&company_id]).await?;
        if tree["state"] == "RUNNING" && children(&tree).contains(&squad_id.as_str()) {
            break;
        }
        deadline.tick(&tree).await?;
    }
    let single = json!({ "mode": "SINGLE", "capabilities": ["lead"], "payload": { "numbers": [1, 2, 3, 4] } });
    let done = run_task(&node, &company_id, single).await?;
    ensure!(done["state"] == "SUCCEEDED" && done["result"] == 30, "{done}");

    // Destroying the company destroys its team: no swarm, no process.
    node.gql_ok(
        "mutation($id: ID!) { destroySwarm(id: $id) { id } }",
        json!({ "id": company_id }),
    )
    .await?;
    ensure!(swarm(&node, &squad_id).await?.is_null(), "the squad is gone");
    node.wait_event("SWARM_DESTROYED", &squad_id).await?;
    let deadline = Deadline::after(WAIT, "every member process to be gone");
    while !alive(&pids).is_empty() {
        deadline.tick(format!("{:?}", alive(&pids))).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_on_a_peer_is_created_listed_worked_and_destroyed_through_this_node() -> Result<()> {
    let (alpha, beta) = super::cluster::start_pair().await?;
    let echo = json!({ "count": 2, "agent": echo_agent() });
    let q = format!("mutation($input: CreateSwarmInput!) {{ createSwarm(input: $input) {{ {SWARM_FIELDS} node }} }}");
    let far = alpha
        .gql_ok(
            &q,
            json!({ "input": { "name": "far", "node": "beta", "maxAgents": 4, "templates": [echo] } }),
        )
        .await?["createSwarm"]
        .clone();
    let id = text(&far, "/id")?;
    ensure!(far["node"] == "beta" && members(&far).len() == 2, "{far}");
    for node in [&alpha, &beta] {
        let listed = node.gql_ok("{ swarms { id node } }", json!({})).await?;
        ensure!(listed["swarms"] == json!([{ "id": id, "node": "beta" }]), "{listed}");
    }

    // Work, memory and scaling through alpha, done on beta.
    let done = run_task(&alpha, &id, json!({ "mode": "SINGLE", "payload": { "x": 1 } })).await?;
    ensure!(
        done["state"] == "SUCCEEDED" && done["result"] == json!({ "x": 1 }),
        "{done}"
    );
    let set = "mutation($id: ID!) { setSwarmMemory(id: $id, key: \"k\", value: 7) { version } }";
    alpha.gql_ok(set, json!({ "id": id })).await?;
    let read = "query($id: ID!) { swarm(id: $id) { memory { key value } } }";
    let mem = beta.gql_ok(read, json!({ "id": id })).await?;
    ensure!(mem["swarm"]["memory"] == json!([{ "key": "k", "value": 7 }]), "{mem}");
    let scale = format!("mutation($id: ID!) {{ scaleSwarm(id: $id, size: 3) {{ {SWARM_FIELDS} }} }}");
    let up = alpha.gql_ok(&scale, json!({ "id": id })).await?["scaleSwarm"].clone();
    ensure!(members(&up).len() == 3, "{up}");

    // A sub-team asked of alpha runs on its parent's node.
    let leader = text(&members(&up)[0], "/id")?;
    let team = |node: Option<&str>| {
        json!({ "input": { "name": "near", "parent": id, "leader": leader, "node": node,
                                             "templates": [{ "count": 1, "agent": echo_agent() }] } })
    };
    let wrong = alpha.gql(&q, team(Some("alpha"))).await?;
    ensure!(error_code(&wrong).as_deref() == Some("INVALID_INPUT"), "{wrong}");
    let near = alpha.gql_ok(&q, team(None)).await?["createSwarm"].clone();
    ensure!(near["node"] == "beta", "{near}");
    let near = text(&near, "/id")?;

    alpha
        .gql_ok(
            "mutation($id: ID!) { destroySwarm(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await?;
    for gone in [&id, &near] {
        ensure!(swarm(&beta, gone).await?.is_null(), "{gone} is gone on beta");
        ensure!(swarm(&alpha, gone).await?.is_null(), "{gone} is gone through alpha");
    }
    Ok(())
}

fn echo_agent() -> Value {
    json!({ "name": "echo", "capabilities": ["echo"], "backend": { "builtin": { "kind": "echo" } } })
}

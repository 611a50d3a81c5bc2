//! Fault experiments against a real node's supervision tree: a crash predicted and checked
//! for one_for_one agents and one_for_all swarm members, a refused crash that would exhaust
//! an agent's restart intensity, a hang that holds an agent until its lease lapses, the kill
//! switch, and what is refused. The node, store, message and VM actions, rounds, the other
//! actors' watchdog and experiments on a peer's tree are in `experiment_actions.rs`.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::support::swarms;
use super::support::{expect_code, proc_stat, text, Deadline, Node, NodeOpts, Subscription, WAIT};

pub(super) const EXPERIMENT: &str = "id state seed injections { id action target supervisor outcome effectiveAt revertedAt recoveredAt timeToDetectMs timeToRecoverMs expected { id effect } observed { kind subject } } report { verdict reason injected recovered maxTimeToRecoverMs invariants { name ok detail } unexpected { kind subject } }";

pub(super) async fn node() -> Result<Node> {
    Node::start(NodeOpts::named("chaos").arg("--fault-injection", "true")).await
}

pub(super) async fn start(node: &Node, input: Value) -> Result<Value> {
    let q = format!("mutation($input: StartExperimentInput!) {{ startExperiment(input: $input) {{ {EXPERIMENT} }} }}");
    Ok(node.gql_ok(&q, json!({ "input": input })).await?["startExperiment"].clone())
}

/// The experiment once it has ended, with its report.
pub(super) async fn finished(node: &Node, id: &str) -> Result<Value> {
    let q = format!("query($id: ID!) {{ experiment(id: $id) {{ {EXPERIMENT} }} }}");
    let deadline = Deadline::after(WAIT * 2, format!("experiment {id} to end"));
    loop {
        let e = node.gql_ok(&q, json!({ "id": id })).await?["experiment"].clone();
        if ["PASSED", "FAILED", "ABORTED"].contains(&e["state"].as_str().unwrap_or("")) {
            return Ok(e);
        }
        deadline.tick(&e).await?;
    }
}

pub(super) async fn gates(node: &Node) -> Result<Vec<Value>> {
    let g = node
        .gql_ok("{ faultGates { experiment target action } }", json!({}))
        .await?;
    Ok(g["faultGates"].as_array().cloned().unwrap_or_default())
}

pub(super) async fn restarts(node: &Node, id: &str) -> Result<i64> {
    let a = node
        .gql_ok("query($id: ID!) { agent(id: $id) { restarts } }", json!({ "id": id }))
        .await?;
    a["agent"]["restarts"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no agent {id}: {a}"))
}

pub(super) fn kinds(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|e| e["kind"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_agent_restarts_alone_as_its_supervisor_predicted_and_the_report_says_so() -> Result<()> {
    let node = node().await?;
    let mut agents = Vec::new();
    for _ in 0..3 {
        agents.push(node.spawn_builtin("echo", &["chaos"]).await?);
    }
    let target = json!({ "ids": [agents[1]], "kinds": ["AGENT"] });
    // A dry run answers the target and its expected effect, and touches nothing.
    let dry = start(
        &node,
        json!({ "name": "dry", "dryRun": true, "faults": [{ "action": "CRASH", "target": target }] }),
    )
    .await?;
    ensure!(dry["state"] == "PENDING", "{dry}");
    ensure!(
        dry["injections"][0]["expected"] == json!([{ "id": agents[1], "effect": "RESTART" }]),
        "{dry}"
    );
    ensure!(dry["injections"][0]["outcome"] == "DRY_RUN", "{dry}");
    // The seed Troupe picked reads exactly in JavaScript or jq (below 2^53).
    ensure!(dry["seed"].as_u64().is_some_and(|s| s < 1 << 53), "{dry}");

    let started = start(
        &node,
        json!({ "name": "crash one", "seed": 7, "faults": [{ "action": "CRASH", "target": target }] }),
    )
    .await?;
    ensure!(started["seed"] == 7, "{started}");
    let done = finished(&node, &text(&started, "/id")?).await?;
    ensure!(done["state"] == "PASSED", "{done}");
    let report = &done["report"];
    ensure!(
        report["verdict"] == "PASS" && report["injected"] == 1 && report["recovered"] == 1,
        "{report}"
    );
    ensure!(report["unexpected"] == json!([]), "{report}");
    ensure!(
        report["invariants"]
            .as_array()
            .is_some_and(|i| i.len() == 6 && i.iter().all(|i| i["ok"] == true)),
        "{report}"
    );
    // The report is read by people: the agent by its name, no id.
    let name = node
        .gql_ok(
            "query($id: ID!) { agent(id: $id) { name } }",
            json!({ "id": agents[1] }),
        )
        .await?;
    let matched = report["invariants"]
        .as_array()
        .and_then(|i| i.iter().find(|i| i["name"] == "RESTARTS_MATCH_STRATEGY"))
        .map(|i| i["detail"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    ensure!(
        matched == format!("restarted as predicted: agent {}", text(&name, "/agent/name")?),
        "{matched}"
    );
    let inj = &done["injections"][0];
    ensure!(
        inj["target"] == agents[1].as_str() && inj["supervisor"] == "agents",
        "{inj}"
    );
    ensure!(
        inj["outcome"] == "RECOVERED" && inj["timeToRecoverMs"].is_i64(),
        "{inj}"
    );
    ensure!(
        inj["timeToDetectMs"].is_i64() && inj["effectiveAt"].is_string(),
        "{inj}"
    );
    let seen = kinds(&inj["observed"]);
    ensure!(
        seen.contains(&"AGENT_FAILED".into()) && seen.contains(&"AGENT_RESTARTED".into()),
        "{seen:?}"
    );
    ensure!(restarts(&node, &agents[1]).await? == 1, "the target restarted once");
    for other in [&agents[0], &agents[2]] {
        ensure!(
            restarts(&node, other).await? == 0,
            "a sibling under one_for_one was restarted"
        );
    }
    node.wait_agent_state(&agents[1], "RUNNING").await?;
    let id = node.submit_to(&agents[1], json!("after")).await?;
    node.wait_task_state(&id, "SUCCEEDED").await?;
    // The experiment's life is in the event log.
    let ev = node
        .gql_ok(
            "{ events(kinds: [\"EXPERIMENT_STARTED\", \"FAULT_INJECTED\", \"RECOVERY_OBSERVED\", \"EXPERIMENT_FINISHED\"]) { kind } }",
            json!({}),
        )
        .await?;
    let all = kinds(&ev["events"]);
    ensure!(
        all == [
            "EXPERIMENT_STARTED",
            "FAULT_INJECTED",
            "RECOVERY_OBSERVED",
            "EXPERIMENT_FINISHED"
        ],
        "{all:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_member_of_a_one_for_all_swarm_takes_every_member_along_as_predicted() -> Result<()> {
    let node = node().await?;
    let swarm = swarms::create(
        &node,
        json!({ "name": "allforone", "strategy": "ONE_FOR_ALL", "templates": [swarms::template("m", &["x"], 3, &[])] }),
    )
    .await?;
    let id = text(&swarm, "/id")?;
    let s = swarms::wait_swarm(&node, &id, "three members running", |s| {
        swarms::members(s).iter().filter(|m| m["state"] == "RUNNING").count() == 3
    })
    .await?;
    let members: Vec<String> = swarms::members(&s)
        .iter()
        .filter_map(|m| m["id"].as_str().map(String::from))
        .collect();
    let started = start(
        &node,
        json!({ "name": "one for all", "faults": [{ "action": "CRASH", "target": { "ids": [members[1]] } }] }),
    )
    .await?;
    let effects = started["injections"][0]["expected"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let expected: Vec<&str> = effects
        .iter()
        .filter(|e| e["effect"] == "RESTART")
        .filter_map(|e| e["id"].as_str())
        .collect();
    let mut sorted = expected.clone();
    sorted.sort();
    let mut all = members.iter().map(String::as_str).collect::<Vec<_>>();
    all.sort();
    ensure!(sorted == all, "one_for_all predicts every member: {started}");
    let done = finished(&node, &text(&started, "/id")?).await?;
    ensure!(done["state"] == "PASSED", "{done}");
    let matched = done["report"]["invariants"]
        .as_array()
        .and_then(|i| i.iter().find(|i| i["name"] == "RESTARTS_MATCH_STRATEGY").cloned())
        .unwrap_or_default();
    ensure!(matched["ok"] == true, "{matched}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_that_would_exhaust_an_agents_restart_intensity_is_refused_unless_allowed() -> Result<()> {
    let node = node().await?;
    let spawned = node
        .gql_ok(
            "mutation { spawnAgent(input: { name: \"fragile\", backend: { builtin: { kind: \"echo\" } }, restartLimit: { maxRestarts: 0, windowMs: 60000 } }) { id } }",
            json!({}),
        )
        .await?;
    let id = text(&spawned, "/spawnAgent/id")?;
    node.wait_agent_state(&id, "RUNNING").await?;
    let q = "mutation($input: StartExperimentInput!) { startExperiment(input: $input) { id } }";
    let fault = json!({ "name": "too far", "faults": [{ "action": "CRASH", "target": { "ids": [id] } }] });
    let refused = node.gql(q, json!({ "input": fault })).await?;
    expect_code(&refused, "CONFLICT")?;
    ensure!(refused.to_string().contains("allowEscalation"), "{refused}");
    ensure!(restarts(&node, &id).await? == 0 && gates(&node).await?.is_empty());
    node.wait_agent_state(&id, "RUNNING").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_agent_takes_no_work_until_its_lease_lapses_and_then_everything_reverts() -> Result<()> {
    let node = node().await?;
    let agent = node.spawn_builtin("echo", &["held"]).await?;
    let started = start(
        &node,
        json!({ "name": "hang", "leaseMs": 2000, "faults": [{ "action": "HANG", "target": { "ids": [agent] } }] }),
    )
    .await?;
    let exp = text(&started, "/id")?;
    ensure!(
        started["state"] == "ACTIVE" && started["injections"][0]["effectiveAt"].is_string(),
        "{started}"
    );
    let q = "subscription($id: ID!) { experimentUpdates(id: $id) { state report { verdict } } }";
    let mut updates = Subscription::start(&node, q, json!({ "id": exp })).await?;
    let task = node.submit_to(&agent, json!("waits")).await?;
    // While the gate is armed, the task does not finish: read the task, then the gate.
    let state = node.task(&task).await?["state"].clone();
    let armed = gates(&node).await?;
    ensure!(armed.len() == 1 && armed[0]["action"] == "HANG", "{armed:?}");
    ensure!(state != "SUCCEEDED", "a hung agent finished a task");
    // Nobody renews: the lease lapses and the hang is reverted.
    let done = finished(&node, &exp).await?;
    ensure!(done["state"] == "ABORTED", "{done}");
    ensure!(
        done["report"]["reason"].as_str().unwrap_or("").contains("lease"),
        "{done}"
    );
    ensure!(done["injections"][0]["outcome"] == "RECOVERED", "{done}");
    ensure!(done["injections"][0]["revertedAt"].is_string(), "{done}");
    ensure!(gates(&node).await?.is_empty(), "a gate stayed armed");
    node.wait_task_state(&task, "SUCCEEDED").await?;
    // The live view of it went from ACTIVE to ABORTED with its report, then completed.
    let mut states = Vec::new();
    while let Some(u) = updates.next_with_deadline().await? {
        states.push(u["experimentUpdates"].clone());
    }
    ensure!(states.first().is_some_and(|s| s["state"] == "ACTIVE"), "{states:?}");
    ensure!(
        states
            .last()
            .is_some_and(|s| s["state"] == "ABORTED" && s["report"]["verdict"].is_string()),
        "{states:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_reverts_everything_and_bad_experiments_are_refused() -> Result<()> {
    let node = node().await?;
    let agent = node.spawn_builtin("echo", &["held"]).await?;
    let long = start(
        &node,
        json!({ "name": "long hang", "durationMs": 120000, "faults": [{ "action": "HANG", "target": { "ids": [agent] } }] }),
    )
    .await?;
    ensure!(gates(&node).await?.len() == 1);
    let halted = node.gql_ok("mutation { haltAllFaults }", json!({})).await?;
    ensure!(halted["haltAllFaults"] == 1, "{halted}");
    ensure!(gates(&node).await?.is_empty(), "haltAllFaults left a gate armed");
    let done = finished(&node, &text(&long, "/id")?).await?;
    ensure!(
        done["state"] == "ABORTED" && done["injections"][0]["outcome"] == "RECOVERED",
        "{done}"
    );

    let q = "mutation($input: StartExperimentInput!) { startExperiment(input: $input) { id } }";
    let nothing = json!({ "name": "none", "faults": [{ "action": "CRASH", "target": { "ids": ["no-such-agent"] } }] });
    expect_code(&node.gql(q, json!({ "input": nothing })).await?, "INVALID_INPUT")?;
    // A name where an id goes: the refusal says which agent it names.
    let by_name = json!({ "name": "by name", "faults": [{ "action": "CRASH", "target": { "ids": ["echo-agent"] } }] });
    let refused = node.gql(q, json!({ "input": by_name })).await?;
    expect_code(&refused, "INVALID_INPUT")?;
    ensure!(
        refused.to_string().contains(&format!("echo-agent is agent {agent}")),
        "{refused}"
    );
    let many =
        json!({ "name": "many", "faults": [{ "action": "CRASH", "target": { "kinds": ["SERVICE"], "mode": "ALL" } }] });
    let refused = node.gql(q, json!({ "input": many })).await?;
    expect_code(&refused, "INVALID_INPUT")?;
    ensure!(refused.to_string().contains("fault_max_targets"), "{refused}");
    let process =
        json!({ "name": "no process", "faults": [{ "action": "PROCESS_KILL", "target": { "ids": [agent] } }] });
    expect_code(&node.gql(q, json!({ "input": process })).await?, "CONFLICT")?;

    let plain = Node::start(NodeOpts::named("plain")).await?;
    expect_code(&plain.gql(q, json!({ "input": nothing })).await?, "FORBIDDEN")?;
    expect_code(&plain.gql("{ faultGates { target } }", json!({})).await?, "FORBIDDEN")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_is_replaced_and_a_stopped_one_continued_behind_troupes_back() -> Result<()> {
    let node = node().await?;
    let agent = node.spawn_process("proc", json!({}), json!({})).await?;
    node.wait_agent_state(&agent, "RUNNING").await?;
    let (_, pgid) = node.agent_pid(&agent).await?;

    let killed = start(
        &node,
        json!({ "name": "kill", "faults": [{ "action": "PROCESS_KILL", "target": { "ids": [agent] } }] }),
    )
    .await?;
    let done = finished(&node, &text(&killed, "/id")?).await?;
    ensure!(done["state"] == "PASSED", "{done}");
    ensure!(done["injections"][0]["outcome"] == "RECOVERED", "{done}");
    let (pid, again) = node.agent_pid(&agent).await?;
    ensure!(again != pgid, "the killed process group {pgid} still serves");

    // Stopped behind Troupe's back until the experiment is stopped; then it answers again.
    let paused = start(
        &node,
        json!({ "name": "pause", "faults": [{ "action": "PROCESS_PAUSE", "target": { "ids": [agent] } }] }),
    )
    .await?;
    let id = text(&paused, "/id")?;
    let state = proc_stat(pid).map(|(s, _)| s);
    ensure!(state == Some('T'), "the process group was not stopped: {state:?}");
    node.gql_ok(
        "mutation($id: ID!) { stopExperiment(id: $id) { id } }",
        json!({ "id": id }),
    )
    .await?;
    let done = finished(&node, &id).await?;
    ensure!(done["state"] == "PASSED", "stopExperiment ends it as usual: {done}");
    ensure!(gates(&node).await?.is_empty());
    ensure!(node.run_on(&agent, json!({ "op": "add", "n": 1 })).await.is_ok());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_notices_a_hung_agent_and_its_supervisor_restarts_it() -> Result<()> {
    let node = Node::start(
        NodeOpts::named("chaos")
            .arg("--fault-injection", "true")
            .arg("--agent-watchdog-ms", 200)
            .arg("--agent-watchdog-misses", 3),
    )
    .await?;
    let agent = node.spawn_builtin("echo", &["held"]).await?;
    let started = start(
        &node,
        json!({ "name": "hang found", "durationMs": 60000, "faults": [{ "action": "HANG", "target": { "ids": [agent] } }] }),
    )
    .await?;
    let exp = text(&started, "/id")?;
    let task = node.submit_to(&agent, json!("survives the hang")).await?;
    // Reported after one deadline, killed and restarted by its supervisor after three.
    let deadline = Deadline::after(WAIT, "the hung agent's restart");
    while restarts(&node, &agent).await? < 1 {
        deadline.tick("no restart yet").await?;
    }
    node.wait_task_state(&task, "SUCCEEDED").await?;
    let ev = node
        .gql_ok(
            "{ events(kinds: [\"AGENT_UNRESPONSIVE\", \"AGENT_FAILED\"]) { kind subject data } }",
            json!({}),
        )
        .await?;
    let mine: Vec<&Value> = ev["events"]
        .as_array()
        .map(|a| a.iter().filter(|e| e["subject"] == agent.as_str()).collect())
        .unwrap_or_default();
    ensure!(
        mine.first().is_some_and(|e| e["kind"] == "AGENT_UNRESPONSIVE"),
        "{mine:?}"
    );
    ensure!(
        mine.iter().any(|e| e["kind"] == "AGENT_FAILED" && e["data"]["reason"].as_str().unwrap_or("").contains("unresponsive")),
        "{mine:?}"
    );
    node.gql_ok(
        "mutation($id: ID!) { stopExperiment(id: $id) { id } }",
        json!({ "id": exp }),
    )
    .await?;
    let done = finished(&node, &exp).await?;
    ensure!(done["state"] == "PASSED", "{done}");
    let inj = &done["injections"][0];
    ensure!(
        inj["timeToDetectMs"].as_i64().is_some_and(|d| d < 10_000),
        "the hang was not detected: {inj}"
    );
    ensure!(inj["outcome"] == "RECOVERED", "{inj}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_another_experiment_caused_meanwhile_is_not_unexpected() -> Result<()> {
    let node = node().await?;
    let held = node.spawn_builtin("echo", &["held"]).await?;
    let crashed = node.spawn_builtin("echo", &["crashed"]).await?;
    let hang = start(
        &node,
        json!({ "name": "hang", "durationMs": 120000, "faults": [{ "action": "HANG", "target": { "ids": [held] } }] }),
    )
    .await?;
    let crash = start(
        &node,
        json!({ "name": "crash", "faults": [{ "action": "CRASH", "target": { "ids": [crashed] } }] }),
    )
    .await?;
    ensure!(finished(&node, &text(&crash, "/id")?).await?["state"] == "PASSED");
    let id = text(&hang, "/id")?;
    node.gql_ok(
        "mutation($id: ID!) { stopExperiment(id: $id) { id } }",
        json!({ "id": id }),
    )
    .await?;
    // The crashed agent's restart was the other experiment's doing, and judged there.
    let done = finished(&node, &id).await?;
    ensure!(done["state"] == "PASSED", "{done}");
    ensure!(done["report"]["unexpected"] == json!([]), "{done}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_host_is_seen_unreachable_and_up_again_once_reconnected() -> Result<()> {
    let node = node().await?;
    let started = start(
        &node,
        json!({ "name": "link down", "durationMs": 2000, "seed": 1, "faults": [{ "action": "HOST_DISCONNECT", "target": { "kinds": ["HOST"] } }] }),
    )
    .await?;
    let host = text(&started, "/injections/0/target")?;
    ensure!(gates(&node).await?.len() == 1);
    let done = finished(&node, &text(&started, "/id")?).await?;
    ensure!(done["state"] == "PASSED", "{done}");
    let inj = &done["injections"][0];
    ensure!(inj["outcome"] == "RECOVERED" && inj["timeToDetectMs"].is_i64(), "{inj}");
    ensure!(
        kinds(&inj["observed"]).contains(&"HOST_UNREACHABLE".to_owned()),
        "{inj}"
    );
    ensure!(gates(&node).await?.is_empty());
    let h = node
        .gql_ok("query($id: ID!) { host(id: $id) { state } }", json!({ "id": host }))
        .await?;
    ensure!(h["host"]["state"] == "UP", "{h}");

    // injectFault HOST_DISCONNECT is an experiment too, held until HOST_RECONNECT heals the
    // host and stops it.
    let fault = "mutation($t: ID!, $k: FaultKind!) { injectFault(target: $t, kind: $k) }";
    let said = node.gql_ok(fault, json!({ "t": host, "k": "HOST_DISCONNECT" })).await?;
    let id = experiment_of(&text(&said, "/injectFault")?)?;
    ensure!(gates(&node).await?.len() == 1);
    let healed = node.gql_ok(fault, json!({ "t": host, "k": "HOST_RECONNECT" })).await?;
    let healed = text(&healed, "/injectFault")?;
    ensure!(healed.ends_with(&format!("(experiment {id} stopped)")), "{healed}");
    let done = finished(&node, &id).await?;
    ensure!(done["state"] == "PASSED", "{done}");
    ensure!(done["injections"][0]["action"] == "HOST_DISCONNECT", "{done}");
    ensure!(gates(&node).await?.is_empty());
    // Two injections, two FAULT_INJECTED events, each naming its experiment: the driver
    // wrote one more of its own for each, and one for each heal.
    let ev = node
        .gql_ok(
            "query($s: String!) { events(subject: $s, kinds: [\"FAULT_INJECTED\"]) { data } }",
            json!({ "s": host }),
        )
        .await?;
    let injected = ev["events"].as_array().context("events")?;
    ensure!(
        injected.len() == 2 && injected.iter().all(|e| e["data"]["experiment"].is_string()),
        "{ev}"
    );
    Ok(())
}

/// The experiment an `injectFault` answer names: `… (experiment <id>)`.
pub(super) fn experiment_of(said: &str) -> Result<String> {
    said.rsplit_once("(experiment ")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .map(String::from)
        .ok_or_else(|| anyhow::anyhow!("no experiment in {said:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_on_one_node_reverts_the_faults_armed_on_another_even_without_fault_injection() -> Result<()> {
    // Alpha takes no experiments of its own, yet its admin can stop every fault in the
    // cluster: a kill switch that refused there would leave beta's faults armed.
    let (alpha, beta) = super::cluster::start_pair_of(
        NodeOpts::named("alpha"),
        NodeOpts::named("beta").arg("--fault-injection", "true"),
    )
    .await?;
    let agent = beta.spawn_builtin("echo", &["held"]).await?;
    let started = start(
        &beta,
        json!({ "name": "far hang", "durationMs": 120000, "faults": [{ "action": "HANG", "target": { "ids": [agent] } }] }),
    )
    .await?;
    ensure!(gates(&beta).await?.len() == 1);
    let refused = alpha
        .gql(
            "mutation($input: StartExperimentInput!) { startExperiment(input: $input) { id } }",
            json!({ "input": { "name": "here", "durationMs": 1000,
                               "faults": [{ "action": "HANG", "target": { "ids": [agent] } }] } }),
        )
        .await?;
    expect_code(&refused, "FORBIDDEN")?;
    let halted = alpha.gql_ok("mutation { haltAllFaults }", json!({})).await?;
    ensure!(halted["haltAllFaults"] == 1, "{halted}");
    ensure!(gates(&beta).await?.is_empty(), "beta's hang stayed armed");
    // Said in the logs of both, the one asked and the one whose fault it was.
    ensure!(alpha.logged("haltAllFaults: the faults armed across the cluster were reverted") == 1);
    ensure!(beta.logged("the kill switch (haltAllFaults) reverted this node's faults") == 1);
    let done = finished(&beta, &text(&started, "/id")?).await?;
    ensure!(
        done["state"] == "ABORTED" && done["injections"][0]["outcome"] == "RECOVERED",
        "{done}"
    );
    Ok(())
}

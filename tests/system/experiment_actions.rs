//! Fault experiments beyond one node's tree and its crashes: store faults that refuse writes
//! while armed, a partition of three nodes detected and healed, rounds, delayed and dropped
//! messages, experiments on other nodes' trees (one, or several in parts), and a VM's domain
//! destroyed behind Troupe's back. The other actors' HANG and watchdog are in
//! `experiment_hangs.rs`.

use anyhow::{ensure, Result};
use serde_json::{json, Value};

use super::experiments::{finished, gates, kinds, node, restarts, start};
use super::support::{expect_code, text, Node, NodeOpts, Subscription};

pub(super) async fn stop(node: &Node, id: &str) -> Result<()> {
    node.gql_ok(
        "mutation($id: ID!) { stopExperiment(id: $id) { id } }",
        json!({ "id": id }),
    )
    .await?;
    Ok(())
}

const TOKEN: &str = "mutation($n: String!) { createToken(input: { role: VIEWER, name: $n }) { token { id } } }";

/// The store's faults end as a PASSED report whose detection is the first write refused.
fn check_store_report(done: &Value, node: &str, effect: &str) -> Result<()> {
    ensure!(done["state"] == "PASSED", "{done}");
    let inj = &done["injections"][0];
    ensure!(
        inj["target"] == node && inj["expected"] == json!([{ "id": node, "effect": effect }]),
        "{inj}"
    );
    ensure!(inj["outcome"] == "RECOVERED", "{inj}");
    ensure!(
        inj["timeToDetectMs"].is_i64() && inj["effectiveAt"].is_string() && inj["revertedAt"].is_string(),
        "the first refused write is the detection: {inj}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_faults_refuse_writes_while_armed_and_the_report_times_the_first_refusal() -> Result<()> {
    let node = node().await?;
    let me = node.name.clone();
    let agent = node.spawn_builtin("echo", &["store"]).await?;

    // A full disk: every write that adds data is UNAVAILABLE, the node stays up.
    let full = start(
        &node,
        json!({ "name": "full disk", "durationMs": 120000, "faults": [{ "action": "DISK_FULL", "target": {} }] }),
    )
    .await?;
    let id = text(&full, "/id")?;
    ensure!(gates(&node).await?.len() == 1, "{:?}", gates(&node).await?);
    let refused = node.gql(TOKEN, json!({ "n": "while-full" })).await?;
    expect_code(&refused, "UNAVAILABLE")?;
    ensure!(refused.to_string().contains("no space left"), "{refused}");
    ensure!(node.agent(&agent).await?["state"] == "RUNNING", "reads go on");
    stop(&node, &id).await?;
    let done = finished(&node, &id).await?;
    check_store_report(&done, &me, "WRITES_REFUSED")?;
    ensure!(
        done["report"]["invariants"]
            .as_array()
            .is_some_and(|i| i.iter().all(|i| i["ok"] == true)),
        "{done}"
    );
    ensure!(gates(&node).await?.is_empty(), "the full disk stayed armed");
    node.gql_ok(TOKEN, json!({ "n": "after-full" })).await?;

    // A rejection of one table: tasks are refused, tokens are not.
    let reject = start(
        &node,
        json!({ "name": "no tasks", "durationMs": 120000, "faults": [{ "action": "STORE_REJECT", "target": { "nodes": [me] }, "params": { "tables": ["tasks"] } }] }),
    )
    .await?;
    let id = text(&reject, "/id")?;
    ensure!(
        node.submit_to(&agent, json!({ "during": "reject" })).await.is_err(),
        "a task was taken while its table was rejected"
    );
    node.gql_ok(TOKEN, json!({ "n": "while-rejecting-tasks" })).await?;
    stop(&node, &id).await?;
    check_store_report(&finished(&node, &id).await?, &me, "WRITES_REJECTED")?;
    let task = node.submit_to(&agent, json!({ "after": "reject" })).await?;
    node.wait_task_state(&task, "SUCCEEDED").await?;

    // A slow commit: writes are held, then go through.
    let slow = start(
        &node,
        json!({ "name": "slow disk", "durationMs": 120000, "faults": [{ "action": "STORE_SLOW_COMMIT", "target": {}, "params": { "delayMs": 50 } }] }),
    )
    .await?;
    let id = text(&slow, "/id")?;
    node.gql_ok(TOKEN, json!({ "n": "while-slow" })).await?;
    stop(&node, &id).await?;
    check_store_report(&finished(&node, &id).await?, &me, "COMMITS_SLOWED")?;

    // What is refused before anything is armed.
    let q = "mutation($input: StartExperimentInput!) { startExperiment(input: $input) { id } }";
    for (fault, says) in [
        (json!({ "action": "PARTITION", "target": {} }), "target.nodes"),
        (
            json!({ "action": "PARTITION", "target": { "nodes": [me] } }),
            "far side",
        ),
        (
            json!({ "action": "STORE_SLOW_COMMIT", "target": {}, "params": { "delayMs": 0 } }),
            "delayMs",
        ),
        (
            json!({ "action": "DISK_FULL", "target": {}, "params": { "size": 1 } }),
            "no params",
        ),
        (
            json!({ "action": "DISK_FULL", "target": { "nodes": ["nowhere"] } }),
            "not a member",
        ),
        (
            json!({ "action": "DISK_FULL", "target": { "ids": [agent] } }),
            "select them with `nodes`",
        ),
        (
            json!({ "action": "CRASH", "target": { "ids": [agent] }, "to": { "nodes": [me] } }),
            "neither `to`",
        ),
    ] {
        let refused = node
            .gql(q, json!({ "input": { "name": "bad", "faults": [fault] } }))
            .await?;
        expect_code(&refused, "INVALID_INPUT")?;
        ensure!(refused.to_string().contains(says), "{says}: {refused}");
    }
    ensure!(gates(&node).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_of_three_nodes_is_detected_healed_and_reported() -> Result<()> {
    let opts = |name: &str| NodeOpts::named(name).arg("--fault-injection", "true");
    let nodes = super::replicated::start_cluster(opts("alpha"), vec![opts("beta"), opts("gamma")]).await?;
    for m in ["alpha", "beta", "gamma"] {
        super::failover::wait_member_state(&nodes[0], m, "UP").await?;
    }
    // A dry run names the cut and touches nothing.
    let cut = json!([{ "action": "PARTITION", "target": { "nodes": ["gamma"] } }]);
    let dry = start(&nodes[0], json!({ "name": "dry cut", "dryRun": true, "faults": cut })).await?;
    ensure!(
        dry["injections"][0]["expected"] == json!([{ "id": "gamma", "effect": "CUT_OFF_THEN_UP" }]),
        "{dry}"
    );
    ensure!(gates(&nodes[2]).await?.is_empty());

    let started = start(
        &nodes[0],
        json!({ "name": "cut gamma", "durationMs": 120000, "recoverWithinMs": 60000, "faults": cut }),
    )
    .await?;
    let id = text(&started, "/id")?;
    ensure!(started["injections"][0]["outcome"] == "ARMED", "{started}");
    // Both sides are armed: gamma shows the cut a peer's experiment put on it.
    let far = gates(&nodes[2]).await?;
    ensure!(
        far.len() == 1 && far[0]["experiment"] == id.as_str() && far[0]["action"] == "PARTITION",
        "{far:?}"
    );
    // The majority sees gamma go silent.
    super::failover::wait_member_state(&nodes[0], "gamma", "DOWN").await?;
    stop(&nodes[0], &id).await?;
    let done = finished(&nodes[0], &id).await?;
    ensure!(done["state"] == "PASSED", "{done}");
    let inj = &done["injections"][0];
    ensure!(inj["target"] == "gamma" && inj["outcome"] == "RECOVERED", "{inj}");
    ensure!(
        inj["timeToDetectMs"].is_i64() && inj["timeToRecoverMs"].is_i64(),
        "{inj}"
    );
    let seen = kinds(&inj["observed"]);
    ensure!(
        ["MEMBER_SUSPECT", "MEMBER_DOWN", "NODE_FENCED"]
            .iter()
            .all(|k| seen.contains(&k.to_string())),
        "{seen:?}"
    );
    let peers = done["report"]["invariants"]
        .as_array()
        .and_then(|i| i.iter().find(|i| i["name"] == "PEERS_UP").cloned())
        .unwrap_or_default();
    ensure!(peers["ok"] == true, "{done}");
    for node in &nodes {
        ensure!(gates(node).await?.is_empty(), "{} kept a cut", node.name);
        super::failover::wait_member_state(node, "gamma", "UP").await?;
    }
    // The healed cluster takes a write made on gamma.
    nodes[2].gql_ok(TOKEN, json!({ "n": "after-the-cut" })).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_rounds_pick_and_crash_again_and_the_report_counts_every_round() -> Result<()> {
    let node = Node::start(
        NodeOpts::named("rounds")
            .arg("--fault-injection", "true")
            .arg("--supervisor-backoff-ms", 10),
    )
    .await?;
    let mut agents = Vec::new();
    for _ in 0..2 {
        agents.push(node.spawn_builtin("echo", &["rounds"]).await?);
    }
    let crash = json!([{ "action": "CRASH", "target": { "kinds": ["AGENT"] } }]);
    let started = start(
        &node,
        json!({ "name": "three crashes", "count": 3, "everyMs": 500, "seed": 11, "faults": crash }),
    )
    .await?;
    ensure!(started["injections"].as_array().map(Vec::len) == Some(1), "{started}");
    // Work goes on through the rounds; the report watches every task of the run.
    let mut tasks = Vec::new();
    for n in 0..3 {
        tasks.push(node.submit_to(&agents[n % 2], json!({ "round": n })).await?);
    }
    let done = finished(&node, &text(&started, "/id")?).await?;
    ensure!(done["state"] == "PASSED", "{done}");
    let kept = done["report"]["invariants"]
        .as_array()
        .and_then(|i| i.iter().find(|i| i["name"] == "TASKS_KEPT").cloned())
        .unwrap_or_default();
    ensure!(
        kept["ok"] == true
            && kept["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("3 tasks watched")),
        "{kept}"
    );
    for task in &tasks {
        ensure!(node.task(task).await?["state"].is_string(), "task {task} is gone");
    }
    let report = &done["report"];
    ensure!(report["injected"] == 3 && report["recovered"] == 3, "{report}");
    let injections = done["injections"].as_array().cloned().unwrap_or_default();
    let ids: Vec<&str> = injections.iter().filter_map(|i| i["id"].as_str()).collect();
    ensure!(
        ids.iter().collect::<std::collections::BTreeSet<_>>().len() == 3,
        "{ids:?}"
    );
    let mut total = 0;
    for agent in &agents {
        total += restarts(&node, agent).await?;
    }
    ensure!(total == 3, "one restart per round, {total} seen");

    // The same seed picks the same targets, round by round.
    let again = start(
        &node,
        json!({ "name": "replayed", "count": 3, "everyMs": 500, "seed": 11, "faults": crash }),
    )
    .await?;
    let replayed = finished(&node, &text(&again, "/id")?).await?;
    let picks = |e: &Value| -> Vec<Value> {
        e["injections"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| i["target"].clone())
            .collect()
    };
    ensure!(picks(&replayed) == picks(&done), "{replayed}");

    let q = "mutation($input: StartExperimentInput!) { startExperiment(input: $input) { id } }";
    for (rounds, says) in [
        (json!({ "count": 2 }), "needs everyMs"),
        (json!({ "everyMs": 100 }), "count above 1"),
        (
            json!({ "count": 2, "everyMs": 100, "durationMs": 200 }),
            "longer than everyMs",
        ),
        (json!({ "count": 1000, "everyMs": 1000000 }), "fault_max_duration_ms"),
        (json!({ "count": 0 }), "count"),
    ] {
        let mut input = json!({ "name": "bad rounds", "faults": crash });
        input
            .as_object_mut()
            .unwrap()
            .extend(rounds.as_object().unwrap().clone());
        let refused = node.gql(q, json!({ "input": input })).await?;
        expect_code(&refused, "INVALID_INPUT")?;
        ensure!(refused.to_string().contains(says), "{says}: {refused}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_and_dropped_messages_reach_their_agent_late_or_never_until_reverted() -> Result<()> {
    use super::support::messages::SEND;
    let node = node().await?;
    let agent = node.spawn_builtin("echo", &["inbox"]).await?;
    let target = json!({ "ids": [agent] });

    let delay = start(
        &node,
        json!({ "name": "slow link", "durationMs": 120000, "faults": [{ "action": "MESSAGE_DELAY", "target": target, "params": { "delayMs": 300 } }] }),
    )
    .await?;
    let id = text(&delay, "/id")?;
    ensure!(
        delay["injections"][0]["expected"] == json!([{ "id": agent, "effect": "MESSAGES_DELAYED" }]),
        "{delay}"
    );
    let sent = std::time::Instant::now();
    let answer = node.gql_ok(SEND, json!({ "to": agent, "payload": "late" })).await?;
    ensure!(answer["sendMessage"]["reply"] == "late", "{answer}");
    ensure!(
        sent.elapsed() >= std::time::Duration::from_millis(300),
        "answered before the delay"
    );
    stop(&node, &id).await?;
    let done = finished(&node, &id).await?;
    ensure!(done["state"] == "PASSED", "{done}");
    ensure!(
        done["injections"][0]["timeToDetectMs"].is_i64(),
        "the first delayed message is the detection: {done}"
    );

    let drop = start(
        &node,
        json!({ "name": "lossy link", "durationMs": 120000, "faults": [{ "action": "MESSAGE_DROP", "target": target }] }),
    )
    .await?;
    let id = text(&drop, "/id")?;
    let lost = node
        .gql(SEND, json!({ "to": agent, "payload": "lost", "timeoutMs": 300 }))
        .await?;
    expect_code(&lost, "UNAVAILABLE")?;
    ensure!(lost.to_string().contains("lost in transit"), "{lost}");
    let dead = node.gql_ok("{ messageDeadLetters { to reason } }", json!({})).await?;
    ensure!(
        dead["messageDeadLetters"]
            .as_array()
            .is_some_and(|d| d.iter().any(|m| m["to"] == agent.as_str())),
        "the lost message is kept: {dead}"
    );
    stop(&node, &id).await?;
    let done = finished(&node, &id).await?;
    ensure!(done["state"] == "PASSED", "{done}");
    ensure!(gates(&node).await?.is_empty());
    let answer = node.gql_ok(SEND, json!({ "to": agent, "payload": "again" })).await?;
    ensure!(answer["sendMessage"]["reply"] == "again", "{answer}");

    let q = "mutation($input: StartExperimentInput!) { startExperiment(input: $input) { id } }";
    for (params, says) in [
        (json!({ "probability": 0 }), "probability"),
        (json!({ "delayMs": 10, "jitterMs": 20 }), "jitterMs"),
        (json!({ "from": "x" }), "from"),
    ] {
        let input = json!({ "name": "bad link", "faults": [{ "action": "MESSAGE_DELAY", "target": target, "params": params }] });
        let refused = node.gql(q, json!({ "input": input })).await?;
        expect_code(&refused, "INVALID_INPUT")?;
        ensure!(refused.to_string().contains(says), "{says}: {refused}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experiment_on_another_nodes_tree_runs_there_and_is_followed_from_here() -> Result<()> {
    let (alpha, beta) = super::cluster::start_pair_of(
        NodeOpts::named("alpha").arg("--fault-injection", "true"),
        NodeOpts::named("beta").arg("--fault-injection", "true"),
    )
    .await?;
    let agent = beta.spawn_builtin("echo", &["far"]).await?;
    let started = start(
        &alpha,
        json!({ "name": "far hang", "durationMs": 120000, "faults": [{ "action": "HANG", "target": { "ids": [agent], "nodes": ["beta"] } }] }),
    )
    .await?;
    let id = text(&started, "/id")?;
    ensure!(id.ends_with("@beta"), "it runs on beta: {id}");
    ensure!(started["injections"][0]["supervisor"] == "agents", "{started}");
    ensure!(gates(&beta).await?.len() == 1 && gates(&alpha).await?.is_empty());
    let q = "subscription($id: ID!) { experimentUpdates(id: $id) { state } }";
    let mut updates = Subscription::start(&alpha, q, json!({ "id": id })).await?;
    node_renews(&alpha, &id).await?;
    stop(&alpha, &id).await?;
    let done = finished(&alpha, &id).await?;
    ensure!(done["state"] == "PASSED", "{done}");
    ensure!(gates(&beta).await?.is_empty(), "beta's hang stayed armed");
    let mut states = Vec::new();
    while let Some(u) = updates.next_with_deadline().await? {
        states.push(u["experimentUpdates"]["state"].clone());
    }
    ensure!(
        states.first() == Some(&json!("ACTIVE")) && states.last() == Some(&json!("PASSED")),
        "{states:?}"
    );
    // Picked by id alone, asked on alpha: the fault goes to the node holding its target (it
    // was INVALID_INPUT "its selector matches nothing in the supervision tree of alpha").
    let by_id = start(
        &alpha,
        json!({ "name": "far crash", "faults": [{ "action": "CRASH", "target": { "ids": [agent] } }] }),
    )
    .await?;
    let by_id = text(&by_id, "/id")?;
    ensure!(by_id.ends_with("@beta"), "it runs where the agent is: {by_id}");
    let done = finished(&alpha, &by_id).await?;
    ensure!(done["state"] == "PASSED", "{done}");

    // Faults in both trees: one experiment, started in a part on each node, answered as
    // one from either node.
    let near = alpha.spawn_builtin("echo", &["near"]).await?;
    let both = json!({ "name": "both", "faults": [
        { "action": "CRASH", "target": { "ids": [agent], "nodes": ["beta"] } },
        { "action": "CRASH", "target": { "kinds": ["AGENT"], "nodes": ["alpha"] } }
    ] });
    let started = start(&alpha, both).await?;
    let id = text(&started, "/id")?;
    ensure!(id.ends_with("@alpha"), "{started}");
    let done = finished(&beta, &id).await?;
    ensure!(done["state"] == "PASSED", "{done}");
    let mut hit: Vec<String> = done["injections"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|i| i["target"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    hit.sort();
    let mut want = vec![agent.clone(), near.clone()];
    want.sort();
    ensure!(hit == want, "{done}");
    let report = &done["report"];
    ensure!(
        report["verdict"] == "PASS" && report["injected"] == 2 && report["recovered"] == 2,
        "{report}"
    );
    ensure!(
        report["reason"]
            .as_str()
            .is_some_and(|r| r.contains("on alpha: ") && r.contains("on beta: ")),
        "{report}"
    );
    // A VM's actor is held where its host is driven: the HANG asked of alpha runs on beta.
    let far_vm = super::support::vms::create_vm(
        &alpha,
        json!({ "name": "far", "vcpus": 1, "memoryMiB": 256, "node": "beta" }),
    )
    .await?;
    let far_vm = text(&far_vm, "/id")?;
    let held = start(
        &alpha,
        json!({ "name": "far vm", "durationMs": 120000, "faults": [{ "action": "HANG", "target": { "kinds": ["VM"], "ids": [far_vm] } }] }),
    )
    .await?;
    let id = text(&held, "/id")?;
    ensure!(
        id.ends_with("@beta") && held["injections"][0]["effectiveAt"].is_string(),
        "{held}"
    );
    stop(&alpha, &id).await?;
    ensure!(finished(&alpha, &id).await?["state"] == "PASSED");

    // One fault over two trees is refused: name one node per fault.
    let q = "mutation($input: StartExperimentInput!) { startExperiment(input: $input) { id } }";
    let two = json!({ "name": "two", "faults": [{ "action": "CRASH", "target": { "kinds": ["AGENT"], "nodes": ["alpha", "beta"] } }] });
    let refused = alpha.gql(q, json!({ "input": two })).await?;
    expect_code(&refused, "INVALID_INPUT")?;
    ensure!(refused.to_string().contains("one node per fault"), "{refused}");
    Ok(())
}

async fn node_renews(node: &Node, id: &str) -> Result<()> {
    let renewed = node
        .gql_ok(
            "mutation($id: ID!) { renewExperiment(id: $id) { id state } }",
            json!({ "id": id }),
        )
        .await?;
    ensure!(renewed["renewExperiment"]["state"] == "ACTIVE", "{renewed}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vms_domain_destroyed_behind_troupes_back_recovers_as_its_run_policy_says() -> Result<()> {
    use super::support::vms::{act, create_vm};
    let node = Node::start(
        NodeOpts::named("domains")
            .arg("--fault-injection", "true")
            .arg("--vm-reconcile-ms", 100),
    )
    .await?;
    let always = text(
        &create_vm(
            &node,
            json!({ "name": "always", "vcpus": 1, "memoryMiB": 256, "runPolicy": "ALWAYS" }),
        )
        .await?,
        "/id",
    )?;
    let manual = text(
        &create_vm(
            &node,
            json!({ "name": "manual", "vcpus": 1, "memoryMiB": 256, "runPolicy": "MANUAL" }),
        )
        .await?,
        "/id",
    )?;
    act(&node, "startVm", &manual).await?;
    let q = "mutation($input: StartExperimentInput!) { startExperiment(input: $input) { id } }";

    for (vm, action, effect) in [
        (&always, "DOMAIN_DESTROY", "DOMAIN_RECREATED"),
        (&always, "DOMAIN_UNDEFINE", "DOMAIN_RECREATED"),
        (&manual, "DOMAIN_DESTROY", "LEFT_STOPPED"),
    ] {
        let started = start(
            &node,
            json!({ "name": action, "faults": [{ "action": action, "target": { "ids": [vm] } }] }),
        )
        .await?;
        ensure!(
            started["injections"][0]["expected"] == json!([{ "id": vm, "effect": effect }]),
            "{started}"
        );
        let done = finished(&node, &text(&started, "/id")?).await?;
        ensure!(done["state"] == "PASSED", "{action} of {vm}: {done}");
        ensure!(done["injections"][0]["timeToRecoverMs"].is_i64(), "{done}");
    }
    let vms = node
        .gql_ok(
            "query($id: ID!) { vm(id: $id) { state restarts } }",
            json!({ "id": always }),
        )
        .await?;
    ensure!(vms["vm"]["state"] == "RUNNING" && vms["vm"]["restarts"] == 2, "{vms}");
    // injectFault is a one-fault experiment: its answer names it, and it has its report.
    let fault = "mutation($t: ID!) { injectFault(target: $t, kind: DOMAIN_DESTROY) }";
    let said = node.gql_ok(fault, json!({ "t": always })).await?;
    let id = super::experiments::experiment_of(&text(&said, "/injectFault")?)?;
    let done = finished(&node, &id).await?;
    ensure!(done["state"] == "PASSED", "{done}");
    ensure!(done["injections"][0]["action"] == "DOMAIN_DESTROY", "{done}");
    let nameless =
        json!({ "name": "no ids", "faults": [{ "action": "DOMAIN_DESTROY", "target": { "kinds": ["VM"] } }] });
    let refused = node.gql(q, json!({ "input": nameless })).await?;
    expect_code(&refused, "INVALID_INPUT")?;
    Ok(())
}

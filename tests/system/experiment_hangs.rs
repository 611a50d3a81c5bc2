//! HANG of the actors that are not agents, and the watchdog that notices it: a held
//! supervisor restarted by its own, a held scheduler released, a held services endpoint
//! leaving peers unanswered, a killed cluster link listening again, a VM's actor
//! restarted by its host's driver, and one swarm's hung coordinator restarted alone.

use anyhow::{ensure, Result};
use serde_json::json;

use super::experiment_actions::stop;
use super::experiments::{finished, kinds, start};
use super::support::{expect_code, text, Deadline, Node, NodeOpts, WAIT};

/// Stops a HANG the watchdog has restarted its target over: PASSED, its one injection
/// detected and recovered with `observed` among its events, nothing unexpected.
async fn stopped_and_recovered(node: &Node, id: &str, observed: &[&str]) -> Result<()> {
    stop(node, id).await?;
    let done = finished(node, id).await?;
    ensure!(done["state"] == "PASSED", "{done}");
    let inj = &done["injections"][0];
    ensure!(inj["outcome"] == "RECOVERED" && inj["timeToDetectMs"].is_i64(), "{inj}");
    let seen = kinds(&inj["observed"]);
    ensure!(observed.iter().all(|k| seen.contains(&k.to_string())), "{seen:?}");
    ensure!(done["report"]["unexpected"] == json!([]), "{done}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_restarts_a_hung_supervisor_and_a_held_scheduler_answers_once_released() -> Result<()> {
    let node = Node::start(
        NodeOpts::named("watched")
            .arg("--fault-injection", "true")
            .arg("--watchdog-ms", "SUPERVISOR=200,SERVICE=30000")
            .arg("--watchdog-misses", 3),
    )
    .await?;
    // A supervisor held past three deadlines is reported, killed and restarted by its own.
    let hung = start(
        &node,
        json!({ "name": "hung supervisor", "durationMs": 120000, "faults": [{ "action": "HANG", "target": { "ids": ["swarms"] } }] }),
    )
    .await?;
    let id = text(&hung, "/id")?;
    ensure!(hung["injections"][0]["effectiveAt"].is_string(), "{hung}");
    node.wait_event("SUPERVISOR_UNRESPONSIVE", "swarms").await?;
    let failed = node.wait_event("SUPERVISOR_FAILED", "swarms").await?;
    ensure!(
        failed["data"]["reason"] == "unresponsive: killed by the watchdog",
        "{failed}"
    );
    node.wait_event("SUPERVISOR_RESTARTED", "swarms").await?;
    // Its parent was not blamed, nor anything else restarted.
    stopped_and_recovered(&node, &id, &["SUPERVISOR_UNRESPONSIVE", "SUPERVISOR_RESTARTED"]).await?;
    let core = node.events_after(None, &["SUPERVISOR_UNRESPONSIVE"]).await?;
    ensure!(core.iter().all(|e| e["subject"] == "swarms"), "{core:?}");

    // The scheduler held (its deadline is 30 s: not reported), then released: tasks wait,
    // then run.
    let agent = node.spawn_builtin("echo", &["after"]).await?;
    let held = start(
        &node,
        json!({ "name": "held scheduler", "durationMs": 120000, "faults": [{ "action": "HANG", "target": { "ids": ["scheduler"] } }] }),
    )
    .await?;
    let id = text(&held, "/id")?;
    let task = node.submit_to(&agent, json!("held")).await?;
    stop(&node, &id).await?;
    let done = finished(&node, &id).await?;
    ensure!(done["state"] == "PASSED", "{done}");
    node.wait_task_state(&task, "SUCCEEDED").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_services_endpoint_leaves_peers_unanswered_and_a_killed_cluster_link_listens_again() -> Result<()> {
    let (alpha, beta) = super::cluster::start_pair_of(
        NodeOpts::named("alpha")
            .arg("--fault-injection", "true")
            .arg("--watchdog-ms", "SERVICE=200")
            .arg("--watchdog-misses", 2),
        NodeOpts::named("beta").arg("--fault-injection", "true"),
    )
    .await?;
    let agent = beta.spawn_builtin("echo", &["far"]).await?;
    let swarm = beta
        .gql_ok(
            "mutation { createSwarm(input: { name: \"held\", templates: [] }) { id } }",
            json!({}),
        )
        .await?;
    let swarm = text(&swarm, "/createSwarm/id")?;
    // A checkpoint needs the agent's node (its live actor); `state` is read from alpha's
    // replica.
    let q = "query($id: ID!) { agent(id: $id) { state } }";
    ensure!(alpha.gql_ok(q, json!({ "id": agent })).await?["agent"]["state"] == "RUNNING");
    let checkpoint = "mutation($id: ID!) { checkpointAgent(id: $id, description: \"held\") { id } }";
    // Beta's services held (its watchdog's deadline is 30 s: not restarted): alpha's calls
    // to them go unanswered until the release.
    let held = start(
        &beta,
        json!({ "name": "held services", "durationMs": 120000, "faults": [{ "action": "HANG", "target": { "ids": ["services"] } }] }),
    )
    .await?;
    let id = text(&held, "/id")?;
    ensure!(held["injections"][0]["effectiveAt"].is_string(), "{held}");
    let asked = alpha.gql(checkpoint, json!({ "id": agent })).await?;
    expect_code(&asked, "UNAVAILABLE")?;
    ensure!(asked.to_string().contains("did not answer"), "{asked}");
    // A change sent to beta and not answered may have been made there: the error says so
    // (a memory write is no keyed call: it is sent once).
    let set = "mutation($id: ID!) { setSwarmMemory(id: $id, key: \"k\", value: 1) { version } }";
    let unanswered = alpha.gql(set, json!({ "id": swarm })).await?;
    expect_code(&unanswered, "UNAVAILABLE")?;
    ensure!(
        unanswered.to_string().contains("did not answer")
            && unanswered
                .to_string()
                .contains("it may have acted: read what it would change"),
        "{unanswered}"
    );
    // Reads never ask beta: answered from alpha's replica while beta's services are held.
    ensure!(alpha.gql_ok(q, json!({ "id": agent })).await?["agent"]["state"] == "RUNNING");
    stop(&beta, &id).await?;
    let done = finished(&beta, &id).await?;
    ensure!(done["state"] == "PASSED", "{done}");
    ensure!(alpha.gql_ok(q, json!({ "id": agent })).await?["agent"]["state"] == "RUNNING");

    // Alpha's cluster link held past two 200 ms deadlines: reported, killed and restarted
    // by its supervisor; the new link listens on the same port and beta is back.
    let held = start(
        &alpha,
        json!({ "name": "held link", "durationMs": 120000, "faults": [{ "action": "HANG", "target": { "ids": ["cluster"] } }] }),
    )
    .await?;
    let id = text(&held, "/id")?;
    alpha.wait_event("SERVICE_UNRESPONSIVE", "cluster").await?;
    let failed = alpha.wait_event("SERVICE_FAILED", "cluster").await?;
    ensure!(
        failed["data"]["reason"] == "unresponsive: killed by the watchdog",
        "{failed}"
    );
    alpha.wait_event("SERVICE_RESTARTED", "cluster").await?;
    stopped_and_recovered(&alpha, &id, &["SERVICE_UNRESPONSIVE", "SERVICE_RESTARTED"]).await?;
    super::cluster::both_up(&alpha, &beta).await?;
    ensure!(alpha.gql_ok(q, json!({ "id": agent })).await?["agent"]["state"] == "RUNNING");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_vm_actor_is_reported_and_its_driver_starts_it_again() -> Result<()> {
    use super::support::vms::create_vm;
    let node = Node::start(
        NodeOpts::named("hung-vm")
            .arg("--fault-injection", "true")
            // VMs are watched even when their drivers are not.
            .arg("--watchdog-ms", "VM=200,HOST=0")
            .arg("--watchdog-misses", 2),
    )
    .await?;
    let created = create_vm(
        &node,
        json!({ "name": "held", "vcpus": 1, "memoryMiB": 256, "runPolicy": "ALWAYS" }),
    )
    .await?;
    let vm = text(&created, "/id")?;
    let hung = start(
        &node,
        json!({ "name": "hung vm", "durationMs": 120000, "faults": [{ "action": "HANG", "target": { "kinds": ["VM"], "ids": [vm] } }] }),
    )
    .await?;
    let id = text(&hung, "/id")?;
    let inj = &hung["injections"][0];
    ensure!(
        inj["effectiveAt"].is_string() && inj["expected"] == json!([{ "id": vm, "effect": "HELD" }]),
        "{hung}"
    );
    let reported = node.wait_event("VM_UNRESPONSIVE", &vm).await?;
    ensure!(
        reported["data"]["deadlineMs"] == 200 && reported["data"]["supervisor"].is_string(),
        "{reported}"
    );
    // Its driver kills it past two misses and starts it again from its record: the VM
    // answers while the experiment still holds the old actor's loop.
    let restarted = node.wait_event("VM_ACTOR_RESTARTED", &vm).await?;
    ensure!(
        restarted["data"]["error"] == "unresponsive: killed by the watchdog",
        "{restarted}"
    );
    let seen = node
        .gql_ok("query($id: ID!) { vm(id: $id) { state } }", json!({ "id": vm }))
        .await?;
    ensure!(seen["vm"]["state"] == "RUNNING", "{seen}");
    stopped_and_recovered(&node, &id, &["VM_UNRESPONSIVE", "VM_ACTOR_RESTARTED"]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_swarm_coordinator_is_restarted_and_no_other_swarms_coordinator_is_touched() -> Result<()> {
    use super::support::swarms::create;
    let node = Node::start(
        NodeOpts::named("coordinators")
            .arg("--fault-injection", "true")
            .arg("--watchdog-ms", "SWARM_COORDINATOR=200")
            .arg("--watchdog-misses", 2),
    )
    .await?;
    // Every swarm's coordinator is the child `coordinator` of its own swarm's supervisor.
    let hung = text(&create(&node, json!({ "name": "hung", "maxAgents": 2 })).await?, "/id")?;
    let spared = text(
        &create(&node, json!({ "name": "spared", "maxAgents": 2 })).await?,
        "/id",
    )?;
    node.wait_event("SWARM_COORDINATOR_STARTED", &hung).await?;
    node.wait_event("SWARM_COORDINATOR_STARTED", &spared).await?;
    let held = start(
        &node,
        json!({ "name": "held coordinator", "durationMs": 120000,
                "faults": [{ "action": "HANG", "target": { "ids": ["coordinator"], "under": hung } }] }),
    )
    .await?;
    let id = text(&held, "/id")?;
    let deadline = Deadline::after(WAIT, "the hung coordinator to be restarted");
    loop {
        let starts = node.events_for("SWARM_COORDINATOR_STARTED", &hung).await?;
        if starts.len() >= 2 {
            break;
        }
        deadline.tick(format!("{starts:?}")).await?;
    }
    stop(&node, &id).await?;
    ensure!(finished(&node, &id).await?["state"] == "PASSED");
    // The other swarm's coordinator answered every ping: it was neither killed nor reported,
    // and no answer of its was taken for the hung one's coming back. (The hung swarm's
    // restarted coordinator may itself be slow to answer on a busy machine, and then answer:
    // each report names the supervisor of the one it is about.)
    let starts = node.events_for("SWARM_COORDINATOR_STARTED", &spared).await?;
    ensure!(starts.len() == 1, "the spared coordinator was restarted: {starts:?}");
    let reported = node
        .events_after(
            None,
            &["SWARM_COORDINATOR_UNRESPONSIVE", "SWARM_COORDINATOR_RESPONSIVE"],
        )
        .await?;
    ensure!(
        reported
            .iter()
            .all(|e| e["data"]["supervisor"].as_str().is_some_and(|s| s.contains(&hung))),
        "{reported:?}"
    );
    Ok(())
}

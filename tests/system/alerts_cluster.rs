//! Alerts as the notifier changes hands: in a cluster only the leader notifies, and a node
//! that stops and starts again takes up the alerts that fire.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::alerts::{lines, wait_lines, webhook_config};
use super::support::{text, Deadline, Node, NodeOpts, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_only_the_leader_notifies_and_every_member_lists_the_deliveries() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rules = "[[alert_rules]]\nname = \"given-up\"\nkinds = [\"AGENT_ALERT\"]\nseverity = \"critical\"\nchannels = [\"ops\"]\n";
    let (_hook, _, log, config) = webhook_config(dir.path(), rules).await?;
    let with = |name: &str| NodeOpts::named(name).arg("--config", config.display());
    let (alpha, beta) = super::cluster::start_pair_of(with("alpha"), with("beta")).await?;
    // Two agents given up on, one on each node: every member applies both events.
    for (node, name) in [("alpha", "first"), ("beta", "second")] {
        let exits = json!({
            "name": name,
            "node": node,
            "backend": { "process": { "command": ["/bin/sh", "-c", "exit 3"] } },
            "restartLimit": { "maxRestarts": 1, "windowMs": 600000 },
        });
        let _ = alpha
            .gql(
                "mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }",
                json!({ "input": exits }),
            )
            .await?;
    }
    let seen = wait_lines(&log, "both alerts", |seen| {
        let has = |name: &str| {
            seen.iter().any(|l| {
                l["body"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(&format!("agent {name} "))
            })
        };
        has("first") && has("second")
    })
    .await?;
    // Once each: the follower did not send its own.
    ensure!(seen.len() == 2, "{} requests for two alerts: {seen:?}", seen.len());
    // The deliveries are replicated: the follower lists what the leader sent.
    let q = "{ alertDeliveries { summary outcome } }";
    let deadline = Deadline::after(WAIT, "both members to list both deliveries as DELIVERED");
    loop {
        let (a, b) = (alpha.gql_ok(q, json!({})).await?, beta.gql_ok(q, json!({})).await?);
        let delivered = |v: &Value| {
            v["alertDeliveries"]
                .as_array()
                .is_some_and(|d| d.len() == 2 && d.iter().all(|x| x["outcome"] == "DELIVERED"))
        };
        if delivered(&a) && delivered(&b) {
            break;
        }
        deadline.tick(&format!("{a} {b}")).await?;
    }
    ensure!(lines(&log).len() == 2, "still two requests: {:?}", lines(&log));
    Ok(())
}

/// The webhook bodies `log` holds whose alert is `status` and names `who`.
fn bodies_about(log: &Path, status: &str, who: &str) -> usize {
    lines(log)
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l["body"].as_str()?).ok())
        .filter(|b| b["status"] == status && b["commonLabels"]["subjectName"].as_str() == Some(who))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_that_fired_before_its_node_restarted_is_resolved_after() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rules = "[[alert_rules]]\nname = \"failed\"\nkinds = [\"AGENT_FAILED\"]\nchannels = [\"ops\"]\n";
    let (_hook, _, log, config) = webhook_config(dir.path(), rules).await?;
    let mut node = Node::start(NodeOpts::named("alone").arg("--config", config.display())).await?;
    // Two agents that fail at once while the gate is shut (then they run the shell echo
    // agent): each fires. The second's notice is written after the first's event, so the
    // notifier's cursor is past that event when the node stops.
    let gate = dir.path().join("gate");
    let until_gate = format!(
        "test -e {} || exit 3; exec {}",
        gate.display(),
        super::support::shell_agent().join(" ")
    );
    let mut ids = Vec::new();
    for name in ["first", "second"] {
        let input = json!({
            "name": name,
            "backend": { "process": { "command": ["/bin/sh", "-c", until_gate] } },
            "restartLimit": { "maxRestarts": 0, "windowMs": 600000 },
        });
        // Its process exits before it is ready: the spawn's answer says so.
        let _ = node
            .gql(
                "mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }",
                json!({ "input": input }),
            )
            .await?;
        let listed = node
            .gql_ok(
                "query($name: String) { agents(name: $name) { edges { node { id } } } }",
                json!({ "name": name }),
            )
            .await?;
        let id = text(&listed, "/agents/edges/0/node/id")?;
        node.wait_agent_state(&id, "FAILED").await?;
        let phrase = format!("agent {name}");
        wait_lines(&log, "the agent's firing notice", |_| {
            bodies_about(&log, "firing", &phrase) == 1
        })
        .await?;
        ids.push(id);
    }
    // The node stops and starts again; then each alert's resolving event comes: the first
    // agent is started again (the gate open), the second removed. Each resolved notice
    // names its agent, the removed one too.
    ensure!(node.terminate(WAIT).await?.success(), "the node's stop failed");
    node.restart().await?;
    std::fs::write(&gate, "")?;
    node.gql_ok(
        "mutation($id: ID!) { startAgent(id: $id) { id } }",
        json!({ "id": ids[0] }),
    )
    .await?;
    node.gql_ok(
        "mutation($id: ID!) { removeAgent(id: $id) { id } }",
        json!({ "id": ids[1] }),
    )
    .await?;
    for name in ["first", "second"] {
        let phrase = format!("agent {name}");
        let what = format!("the resolved notice about {phrase}");
        wait_lines(&log, &what, |_| bodies_about(&log, "resolved", &phrase) == 1)
            .await
            .with_context(|| format!("{:?}", lines(&log)))?;
    }
    Ok(())
}

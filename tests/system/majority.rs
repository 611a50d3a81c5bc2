//! A cluster that lost its majority: a member left alone serves reads and refuses writes
//! saying why, a whole cluster stopped at once starts again, and one survivor makes the
//! cluster again (`troupe recover`).

use std::collections::BTreeSet;

use anyhow::{ensure, Context, Result};
use serde_json::json;

use super::replicated::{create_token, events, log_members, start_cluster, token_names, works_on, CLUSTER};
use super::support::{error_code, Deadline, Node, NodeOpts, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_lost_its_majority_is_recovered_from_one_survivor() -> Result<()> {
    let mut nodes = start_cluster(
        NodeOpts::named("alpha"),
        vec![NodeOpts::named("beta"), NodeOpts::named("gamma")],
    )
    .await?;
    create_token(&nodes[1], "before-the-loss").await?;
    works_on(&nodes[0], &create_token(&nodes[0], "made-on-alpha").await?.0).await?;
    nodes[1].kill9().await?;
    nodes[2].kill9().await?;
    // Alone of three, alpha takes no write, and says why.
    let m = "mutation { createToken(input: { role: VIEWER, name: \"refused\" }) { token { id } } }";
    let body = nodes[0].gql(m, json!({})).await?;
    ensure!(error_code(&body).as_deref() == Some("UNAVAILABLE"), "{body}");
    // Killed, not stopped: its latest applies were never made durable in its tables (see
    // docs/semantics.md), and the recovery applies the committed entries its log holds.
    nodes[0].kill9().await?;
    let said = nodes[0].recover().await?;
    ensure!(said.contains("alpha is now a cluster of its own"), "{said}");
    nodes[0].restart().await?;
    let alpha = &nodes[0];
    create_token(alpha, "after-the-recovery").await?;
    let names = token_names(alpha).await?;
    ensure!(
        names.contains("before-the-loss") && names.contains("made-on-alpha") && !names.contains("refused"),
        "{names:?}"
    );
    let view = alpha.gql_ok(CLUSTER, json!({})).await?;
    ensure!(
        view["cluster"]["leader"] == "alpha" && view["cluster"]["members"].as_array().map(Vec::len) == Some(1),
        "{view}"
    );
    let recovered = events(alpha, 0).await?;
    ensure!(recovered.iter().any(|e| e.1 == "CLUSTER_RECOVERED"), "{recovered:?}");
    // A new member joins the recovered cluster and receives its state.
    let join = format!("127.0.0.1:{}", alpha.cluster_port);
    let delta = Node::start(NodeOpts::named("delta").arg("--join", join)).await?;
    let deadline = Deadline::after(WAIT, "delta to hold the recovered state");
    loop {
        let names = token_names(&delta).await?;
        if names.contains("before-the-loss") && names.contains("after-the-recovery") {
            break;
        }
        if deadline.expired() {
            // What each side had applied, for the failure's message.
            let d = delta.gql_ok(CLUSTER, json!({})).await?;
            let a = nodes[0].gql_ok(CLUSTER, json!({})).await?;
            let ev = events(&delta, 0).await?;
            deadline
                .tick(format!("{names:?}; delta: {d}; alpha: {a}; delta's events: {ev:?}"))
                .await?;
        }
        deadline.tick(format!("{names:?}")).await?;
    }
    // beta and gamma come back with their old data dirs, against the instructions: the lost
    // cluster's log and membership (alpha, beta, gamma), whose entries share their indexes
    // and term with the recovered log's. The two are a majority of that membership: they may
    // elect a leader and take a write, sending their log to alpha too. alpha hears none of
    // it: it keeps its leadership, its members and the recovered state. Each is told so by
    // alpha's answer to its beat, and stops saying how to come back: before, each ran on,
    // cut off, telling operators to recover a cluster, and alpha listed both as UP members.
    let before = nodes[0].gql_ok("{ cluster { term } }", json!({})).await?;
    let (alpha_and_beta, gamma) = nodes.split_at_mut(2);
    let (rb, rg) = tokio::join!(alpha_and_beta[1].restart_cut_off(&[]), gamma[0].restart_cut_off(&[]));
    rb?;
    rg?;
    for i in [1, 2] {
        let status = nodes[i].wait_exit(WAIT).await.with_context(|| nodes[i].log_tail())?;
        ensure!(!status.success(), "{status}");
        ensure!(
            nodes[i].logged("was recovered without") > 0
                && nodes[i].logged("joins it afresh, with an empty data dir") > 0,
            "{}",
            nodes[i].log_tail()
        );
    }
    let seen = nodes[0]
        .gql_ok(
            "{ cluster { leader term } node { members { name status } } }",
            json!({}),
        )
        .await?;
    ensure!(
        seen["cluster"]["leader"] == "alpha" && seen["cluster"]["term"] == before["cluster"]["term"],
        "alpha's cluster changed: {seen}"
    );
    let listed: BTreeSet<String> = seen["node"]["members"]
        .as_array()
        .context("node members")?
        .iter()
        .filter_map(|m| m["name"].as_str().map(str::to_owned))
        .collect();
    ensure!(!listed.contains("beta") && !listed.contains("gamma"), "{seen}");
    let names = token_names(&nodes[0]).await?;
    ensure!(names.contains("after-the-recovery"), "{names:?}");
    ensure!(
        log_members(&nodes[0]).await? == BTreeSet::from(["alpha".to_owned(), "delta".to_owned()]),
        "alpha's members changed"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_closes_the_store_as_a_stopping_node_does() -> Result<()> {
    let mut node = Node::start(NodeOpts::named("solo")).await?;
    create_token(&node, "before-the-recovery").await?;
    ensure!(node.terminate(WAIT).await?.success(), "solo did not stop on SIGTERM");
    let said = node.recover().await?;
    ensure!(said.contains("solo is now a cluster of its own"), "{said}");
    node.restart().await?;
    // Left open, the file was taken at the next start for one a killed process had left, and
    // repaired (every page read) after a recovery that went well.
    ensure!(
        node.logged("was not closed when its process ended") == 0,
        "the recovery left the store's file as a killed process leaves it"
    );
    ensure!(token_names(&node).await?.contains("before-the-recovery"));
    Ok(())
}

/// Waits until `node` heard from `member` that its agents for `capability` have `free`
/// slots free, or (`None`) that it offers no room for it at all.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_its_majority_serves_reads_refuses_writes_and_a_whole_cluster_restarts() -> Result<()> {
    let mut nodes = start_cluster(NodeOpts::named("alpha"), vec![NodeOpts::named("beta")]).await?;
    create_token(&nodes[0], "kept").await?;
    let read = "{ tokens { name } }";
    let warned = |body: &serde_json::Value| {
        body["extensions"]["warnings"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w["code"] == "WORK_STOPPED"))
    };
    let body = nodes[0].gql(read, json!({})).await?;
    ensure!(!warned(&body), "a node whose work runs says it stopped: {body}");
    nodes[1].kill9().await?;
    let alpha = &nodes[0];
    ensure!(token_names(alpha).await?.contains("kept"), "alpha lost what it held");
    // Once its lease lapses its work stops, and what it shows of its own work is what was
    // committed (its agents RUNNING): every answer says so.
    let deadline = Deadline::after(WAIT, "alpha's answers to say its work stopped");
    loop {
        let body = alpha.gql(read, json!({})).await?;
        if warned(&body) {
            ensure!(body.to_string().contains("read here as last committed"), "{body}");
            break;
        }
        deadline.tick(body).await?;
    }
    // And so does every result of a subscription (here a replay of the events before).
    let replay = "subscription { events(after: 0) { seq } }";
    let mut sub = super::support::Subscription::start(alpha, replay, json!({})).await?;
    let first = sub.next_payload().await?.context("the replay completed at once")?;
    ensure!(
        warned(&first) && first["data"]["events"]["seq"].is_i64(),
        "a subscription's result does not say the node's work stopped: {first}"
    );
    let m = "mutation { createToken(input: { role: VIEWER, name: \"refused\" }) { token { id } } }";
    let body = alpha.gql(m, json!({})).await?;
    ensure!(error_code(&body).as_deref() == Some("UNAVAILABLE"), "{body}");
    ensure!(
        body.to_string().contains("majority"),
        "the refusal does not say why: {body}"
    );
    // Started again alone, alpha shows the member it has not heard from since at the
    // address that member recorded (it showed none).
    nodes[0].kill9().await?;
    nodes[0].restart_cut_off(&[]).await?;
    let beta = super::failover::member(&nodes[0], "beta").await?;
    ensure!(
        beta["address"] == format!("127.0.0.1:{}", nodes[1].cluster_port) && beta["lastHeartbeat"].is_null(),
        "{beta}"
    );
    // Both stopped, then started together (as after a power cut): they elect and go on.
    nodes[0].kill9().await?;
    let (a, b) = nodes.split_at_mut(1);
    let (ra, rb) = tokio::join!(a[0].restart(), b[0].restart());
    ra?;
    rb?;
    let deadline = Deadline::after(WAIT, "writes to be taken again");
    loop {
        let body = nodes[1].gql(m, json!({})).await?;
        if body["data"]["createToken"]["token"]["id"].is_string() {
            break;
        }
        deadline.tick(body).await?;
    }
    ensure!(
        token_names(&nodes[0]).await?.contains("kept"),
        "the restart lost a write"
    );
    Ok(())
}

//! The kit's own example tests, run by `make test` (through `cargo test --workspace`).

use anyhow::{ensure, Result};
use serde_json::json;
use troupe_testkit::{ApiError, Fault, Node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_worker_restarts_alone_while_work_is_still_served() -> Result<()> {
    let node = Node::start("kit-crash").await?;
    let worker = node.spawn_builtin("echo", &[("role", "worker")]).await?;
    let bystander = node.spawn_builtin("echo", &[("role", "bystander")]).await?;
    let exp = node
        .fault(Fault::new("CRASH").labels(&[("role", "worker")]))
        .recover_within_ms(10_000)
        .run(|node| async move {
            let task = node.submit_to(&bystander, json!("still served")).await?;
            node.wait_task(&task, "SUCCEEDED").await
        })
        .await?;
    exp.assert_passed()?;
    ensure!(exp.report()["unexpected"] == json!([]), "{}", exp.report());
    let hit = &exp.injections()[0];
    ensure!(hit["target"] == worker.as_str(), "{hit}");
    ensure!(
        hit["expected"] == json!([{ "id": worker, "effect": "RESTART" }]),
        "{hit}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hang_is_reverted_when_the_block_ends_and_its_task_then_runs() -> Result<()> {
    let node = Node::start("kit-hang").await?;
    let agent = node.spawn_builtin("echo", &[]).await?;
    let mut task = String::new();
    let exp = node
        .fault(Fault::new("HANG").ids(&[&agent]))
        .lease(std::time::Duration::from_millis(1500))
        .run(|node| {
            let (agent, task) = (&agent, &mut task);
            async move {
                ensure!(node.fault_gates().await?.len() == 1, "the hang is armed");
                *task = node.submit_to(agent, json!("after the hang")).await?;
                Ok(())
            }
        })
        .await?;
    exp.assert_passed()?;
    ensure!(node.fault_gates().await?.is_empty(), "a gate stayed armed");
    let done = node.wait_task(&task, "SUCCEEDED").await?;
    ensure!(done["result"] == "after the hang", "{done}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_inside_the_block_only() -> Result<()> {
    let node = Node::start("kit-disk").await?;
    let token = "mutation($n: String!) { createToken(input: { role: VIEWER, name: $n }) { token { id } } }";
    let exp = node
        .fault(Fault::new("DISK_FULL"))
        .run(|node| async move {
            let refused = node.gql(token, json!({ "n": "while-full" })).await.unwrap_err();
            let api = refused.downcast_ref::<ApiError>().cloned();
            ensure!(api.is_some_and(|e| e.code == "UNAVAILABLE"), "{refused}");
            Ok(())
        })
        .await?;
    exp.assert_passed()?;
    node.gql(token, json!({ "n": "after" })).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_of_three_comes_back_up_and_the_cluster_goes_on() -> Result<()> {
    let mut nodes = Node::cluster(3).await?;
    nodes[2].kill().await?;
    nodes[2].restart().await?;
    for node in &nodes {
        node.wait_members_up(3).await?;
    }
    let agent = nodes[2].spawn_builtin("echo", &[]).await?;
    let task = nodes[0].submit_to(&agent, json!("across")).await?;
    nodes[0].wait_task(&task, "SUCCEEDED").await?;
    Ok(())
}

/// A node whose process ends before it serves (here a flag it does not know) is told at
/// once, with its log, instead of after the whole wait: a port another process took
/// between its pick and the node's bind is told so, and the node starts again elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_exits_before_it_serves_is_told_at_once_with_its_log() -> Result<()> {
    let Err(e) = Node::start_with("n-bad", &["--no-such-flag"]).await else {
        anyhow::bail!("a node with an unknown flag started");
    };
    let said = format!("{e:#}");
    anyhow::ensure!(said.contains("exited") && said.contains("no-such-flag"), "{said}");
    Ok(())
}

//! Two changes of one swarm at once, lined up so that the second comes while the first waits
//! at its write (the store's `hold-swarms` gate): the second decides on what the first
//! wrote, so neither is undone.

use anyhow::{ensure, Result};
use serde_json::json;

use super::support::swarms::{create, members, swarm, wait_swarm};
use super::support::{text, Deadline, Node, NodeOpts, WAIT};

#[tokio::test]
async fn two_adoptions_at_once_both_count() -> Result<()> {
    let node = Node::start(NodeOpts::named("swarm-adopt-race")).await?;
    let first_agent = node.spawn_builtin("echo", &["echo"]).await?;
    let second_agent = node.spawn_builtin("echo", &["echo"]).await?;
    let s = create(&node, json!({ "name": "adopters", "maxAgents": 4 })).await?;
    let id = text(&s, "/id")?;
    // Its first health is written before the gate goes up: the gate holds spec writes only.
    wait_swarm(&node, &id, "HEALTHY", |s| s["status"] == "HEALTHY").await?;
    let adopt = "mutation($id: ID!, $a: ID!) { adoptAgent(id: $id, agentId: $a) { size } }";
    node.inject_fault("hold-swarms")?;
    let (first, second) = tokio::join!(node.gql(adopt, json!({ "id": id, "a": first_agent })), async {
        let deadline = Deadline::after(WAIT, "the first adoption to reach its write");
        while !node.fault_marker("holding-swarms") {
            deadline.tick("not yet").await?;
        }
        // The first has read the size and waits at its write. The second comes now: before
        // the fix it read the same size and wrote the same new one (one adoption lost); with
        // it, it waits for the first and reads what the first wrote. The pause only gives the
        // second request the moment it needs to reach the store (a fraction of it would do);
        // the fixed code passes however long it is.
        let second = node.gql(adopt, json!({ "id": id, "a": second_agent }));
        let release = async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            node.clear_fault("hold-swarms")
        };
        let (second, released) = tokio::join!(second, release);
        released?;
        second
    });
    let (first, second) = (first?, second?);
    ensure!(first["data"]["adoptAgent"]["size"] == 1, "{first}");
    ensure!(second["data"]["adoptAgent"]["size"] == 2, "{second}");
    let s = swarm(&node, &id).await?;
    ensure!(s["size"] == 2 && members(&s).len() == 2, "both adoptions count: {s}");
    let scaled = node.events_for("SWARM_SCALED", &id).await?;
    let steps: Vec<_> = scaled
        .iter()
        .map(|e| (e["data"]["from"].clone(), e["data"]["to"].clone()))
        .collect();
    ensure!(steps == [(json!(0), json!(1)), (json!(1), json!(2))], "{steps:?}");
    Ok(())
}

//! Two requests that read, decide and write one record, lined up so that both read it before
//! either writes (the store's `hold-<table>` gate holds the first at its write): the second is
//! refused, never applied on top of the first.

use anyhow::{ensure, Result};
use serde_json::json;

use super::support::{error_code, text, Deadline, Node, NodeOpts, WAIT};

#[tokio::test]
async fn two_requeues_of_one_dead_task_at_once_admit_it_once() -> Result<()> {
    let node = Node::start(NodeOpts::named("requeue-race")).await?;
    let agent = node.spawn_exec(&["/bin/false"], None).await?;
    let task = node
        .submit(json!({ "agentId": agent, "payload": {}, "maxAttempts": 1 }))
        .await?;
    let id = text(&task, "/id")?;
    node.wait_task_state(&id, "DEAD").await?;
    let requeue = "mutation($id: ID!) { requeueTask(id: $id) { state } }";
    node.inject_fault("hold-task_status")?;
    let (first, second) = tokio::join!(node.gql(requeue, json!({ "id": id })), async {
        let deadline = Deadline::after(WAIT, "the first requeue to reach its write");
        while !node.fault_marker("holding-task_status") {
            deadline.tick("not yet").await?;
        }
        // The first has read DEAD and waits at its write; the second must not wait for it
        // (nor write after it): it is refused at once.
        let second = tokio::time::timeout(WAIT, node.gql(requeue, json!({ "id": id }))).await;
        node.clear_fault("hold-task_status")?;
        anyhow::Ok(second.map_err(|_| anyhow::anyhow!("the second requeue waited for the first"))??)
    });
    let (first, second) = (first?, second?);
    ensure!(first["data"]["requeueTask"]["state"] == "QUEUED", "{first}");
    ensure!(error_code(&second).as_deref() == Some("CONFLICT"), "{second}");
    Ok(())
}

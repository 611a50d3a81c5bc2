//! Swarms through the gateway: their fields, creating and reading them, their tasks, and the
//! pids and supervision subtree of their members (examples/agents/swarm_agent.py).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::{text, Deadline, Node, WAIT};

pub const SWARM_FIELDS: &str = "id name status statusReason topology activeTopology size minAgents maxAgents \
    members { id name state capabilities }";

fn script() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/examples/agents/swarm_agent.py").into()
}

/// A member template: a swarm_agent.py process in `role`, with `capabilities` and env.
pub fn template(role: &str, capabilities: &[&str], count: u32, env: &[(&str, String)]) -> Value {
    let env: Vec<Value> = env.iter().map(|(k, v)| json!({ "name": k, "value": v })).collect();
    json!({
        "count": count,
        "agent": {
            "name": role,
            "capabilities": capabilities,
            "maxConcurrentTasks": 4,
            "backend": { "process": { "command": ["python3", script(), role], "env": env, "heartbeatMs": 60000 } },
        }
    })
}

pub async fn create(node: &Node, input: Value) -> Result<Value> {
    let q = format!("mutation($input: CreateSwarmInput!) {{ createSwarm(input: $input) {{ {SWARM_FIELDS} }} }}");
    Ok(node.gql_ok(&q, json!({ "input": input })).await?["createSwarm"].clone())
}

pub async fn swarm(node: &Node, id: &str) -> Result<Value> {
    let q = format!("query($id: ID!) {{ swarm(id: $id) {{ {SWARM_FIELDS} }} }}");
    Ok(node.gql_ok(&q, json!({ "id": id })).await?["swarm"].clone())
}

pub async fn wait_swarm(node: &Node, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
    let deadline = Deadline::after(WAIT, format!("swarm {id} to be {what}"));
    loop {
        let s = swarm(node, id).await?;
        if pred(&s) {
            return Ok(s);
        }
        deadline.tick(&s).await?;
    }
}

/// Submits a swarm task; its id.
pub async fn submit_task(node: &Node, swarm: &str, input: Value) -> Result<String> {
    let q =
        "mutation($id: ID!, $input: SubmitSwarmTaskInput!) { submitSwarmTask(id: $id, input: $input) { id state } }";
    let task = node.gql_ok(q, json!({ "id": swarm, "input": input })).await?;
    text(&task, "/submitSwarmTask/id")
}

/// Waits for a swarm task's end; the task.
pub async fn wait_task(node: &Node, id: &str) -> Result<Value> {
    let q = "query($id: ID!) { swarmTask(id: $id) { id mode state topology subtasks result error } }";
    let deadline = Deadline::after(WAIT, format!("swarm task {id} to end"));
    loop {
        let t = node.gql_ok(q, json!({ "id": id })).await?["swarmTask"].clone();
        if t["state"] != "RUNNING" {
            return Ok(t);
        }
        deadline.tick(&t).await?;
    }
}

/// Submits a swarm task and waits for its end; the task.
pub async fn run_task(node: &Node, swarm: &str, input: Value) -> Result<Value> {
    let id = submit_task(node, swarm, input).await?;
    wait_task(node, &id).await
}

pub fn members(s: &Value) -> Vec<Value> {
    s["members"].as_array().cloned().unwrap_or_default()
}

/// The pids recorded in a PID_DIR that are still alive (zombies aside).
pub fn alive(dir: &Path) -> Vec<i64> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i64>().ok())
                .filter(|pid| super::proc_stat(*pid).is_some_and(|(state, _)| state != 'Z'))
                .collect()
        })
        .unwrap_or_default()
}

/// The child `id` of a supervision tree node `v`.
pub fn child(v: &Value, id: &str) -> Result<Value> {
    v["supervisor"]["children"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == id).cloned())
        .with_context(|| format!("no {id} in {v}"))
}

pub fn children(v: &Value) -> Vec<&str> {
    v["supervisor"]["children"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["id"].as_str())
        .collect()
}

/// The supervision tree's node at core > swarms > path[0] > path[1] > ..., with its children
/// (and theirs, for a top-level swarm: queries nest at most 12 deep).
pub async fn in_tree(node: &Node, path: &[&str]) -> Result<Value> {
    let mut selection = match path.len() {
        1 => "id kind state supervisor { name strategy children { id kind state supervisor { children { id } } } }",
        _ => "id kind supervisor { children { id } }",
    }
    .to_owned();
    for _ in 0..path.len() + 1 {
        selection = format!("id kind supervisor {{ children {{ {selection} }} }}");
    }
    let q = format!("{{ supervisionTree {{ children {{ {selection} }} }} }}");
    let tree = node.gql_ok(&q, json!({})).await?["supervisionTree"].clone();
    let mut at = tree["children"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == "core").cloned())
        .context("core")?;
    at = child(&at, "swarms")?;
    for id in path {
        at = child(&at, id)?;
    }
    Ok(at)
}

pub fn pid_dir(node: &Node) -> Result<PathBuf> {
    let dir = node.data_dir().join("pids");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

//! Process agents for the tests: the example agents in `examples/agents/`, and what the
//! tests look at of their processes.

use anyhow::Result;
use serde_json::{json, Value};

use super::{text, Deadline, Node, WAIT};

/// The reference Python process agent.
pub fn python_agent() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/agents/process_agent.py");
    vec!["python3".into(), path.into()]
}

/// The POSIX shell process agent (an echo agent).
pub fn shell_agent() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/agents/process_agent.sh");
    vec!["/bin/sh".into(), path.into()]
}

/// The fake OpenAI-compatible server.
pub fn fake_llm() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fake_llm.py").into()
}

/// One process's state letter (R, S, T, Z, ...) and process group, from /proc.
pub fn proc_stat(pid: i64) -> Option<(char, i64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((fields.first()?.chars().next()?, fields.get(2)?.parse().ok()?))
}

/// The live (not zombie) processes of a process group.
pub fn group_members(pgid: i64) -> Vec<i64> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i64>().ok())
        .filter(|pid| proc_stat(*pid).is_some_and(|(state, group)| group == pgid && state != 'Z'))
        .collect()
}

/// Polls until no process of the group is left.
pub async fn wait_group_gone(pgid: i64) -> Result<()> {
    let deadline = Deadline::after(WAIT, format!("process group {pgid} to be gone"));
    loop {
        let left = group_members(pgid);
        if left.is_empty() {
            return Ok(());
        }
        deadline.tick(format!("still there: {left:?}")).await?;
    }
}

impl Node {
    /// A process agent with the Python example and these extra backend fields; its id.
    pub async fn spawn_process(&self, name: &str, backend: Value, extra: Value) -> Result<String> {
        let mut process = json!({ "command": python_agent() });
        merge(&mut process, backend);
        let mut input = json!({ "name": name, "backend": { "process": process } });
        merge(&mut input, extra);
        text(&self.spawn_agent(input).await?, "/id")
    }

    /// Runs one task on an agent and waits for its result.
    pub async fn run_on(&self, agent: &str, payload: Value) -> Result<Value> {
        let id = self.submit_to(agent, payload).await?;
        Ok(self.wait_task_state(&id, "SUCCEEDED").await?["result"].clone())
    }

    /// The pid and process group of a Python process agent, as it reports them.
    pub async fn agent_pid(&self, agent: &str) -> Result<(i64, i64)> {
        let r = self.run_on(agent, json!({ "op": "pid" })).await?;
        Ok((super::int(&r, "/pid")?, super::int(&r, "/pgid")?))
    }

    pub async fn act(&self, mutation: &str, agent: &str) -> Result<Value> {
        let q = format!("mutation($id: ID!) {{ {mutation}(id: $id) {{ id state restarts }} }}");
        Ok(self.gql_ok(&q, json!({ "id": agent })).await?[mutation].clone())
    }
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

/// The fake OpenAI-compatible server, on a loopback port; it exits when dropped (its stdin
/// closes).
pub struct FakeLlm {
    _child: tokio::process::Child,
    pub port: u16,
}

impl FakeLlm {
    pub async fn start(args: &[&str]) -> Result<Self> {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new("python3")
            .arg(fake_llm())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await??
            .ok_or_else(|| anyhow::anyhow!("the fake server printed nothing"))?;
        let port = line
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("unexpected first line {line:?}"))?;
        Ok(Self { _child: child, port })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Spawns "careful", an llm agent of `server` offered Troupe's tools whose every
/// `troupe_memory_*` call waits for an operator, and submits it a task: (agent, task).
pub async fn careful_with_a_task(node: &Node, server: &FakeLlm) -> Result<(String, String)> {
    let input = json!({
        "name": "careful",
        "backend": { "llm": {
            "baseUrl": server.url(), "model": "tiny", "tools": ["troupe_*"],
            "approval": { "tools": ["troupe_memory_*"] },
        } },
    });
    let agent = text(&node.spawn_agent(input).await?, "/id")?;
    let task = node.submit_to(&agent, json!("go")).await?;
    Ok((agent, task))
}

/// The first approval `query` (`{ approvals { … } }`) lists, once there is one.
pub async fn first_approval(node: &Node, query: &str) -> Result<Value> {
    let deadline = Deadline::after(WAIT, "a call to be held");
    loop {
        let pending = node.gql_ok(query, json!({})).await?["approvals"].clone();
        if let Some(first) = pending.as_array().and_then(|a| a.first()) {
            return Ok(first.clone());
        }
        deadline.tick(&pending).await?;
    }
}

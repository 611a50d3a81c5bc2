//! Messages through the gateway: sending one, and a process agent that holds each message
//! until a gate opens, with the waits that go with it.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::json;

use super::{Deadline, Gate, Node, WAIT};

pub const SEND: &str = "mutation($to: ID!, $payload: JSON!, $priority: Priority, $timeoutMs: Int64) { \
    sendMessage(to: $to, payload: $payload, priority: $priority, timeoutMs: $timeoutMs) { id reply } }";

/// A process agent that answers each message with its payload, after waiting for the file
/// named in `payload.gate` (if any), and logs each answered payload.
fn gated_agent(node: &Node) -> Result<(Vec<String>, PathBuf)> {
    let log = node.data_dir().join("answered.log");
    let script = node.data_dir().join("gated_agent.py");
    std::fs::write(
        &script,
        format!(
            r#"import json, os, sys, time
print(json.dumps({{"type": "ready"}}), flush=True)
for line in sys.stdin:
    m = json.loads(line)
    if m.get("type") == "message":
        p = m.get("payload") or {{}}
        open({log:?} + ".received", "a").close()
        g = p.get("gate")
        while g and not os.path.exists(g):
            time.sleep(0.02)
        with open({log:?}, "a") as f:
            f.write(json.dumps(p) + "\n")
        print(json.dumps({{"type": "reply", "id": m["id"], "payload": p}}), flush=True)
    elif m.get("type") == "shutdown":
        break
"#,
            log = log.display().to_string()
        ),
    )?;
    Ok((vec!["python3".into(), script.display().to_string()], log))
}

impl Node {
    /// Spawns the [`gated_agent`], listening on `topics`, and waits until it runs; its id and
    /// the log of the payloads it answered.
    pub async fn start_gated_agent(&self, topics: &[&str]) -> Result<(String, PathBuf)> {
        let (command, log) = gated_agent(self)?;
        let mut input =
            json!({ "name": "gated", "backend": { "process": { "command": command, "heartbeatMs": 60000 } } });
        if !topics.is_empty() {
            input["topics"] = json!(topics);
        }
        let agent = super::text(&self.spawn_agent(input).await?, "/id")?;
        self.wait_agent_state(&agent, "RUNNING").await?;
        Ok((agent, log))
    }

    /// Waits until the [`gated_agent`] has a message in its hands (it marks each one it
    /// receives).
    pub async fn wait_gated_received(&self) -> Result<()> {
        let received = self.data_dir().join("answered.log.received");
        let deadline = Deadline::after(WAIT, "a message to reach the gated agent");
        while !received.exists() {
            deadline.tick("not yet").await?;
        }
        Ok(())
    }

    /// Waits until `n` messages wait in the agent's mailbox.
    pub async fn wait_messages_waiting(&self, agent: &str, n: i64) -> Result<()> {
        let deadline = Deadline::after(WAIT, format!("{n} messages waiting for agent {agent}"));
        loop {
            let a = self
                .gql_ok(
                    "query($id: ID!) { agent(id: $id) { messagesWaiting } }",
                    json!({ "id": agent }),
                )
                .await?;
            if a["agent"]["messagesWaiting"] == n {
                return Ok(());
            }
            deadline.tick(&a).await?;
        }
    }

    /// Publishes two messages on `topic.a` and `topic.b` for the [`gated_agent`] `agent`
    /// subscribed to `topic.#`: `n: 1`, which it holds until the returned gate opens, then
    /// `n: 2`, which waits in its mailbox meanwhile.
    pub async fn hold_one_and_queue_another(&self, agent: &str, topic: &str) -> Result<Gate> {
        let gate = Gate::new()?;
        let publish = "mutation($t: String!, $p: JSON!) { publish(topic: $t, payload: $p) { queued } }";
        let held = json!({ "n": 1, "gate": gate.path().display().to_string() });
        self.gql_ok(publish, json!({ "t": format!("{topic}.a"), "p": held }))
            .await?;
        self.wait_gated_received().await?;
        self.gql_ok(publish, json!({ "t": format!("{topic}.b"), "p": { "n": 2 } }))
            .await?;
        // Unanswered: the one in its hands and the one in its mailbox.
        self.wait_messages_waiting(agent, 2).await?;
        Ok(gate)
    }
}

/// Waits until the [`gated_agent`] whose log is `log` has answered the payloads numbered
/// `ns` (`n`), in any order.
pub async fn wait_answered(log: &Path, ns: &[i64], what: &str) -> Result<()> {
    let deadline = Deadline::after(WAIT, what);
    loop {
        let answered: Vec<i64> = std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["n"].as_i64())
            .collect();
        if ns.iter().all(|n| answered.contains(n)) {
            return Ok(());
        }
        deadline.tick(format!("{answered:?}")).await?;
    }
}

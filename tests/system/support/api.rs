//! The GraphQL operations the tests share: spawn, submit, look up, wait, read events.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::{int, text, Deadline, Node, WAIT};

const TASK_FIELDS: &str = "id state agentId capability attempts failedAttempts maxAttempts priority \
                               payload result error createdAt startedAt finishedAt";
const AGENT_FIELDS: &str = "id name node state owner capabilities runningTasks restarts \
                                tasksSucceeded tasksFailed maxConcurrentTasks createdAt lastError";

impl Node {
    pub async fn spawn_agent(&self, input: Value) -> Result<Value> {
        let q = format!("mutation($input: SpawnAgentInput!) {{ spawnAgent(input: $input) {{ {AGENT_FIELDS} }} }}");
        Ok(self.gql_ok(&q, json!({ "input": input })).await?["spawnAgent"].clone())
    }

    /// A builtin agent (echo, sleep, fail, panic) with these capabilities; its id.
    pub async fn spawn_builtin(&self, kind: &str, caps: &[&str]) -> Result<String> {
        let input = json!({
            "name": format!("{kind}-agent"),
            "backend": { "builtin": { "kind": kind } },
            "capabilities": caps,
        });
        text(&self.spawn_agent(input).await?, "/id")
    }

    /// An exec agent running `command` per task; its id.
    pub async fn spawn_exec(&self, command: &[&str], timeout_ms: Option<i64>) -> Result<String> {
        let input = json!({
            "name": "exec-agent",
            "backend": { "exec": { "command": command, "timeoutMs": timeout_ms } },
        });
        text(&self.spawn_agent(input).await?, "/id")
    }

    /// An exec agent whose every task waits for `gate`, then echoes its payload; its id.
    pub async fn spawn_gated(&self, gate: &super::Gate, caps: &[&str], slots: i64) -> Result<String> {
        let input = json!({
            "name": "gated",
            "backend": { "exec": { "command": ["/bin/sh", "-c", gate.script("cat")] } },
            "capabilities": caps,
            "maxConcurrentTasks": slots,
        });
        text(&self.spawn_agent(input).await?, "/id")
    }

    /// submitTask with a full input object; the returned task.
    pub async fn submit(&self, input: Value) -> Result<Value> {
        let q = format!("mutation($input: SubmitTaskInput!) {{ submitTask(input: $input) {{ {TASK_FIELDS} }} }}");
        Ok(self.gql_ok(&q, json!({ "input": input })).await?["submitTask"].clone())
    }

    /// Submits `payload` to one agent; the task id.
    pub async fn submit_to(&self, agent_id: &str, payload: Value) -> Result<String> {
        text(
            &self.submit(json!({ "agentId": agent_id, "payload": payload })).await?,
            "/id",
        )
    }

    /// The task, or JSON null if the node does not know it.
    pub async fn task(&self, id: &str) -> Result<Value> {
        let q = format!("query($id: ID!) {{ task(id: $id) {{ {TASK_FIELDS} }} }}");
        Ok(self.gql_ok(&q, json!({ "id": id })).await?["task"].clone())
    }

    pub async fn agent(&self, id: &str) -> Result<Value> {
        let q = format!("query($id: ID!) {{ agent(id: $id) {{ {AGENT_FIELDS} }} }}");
        Ok(self.gql_ok(&q, json!({ "id": id })).await?["agent"].clone())
    }

    /// Polls the task until it is in `state`; fails at once if it ends in another one.
    pub async fn wait_task_state(&self, id: &str, state: &str) -> Result<Value> {
        let deadline = Deadline::after(WAIT, format!("task {id} on {} to be {state}", self.name));
        loop {
            let task = self.task(id).await?;
            let now = task["state"].as_str().unwrap_or_default();
            if now == state {
                return Ok(task);
            }
            if [
                "SUCCEEDED",
                "FAILED",
                "CANCELLED",
                "DEAD",
                "EXPIRED",
                "DEPENDENCY_FAILED",
            ]
            .contains(&now)
            {
                bail!("task {id} ended {now} while waiting for {state}: {task}");
            }
            deadline.tick(&task).await?;
        }
    }

    /// Polls the agent until `pred` holds.
    pub async fn wait_agent(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = Deadline::after(WAIT, format!("agent {id} on {} to be {what}", self.name));
        loop {
            let agent = self.agent(id).await?;
            if pred(&agent) {
                return Ok(agent);
            }
            deadline.tick(&agent).await?;
        }
    }

    pub async fn wait_agent_state(&self, id: &str, state: &str) -> Result<Value> {
        self.wait_agent(id, state, |a| a["state"] == state).await
    }

    /// Every event with seq > `after` of these kinds (all kinds if empty), in log order.
    pub async fn events_after(&self, after: Option<i64>, kinds: &[&str]) -> Result<Vec<Value>> {
        let q = "query($after: Int64, $kinds: [String!]) { \
                 events(after: $after, kinds: $kinds, first: 500) { seq kind at subject data } }";
        let kinds = if kinds.is_empty() { Value::Null } else { json!(kinds) };
        let mut all: Vec<Value> = Vec::new();
        let mut cursor = after;
        for _ in 0..1000 {
            let data = self.gql_ok(q, json!({ "after": cursor, "kinds": kinds })).await?;
            let page = data["events"].as_array().context("events is not a list")?.clone();
            let Some(last) = page.last() else {
                return Ok(all);
            };
            cursor = Some(int(last, "/seq")?);
            all.extend(page);
        }
        bail!("events query on {} never returned an empty page", self.name)
    }

    pub async fn events(&self, kinds: &[&str]) -> Result<Vec<Value>> {
        self.events_after(None, kinds).await
    }

    /// Events of one kind about one subject.
    pub async fn events_for(&self, kind: &str, subject: &str) -> Result<Vec<Value>> {
        let all = self.events(&[kind]).await?;
        Ok(all.into_iter().filter(|e| e["subject"] == subject).collect())
    }

    /// The Prometheus text of /metrics (no token needed unless metrics_auth is on).
    pub async fn metrics(&self) -> Result<String> {
        let (status, text) = self.get("/metrics").await?;
        anyhow::ensure!(status == 200, "/metrics answered {status}: {text}");
        Ok(text)
    }

    /// Polls until an event of `kind` about `subject` is in the log; the first such event.
    pub async fn wait_event(&self, kind: &str, subject: &str) -> Result<Value> {
        let deadline = Deadline::after(WAIT, format!("{kind} event for {subject} on {}", self.name));
        loop {
            if let Some(event) = self.events_for(kind, subject).await?.into_iter().next() {
                return Ok(event);
            }
            deadline.tick("no such event yet").await?;
        }
    }
}

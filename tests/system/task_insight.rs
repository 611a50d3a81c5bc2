//! What a task tells of itself while it is not done: why a queued task waits (`waitingFor`)
//! and how far a running one got (`progress`, `TASK_PROGRESS`).

use anyhow::{ensure, Result};
use serde_json::{json, Value};

use super::support::{text, Deadline, Gate, Node, NodeOpts, WAIT};

const SUBMIT: &str = "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id state waitingFor } }";
const TASK: &str = "query($id: ID!) { task(id: $id) { id state waitingFor } }";

/// Polls the task until its `waitingFor` is `want`.
async fn wait_reason(node: &Node, id: &str, want: Option<&str>) -> Result<Value> {
    let deadline = Deadline::after(WAIT, format!("task {id} to wait for {want:?}"));
    loop {
        let task = node.gql_ok(TASK, json!({ "id": id })).await?["task"].clone();
        if task["waitingFor"].as_str() == want {
            return Ok(task);
        }
        deadline.tick(&task).await?;
    }
}

#[tokio::test]
async fn a_queued_task_says_what_it_waits_for_and_stops_saying_it_once_it_runs() -> Result<()> {
    let node = Node::start(NodeOpts::named("waiting")).await?;
    let submitted = node
        .gql_ok(
            SUBMIT,
            json!({ "input": { "capability": "translate", "payload": { "n": 1 } } }),
        )
        .await?["submitTask"]
        .clone();
    let first = text(&submitted, "/id")?;
    ensure!(
        submitted["waitingFor"] == "no agent has capability translate" && submitted["state"] == "QUEUED",
        "the submit answer says why: {submitted}"
    );
    wait_reason(&node, &first, Some("no agent has capability translate")).await?;

    // An agent with one slot takes it; a second task then waits for that slot.
    let gate = Gate::new()?;
    let agent = node.spawn_gated(&gate, &["translate"], 1).await?;
    let running = node.wait_task_state(&first, "RUNNING").await?;
    ensure!(running["state"] == "RUNNING");
    wait_reason(&node, &first, None).await?;
    let second = node
        .gql_ok(
            SUBMIT,
            json!({ "input": { "capability": "translate", "payload": { "n": 2 } } }),
        )
        .await?["submitTask"]
        .clone();
    ensure!(
        second["waitingFor"] == "every agent with capability translate is busy",
        "{second}"
    );
    let second = text(&second, "/id")?;

    // A task aimed at a paused agent says so.
    node.act("pauseAgent", &agent).await?;
    let aimed = node
        .gql_ok(SUBMIT, json!({ "input": { "agentId": agent, "payload": { "n": 3 } } }))
        .await?["submitTask"]
        .clone();
    // By its name ("gated"), not its id.
    ensure!(
        aimed["waitingFor"] == "agent gated takes no tasks now (paused, unhealthy or stopping)",
        "{aimed}"
    );
    wait_reason(
        &node,
        &second,
        Some("every agent with capability translate takes no tasks now (paused, unhealthy or stopping)"),
    )
    .await?;

    node.act("resumeAgent", &agent).await?;
    gate.open()?;
    for id in [first.as_str(), second.as_str(), text(&aimed, "/id")?.as_str()] {
        node.wait_task_state(id, "SUCCEEDED").await?;
        wait_reason(&node, id, None).await?;
    }
    Ok(())
}

/// A process agent that, for each task, reports progress 21 times in a burst (the last:
/// 0.5, "at the gate"), then a report of another attempt, then waits for the gate file
/// (heartbeating) before it answers.
const REPORTER: &str = r#"
import json, os, sys, threading, time
gate = sys.argv[1]
lock = threading.Lock()
def send(m):
    with lock:
        sys.stdout.write(json.dumps(m) + "\n")
        sys.stdout.flush()
def work(t):
    tid, attempt = t["id"], t["attempt"]
    for i in range(20):
        send({"type": "progress", "id": tid, "attempt": attempt, "fraction": i / 100})
    send({"type": "progress", "id": tid, "fraction": 0.5, "note": "at the gate"})
    send({"type": "progress", "id": tid, "attempt": attempt + 7, "fraction": 0.9, "note": "another attempt"})
    while not os.path.exists(gate):
        send({"type": "heartbeat"})
        time.sleep(0.05)
    send({"type": "result", "id": tid, "attempt": attempt, "ok": True, "value": {"done": True}})
send({"type": "ready"})
for line in sys.stdin:
    m = json.loads(line)
    if m.get("type") == "task":
        threading.Thread(target=work, args=(m,), daemon=True).start()
    elif m.get("type") == "shutdown":
        break
"#;

const PROGRESS: &str = "query($id: ID!) { task(id: $id) { state progress { fraction note at } } }";

#[tokio::test]
async fn a_process_agents_progress_shows_on_its_task_and_as_rate_limited_events() -> Result<()> {
    let node = Node::start(NodeOpts::named("progress")).await?;
    let gate = Gate::new()?;
    let gate_path = gate.path().display().to_string();
    let input = json!({
        "name": "reporter",
        "backend": { "process": { "command": ["python3", "-c", REPORTER, gate_path] } },
    });
    let agent = text(&node.spawn_agent(input).await?, "/id")?;
    let task = node.submit_to(&agent, json!({ "n": 1 })).await?;

    // The burst's last report is on the task, although its events are rate-limited.
    let deadline = Deadline::after(WAIT, "the last progress on the task");
    let shown = loop {
        let t = node.gql_ok(PROGRESS, json!({ "id": task })).await?["task"].clone();
        if t["progress"]["note"] == "at the gate" {
            break t;
        }
        deadline.tick(&t).await?;
    };
    ensure!(
        shown["state"] == "RUNNING" && shown["progress"]["fraction"] == 0.5,
        "{shown}"
    );
    let events = node.events_for("TASK_PROGRESS", &task).await?;
    ensure!(
        (2..21).contains(&events.len()),
        "21 reports in a burst give the first event and the last one held back: {events:?}"
    );
    let last = events.last().map(|e| e["data"].clone()).unwrap_or_default();
    ensure!(last["fraction"] == 0.5 && last["note"] == "at the gate", "{events:?}");
    let times: Vec<chrono::DateTime<chrono::Utc>> = events
        .iter()
        .map(|e| serde_json::from_value(e["at"].clone()))
        .collect::<Result<_, _>>()?;
    ensure!(
        times
            .windows(2)
            .all(|w| w[1] - w[0] >= chrono::TimeDelta::milliseconds(450)),
        "at most one event per 500 ms: {times:?}"
    );

    gate.open()?;
    node.wait_task_state(&task, "SUCCEEDED").await?;
    let done = node.gql_ok(PROGRESS, json!({ "id": task })).await?["task"].clone();
    ensure!(
        done["progress"]["note"] == "at the gate",
        "the report of another attempt is ignored and the last one kept: {done}"
    );
    Ok(())
}

//! GraphQL subscriptions over graphql-transport-ws: live events, replay from a cursor,
//! and per-task update streams that complete.

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use super::support::{int, text, Deadline, Gate, Node, NodeOpts, Subscription, WAIT};

const EVENTS: &str = "subscription($after: Int64, $kinds: [String!]) { \
                      events(after: $after, kinds: $kinds) { seq kind subject data } }";

/// Reads events from the subscription until one matches; all read, the match last.
async fn events_until(sub: &mut Subscription, what: &str, done: impl Fn(&Value) -> bool) -> Result<Vec<Value>> {
    let deadline = Deadline::after(WAIT, what);
    let mut seen = Vec::new();
    while !deadline.expired() {
        let data = sub
            .next_with_deadline()
            .await?
            .with_context(|| format!("stream completed before {what}"))?;
        let event = data["events"].clone();
        let matched = done(&event);
        seen.push(event);
        if matched {
            return Ok(seen);
        }
    }
    bail!("no {what} within {WAIT:?}; received {seen:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_subscription_delivers_matching_events_live() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let gate = Gate::new()?;
    let held = node.spawn_gated(&gate, &[], 1).await?;
    let slow = node.submit_to(&held, json!({ "ms": 1500 })).await?;
    node.wait_task_state(&slow, "RUNNING").await?;
    // From the cursor of now: an event committed before the server registered the
    // subscription is still delivered (from the log), so the marker cannot be missed.
    let now = node.gql_ok("{ node { lastSeq } }", json!({})).await?["node"]["lastSeq"].clone();
    let kinds = json!({ "kinds": ["TASK_SUCCEEDED", "AGENT_SPAWNED"], "after": now });
    let mut sub = Subscription::start(&node, EVENTS, kinds).await?;
    // A marker event proves the subscription is live before the gate lets the task end.
    let echo = node.spawn_builtin("echo", &[]).await?;
    events_until(&mut sub, "the marker AGENT_SPAWNED", |e| e["subject"] == echo.as_str()).await?;
    gate.open()?;
    let got = events_until(&mut sub, "TASK_SUCCEEDED of the gated task", |e| {
        e["subject"] == slow.as_str()
    })
    .await?;
    let quick = node.submit_to(&echo, json!({ "x": 1 })).await?;
    let more = events_until(&mut sub, "TASK_SUCCEEDED of the echo task", |e| {
        e["subject"] == quick.as_str()
    })
    .await?;

    for event in got.iter().chain(&more) {
        ensure!(event["kind"] == "TASK_SUCCEEDED", "kinds filter let through: {event}");
    }
    let last = more.last().context("no events")?;
    ensure!(last["data"]["agentId"] == echo.as_str(), "TASK_SUCCEEDED data: {last}");
    ensure!(
        int(last, "/seq")? > int(got.last().context("no events")?, "/seq")?,
        "seq went back"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_subscription_replays_from_cursor_then_continues_live_without_gaps() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let echo = node.spawn_builtin("echo", &[]).await?;
    let first = node.submit_to(&echo, json!("first")).await?;
    node.wait_task_state(&first, "SUCCEEDED").await?;

    let queued = node.wait_event("TASK_QUEUED", &first).await?;
    let from = int(&queued, "/seq")?;
    let logged = node.events_after(Some(from - 1), &[]).await?;
    ensure!(
        logged.first() == Some(&queued),
        "events(after) does not start at the cursor: {logged:?}"
    );

    let mut sub = Subscription::start(&node, EVENTS, json!({ "after": from - 1 })).await?;
    let replayed = events_until(&mut sub, "the replayed TASK_SUCCEEDED", |e| {
        e["kind"] == "TASK_SUCCEEDED" && e["subject"] == first.as_str()
    })
    .await?;
    ensure!(
        replayed[0]["seq"] == from,
        "replay did not start at seq {from}: {replayed:?}"
    );
    ensure!(
        replayed[0]["kind"] == "TASK_QUEUED" && replayed[0]["subject"] == first.as_str(),
        "{replayed:?}"
    );

    let second = node.submit_to(&echo, json!("second")).await?;
    let live = events_until(&mut sub, "the live TASK_SUCCEEDED", |e| {
        e["kind"] == "TASK_SUCCEEDED" && e["subject"] == second.as_str()
    })
    .await?;

    let received: Vec<Value> = replayed.into_iter().chain(live).collect();
    let seqs = received.iter().map(|e| int(e, "/seq")).collect::<Result<Vec<_>>>()?;
    ensure!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq not strictly increasing: {seqs:?}"
    );
    // Exactly the log between the cursor and the last event received: no gap, no repeat.
    let last = *seqs.last().context("nothing received")?;
    let log = node.events_after(Some(from - 1), &[]).await?;
    let log_seqs: Vec<i64> = log
        .iter()
        .filter_map(|e| e["seq"].as_i64())
        .filter(|s| *s <= last)
        .collect();
    ensure!(seqs == log_seqs, "subscription {seqs:?} != log {log_seqs:?}");
    for (got, want) in received.iter().zip(&log) {
        ensure!(
            got["kind"] == want["kind"] && got["subject"] == want["subject"],
            "{got} != {want}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_updates_stream_running_then_succeeded_then_completes() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let (first_gate, second_gate) = (Gate::new()?, Gate::new()?);
    // A process agent that runs one task at a time: the blocker keeps the task under test
    // QUEUED until the first gate opens; the task itself then stays RUNNING until the second.
    let held = node.spawn_process("held", json!({}), json!({})).await?;
    node.submit_to(&held, json!({ "op": "wait_file", "path": first_gate.path() }))
        .await?;
    let id = node
        .submit_to(&held, json!({ "op": "wait_file", "path": second_gate.path() }))
        .await?;

    let q = "subscription($id: ID!) { taskUpdates(id: $id) { id state attempts result } }";
    let mut sub = Subscription::start(&node, q, json!({ "id": id })).await?;
    let first = sub.next_with_deadline().await?.context("no current state")?;
    ensure!(first["taskUpdates"]["state"] == "QUEUED", "{first}");
    first_gate.open()?;
    let mut states = vec!["QUEUED".to_string()];
    let mut last = Value::Null;
    let deadline = Deadline::after(WAIT, "taskUpdates to complete");
    while let Some(data) = sub.next_with_deadline().await? {
        let task = data["taskUpdates"].clone();
        ensure!(task["id"] == id.as_str(), "update for another task: {task}");
        let state = text(&task, "/state")?;
        if state == "RUNNING" {
            second_gate.open()?;
        }
        states.push(state);
        last = task;
        ensure!(!deadline.expired(), "taskUpdates never completed; states {states:?}");
    }
    ensure!(states == ["QUEUED", "RUNNING", "SUCCEEDED"], "states: {states:?}");
    ensure!(
        last["result"] == json!({ "waited": second_gate.path() }),
        "final update: {last}"
    );

    // A finished task: the current (terminal) state, then completion.
    let mut again = Subscription::start(&node, q, json!({ "id": id })).await?;
    let only = again
        .next_with_deadline()
        .await?
        .context("no current state for a finished task")?;
    ensure!(only["taskUpdates"]["state"] == "SUCCEEDED", "current state: {only}");
    ensure!(
        again.next_with_deadline().await?.is_none(),
        "stream of a finished task did not complete"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_older_than_the_kept_log_is_refused_not_silently_skipped() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo").arg("--event-retention", 10)).await?;
    let echo = node.spawn_builtin("echo", &[]).await?;
    for n in 0..10 {
        let id = node.submit_to(&echo, json!({ "n": n })).await?;
        node.wait_task_state(&id, "SUCCEEDED").await?;
    }
    let last = int(&node.gql_ok("{ node { lastSeq } }", json!({})).await?, "/node/lastSeq")?;
    ensure!(last > 30, "expected more than 30 events, lastSeq {last}");

    let q = "query($after: Int64) { events(after: $after) { seq } }";
    let old = node.gql(q, json!({ "after": 0 })).await?;
    ensure!(
        old["errors"][0]["extensions"]["code"] == "INVALID_INPUT",
        "replay from 0 after trimming: {old}"
    );
    let recent = node.gql_ok(q, json!({ "after": last - 3 })).await?;
    let seqs: Vec<i64> = recent["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["seq"].as_i64().unwrap_or(-1))
        .collect();
    ensure!(seqs == vec![last - 2, last - 1, last], "recent events: {seqs:?}");

    let mut sub = Subscription::start(&node, EVENTS, json!({ "after": 0 })).await?;
    let err = sub.next_with_deadline().await.expect_err("a replay from 0 must fail");
    ensure!(err.to_string().contains("INVALID_INPUT"), "subscription error: {err:#}");
    Ok(())
}

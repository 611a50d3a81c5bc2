//! The process agent's pipes: starting the process, writing lines to it, and routing what
//! it says (results, progress, heartbeats, state, logs) to whoever waits for it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::Live;
use crate::agent::backend::limits::{self, signal_group};
use crate::agent::backend::{Link, Outgoing, OutgoingKind, Signal};
use crate::agent::spec::{Limits, ProcessBackend};
use crate::task::Priority;

/// The longest line a process may send (a result is kept in the store).
const MAX_LINE: usize = 4 * 1024 * 1024 + 1024;
/// The most bytes of a progress note kept (it is written with the task's status).
const MAX_NOTE: usize = 1024;

pub(super) struct Started {
    pub child: Child,
    pub live: Arc<Live>,
    /// Resolves when the process says `ready`; fails if it exits first.
    pub ready: oneshot::Receiver<()>,
}

/// Starts the process and the tasks that serve its pipes.
pub(super) fn spawn(
    spec: &ProcessBackend,
    agent: &str,
    (limits, cgroup): (Limits, Option<std::ffi::CString>),
    link: Link,
) -> Result<Started, String> {
    let program = &spec.command[0];
    let mut cmd = limits::command(&spec.command, &spec.env);
    cmd.env("TROUPE_AGENT_ID", agent)
        .env("TROUPE_HEARTBEAT_MS", spec.heartbeat_ms.to_string());
    limits::apply(&mut cmd, limits, cgroup);
    let mut child = cmd.spawn().map_err(|e| limits::spawn_error(program, &e))?;
    let pgid = child.id().ok_or("the process exited before it could be watched")?;
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (lines, mut outbox) = mpsc::unbounded_channel::<String>();
    let live = Arc::new(Live {
        agent: agent.to_owned(),
        pgid,
        lines,
        tasks: Mutex::new(Default::default()),
        requests: Mutex::new(Default::default()),
        seen_ms: AtomicU64::new(0),
        epoch: Instant::now(),
        paused: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
        next_request: AtomicU64::new(1),
    });
    if let Some(mut stdin) = stdin {
        tokio::spawn(async move {
            while let Some(mut line) = outbox.recv().await {
                line.push('\n');
                if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
        });
    }
    if let Some(stderr) = stderr {
        let agent = agent.to_owned();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(%agent, "stderr: {line}");
            }
        });
    }
    let (ready_tx, ready) = oneshot::channel();
    let stdout = stdout.ok_or("the process has no stdout")?;
    tokio::spawn(read(live.clone(), BufReader::new(stdout), ready_tx, link));
    Ok(Started { child, live, ready })
}

/// Reads the process's lines until it closes stdout, then reports the agent lost unless
/// Troupe itself was ending the process.
async fn read(live: Arc<Live>, mut out: impl AsyncBufRead + Unpin, ready: oneshot::Sender<()>, link: Link) {
    let mut ready = Some(ready);
    let mut buf = Vec::new();
    let ended = loop {
        buf.clear();
        match read_line(&mut out, &mut buf).await {
            Ok(0) => break "the process closed its output (exited)".to_string(),
            Ok(_) if buf.len() > MAX_LINE => {
                protocol_error(&live, format!("a line longer than {MAX_LINE} bytes"));
                continue;
            }
            Ok(_) => {}
            Err(e) => break format!("reading the process's output failed: {e}"),
        }
        live.touch();
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim_end();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(text) {
            Ok(line) => route(&live, line, &mut ready, &link),
            Err(e) => protocol_error(&live, format!("not JSON ({e}): {}", excerpt(text))),
        }
    };
    // Whatever waited on the process learns it is gone.
    live.lock_tasks().clear();
    live.lock_requests().clear();
    if !live.stopping.swap(true, Ordering::Relaxed) {
        signal_group(live.pgid, libc::SIGKILL);
        link.signal(Signal::Lost(ended));
    }
}

/// Reads one line, keeping at most `MAX_LINE + 1` bytes of it (the rest is skipped).
async fn read_line(out: &mut (impl AsyncBufRead + Unpin), buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let chunk = out.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(total);
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if buf.len() <= MAX_LINE {
            let room = MAX_LINE + 1 - buf.len();
            buf.extend_from_slice(&chunk[..take.min(room)]);
        }
        out.consume(take);
        total += take;
        if done {
            return Ok(total);
        }
    }
}

pub(super) fn route(live: &Arc<Live>, line: Value, ready: &mut Option<oneshot::Sender<()>>, link: &Link) {
    let id = line.get("id").and_then(Value::as_str);
    match (line.get("type").and_then(Value::as_str), id) {
        (Some(kind @ ("send" | "publish" | "memory" | "team_task")), Some(id)) => outgoing(live, kind, id, &line, link),
        (Some("ready"), _) => {
            if let Some(ready) = ready.take() {
                let _ = ready.send(());
            }
        }
        (Some("heartbeat"), _) => {}
        (Some("result"), Some(id)) => {
            let outcome = match line.get("ok").and_then(Value::as_bool) {
                Some(true) => Ok(line.get("value").cloned().unwrap_or(Value::Null)),
                Some(false) => Err(line
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("the agent reported a failure without a reason")
                    .to_owned()),
                None => return protocol_error(live, "a result without a boolean \"ok\"".into()),
            };
            let attempt = match line.get("attempt") {
                None | Some(Value::Null) => None,
                Some(a) => match a.as_u64() {
                    Some(a) => Some(a),
                    None => return protocol_error(live, "a result whose \"attempt\" is not a whole number".into()),
                },
            };
            let mut tasks = live.lock_tasks();
            match tasks.get(id) {
                // A late result of an earlier attempt must not complete the one running now.
                Some(pending) if attempt.is_some_and(|a| a != u64::from(pending.attempt)) => {
                    tracing::info!(agent = %live.agent, task = %id, attempt = ?attempt, running = pending.attempt,
                        "a result of another attempt than the running one: ignored");
                }
                Some(_) => {
                    if let Some(pending) = tasks.remove(id) {
                        let _ = pending.result.send(outcome);
                    }
                }
                // A result for a task no longer waited on (cancelled, timed out) is dropped.
                None => {}
            }
        }
        (Some("progress"), Some(id)) => {
            let attempt = match line.get("attempt") {
                None | Some(Value::Null) => None,
                Some(a) => match a.as_u64() {
                    Some(a) => Some(a),
                    None => return protocol_error(live, "a progress whose \"attempt\" is not a whole number".into()),
                },
            };
            let running = match live.lock_tasks().get(id) {
                // Progress of an earlier attempt says nothing of the one running now.
                Some(pending) if attempt.is_none_or(|a| a == u64::from(pending.attempt)) => {
                    pending.progress.notify_one();
                    pending.attempt
                }
                _ => return,
            };
            let fraction = line.get("fraction").and_then(Value::as_f64);
            let note = line.get("note").and_then(Value::as_str).map(|n| clip(n, MAX_NOTE));
            tracing::debug!(agent = %live.agent, task = %id, ?fraction, "progress");
            link.signal(Signal::Progress {
                task_id: id.to_owned(),
                attempt: running,
                fraction,
                note,
            });
        }
        (Some("state" | "reply"), Some(id)) => {
            let state = line
                .get("state")
                .or_else(|| line.get("payload"))
                .cloned()
                .unwrap_or(Value::Null);
            if let Some(waiter) = live.lock_requests().remove(id) {
                let _ = waiter.send(state);
            }
        }
        (Some("log"), _) => {
            let message = line.get("message").and_then(Value::as_str).unwrap_or("");
            let agent = &live.agent;
            match line.get("level").and_then(Value::as_str) {
                Some("error") => tracing::error!(%agent, "{message}"),
                Some("warn") => tracing::warn!(%agent, "{message}"),
                Some("debug") => tracing::debug!(%agent, "{message}"),
                _ => tracing::info!(%agent, "{message}"),
            }
        }
        (
            Some(kind @ ("result" | "progress" | "state" | "reply" | "send" | "publish" | "memory" | "team_task")),
            None,
        ) => protocol_error(live, format!("a {kind} line without a string \"id\"")),
        (Some(other), _) => protocol_error(live, format!("unknown type {other:?}")),
        (None, _) => protocol_error(live, "a line without a string \"type\"".into()),
    }
}

/// A message the process sends (`send`: to an agent, answered with `sent`) or publishes
/// (`publish`: on a topic, answered with `published`), or a read or write of its swarm's
/// memory (`memory`, answered with `memory_result`), or work for the sub-team it leads
/// (`team_task`, answered with `team_result` once the team is done).
fn outgoing(live: &Arc<Live>, kind: &str, id: &str, line: &Value, link: &Link) {
    let priority = match line.get("priority").and_then(Value::as_str).unwrap_or("NORMAL") {
        "CRITICAL" => Priority::Critical,
        "HIGH" => Priority::High,
        "LOW" => Priority::Low,
        _ => Priority::Normal,
    };
    let payload = line.get("payload").cloned().unwrap_or(Value::Null);
    let what = match (
        kind,
        line.get("to").and_then(Value::as_str),
        line.get("topic").and_then(Value::as_str),
    ) {
        ("send", Some(to), _) => OutgoingKind::Send {
            to: to.to_owned(),
            payload,
            priority,
            timeout_ms: timeout_ms(line, 30_000, 600_000),
        },
        ("publish", _, Some(topic)) => OutgoingKind::Publish {
            topic: topic.to_owned(),
            payload,
            priority,
        },
        ("memory", _, _) => match crate::swarm::memory::Op::from_line(line) {
            Ok(op) => OutgoingKind::Memory(op),
            Err(e) => return protocol_error(live, e),
        },
        ("team_task", _, _) => match crate::swarm::SwarmTaskMode::from_line(line) {
            Ok(mode) => OutgoingKind::TeamTask {
                mode,
                timeout_ms: timeout_ms(line, 300_000, 3_600_000),
            },
            // Answered, so the leader waiting on it learns why.
            Err(e) => {
                live.send(
                    json!({ "type": "team_result", "id": id, "ok": false, "error": format!("INVALID_INPUT: {e}") })
                        .to_string(),
                );
                return;
            }
        },
        _ => {
            return protocol_error(
                live,
                format!(
                    "a {kind} line without a string \"{}\"",
                    if kind == "send" { "to" } else { "topic" }
                ),
            )
        }
    };
    let (answer, reply) = oneshot::channel();
    link.signal(Signal::Outgoing(Outgoing {
        from: String::new(),
        what,
        answer,
    }));
    let answered = match kind {
        "send" => "sent",
        "publish" => "published",
        "team_task" => "team_result",
        _ => "memory_result",
    };
    let (live, id) = (live.clone(), id.to_owned());
    tokio::spawn(async move {
        let line = match reply.await {
            Ok(Ok(value)) => json!({ "type": answered, "id": id, "ok": true, "value": value }),
            Ok(Err(error)) => json!({ "type": answered, "id": id, "ok": false, "error": error }),
            Err(_) => json!({ "type": answered, "id": id, "ok": false, "error": "the agent stopped" }),
        };
        live.send(line.to_string());
    });
}

/// A line's `timeoutMs`: `default` when absent, within 1 ms and `max`.
fn timeout_ms(line: &Value, default: u64, max: u64) -> u64 {
    line.get("timeoutMs")
        .and_then(Value::as_u64)
        .unwrap_or(default)
        .clamp(1, max)
}

/// Counts and logs a line the process got wrong, and tells the process.
fn protocol_error(live: &Live, why: String) {
    metrics::counter!("troupe_agent_protocol_errors_total", "agent" => live.agent.clone()).increment(1);
    tracing::warn!(agent = %live.agent, "protocol error: {why}");
    live.send(json!({ "type": "error", "message": why }).to_string());
}

fn excerpt(text: &str) -> &str {
    let mut end = text.len().min(120);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn clip(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

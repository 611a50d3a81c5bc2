//! The process agent's pipes: starting the process, writing lines to it, and routing what
//! it says (each a [`Line`] of the agent protocol: results, progress, heartbeats, state,
//! logs, errands) to whoever waits for it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::Live;
use crate::agent::backend::limits::{self, signal_group};
use crate::agent::backend::{Errand, ErrandKind, Link, Signal};
use crate::agent::protocol::{Bad, Line};
use crate::agent::spec::{Limits, ProcessBackend};
use crate::agent::LogBook;

/// The longest line a process may send (a result is kept in the store).
const MAX_LINE: usize = 4 * 1024 * 1024 + 1024;
/// The most bytes of a progress note kept (it is written with the task's status).
const MAX_NOTE: usize = 1024;

pub(super) struct Started {
    pub child: Child,
    pub live: Arc<Live>,
    /// Resolves when the process says `ready`; fails if it exits first.
    pub ready: oneshot::Receiver<()>,
    /// The last lines of its stderr, once the process closed it (it exited).
    pub stderr_tail: Option<tokio::task::JoinHandle<Vec<String>>>,
}

/// The stderr lines a start that failed reports.
const STDERR_TAIL_LINES: usize = 5;

/// Starts the process and the tasks that serve its pipes.
pub(super) fn spawn(
    spec: &ProcessBackend,
    agent: &str,
    (limits, cgroup): (Limits, Option<std::ffi::CString>),
    link: Link,
    logs: LogBook,
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
        logs: logs.clone(),
        pgid,
        lines,
        tasks: Mutex::new(Default::default()),
        requests: Mutex::new(Default::default()),
        seen_ms: AtomicU64::new(0),
        epoch: Instant::now(),
        paused: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
        killed_for: Mutex::new(None),
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
    let stderr_tail = stderr.map(|stderr| {
        let agent = agent.to_owned();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut tail = std::collections::VecDeque::new();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(%agent, "stderr: {line}");
                logs.write(&agent, None, "stderr", &line);
                if tail.len() == STDERR_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            tail.into()
        })
    });
    let (ready_tx, ready) = oneshot::channel();
    let stdout = stdout.ok_or("the process has no stdout")?;
    tokio::spawn(read(live.clone(), BufReader::new(stdout), ready_tx, link));
    Ok(Started {
        child,
        live,
        ready,
        stderr_tail,
    })
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
        match Line::parse(text) {
            Ok(line) => take(&live, line, &mut ready, &link),
            Err(bad) => refuse(&live, bad),
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

/// Takes a line already read as JSON.
#[cfg(test)]
pub(super) fn route(live: &Arc<Live>, line: serde_json::Value, ready: &mut Option<oneshot::Sender<()>>, link: &Link) {
    match Line::from_value(line) {
        Ok(line) => take(live, line, ready, link),
        Err(bad) => refuse(live, bad),
    }
}

/// Does what a line says.
fn take(live: &Arc<Live>, line: Line, ready: &mut Option<oneshot::Sender<()>>, link: &Link) {
    match line {
        Line::Ready => {
            if let Some(ready) = ready.take() {
                let _ = ready.send(());
            }
        }
        Line::Heartbeat => {}
        Line::Result(result) => {
            let (id, attempt) = (result.id.clone(), result.attempt);
            let mut tasks = live.lock_tasks();
            match tasks.get(&id) {
                // A late result of an earlier attempt must not complete the one running now.
                Some(pending) if attempt.is_some_and(|a| a != u64::from(pending.attempt)) => {
                    tracing::info!(agent = %live.agent, task = %id, attempt = ?attempt, running = pending.attempt,
                        "a result of another attempt than the running one: ignored");
                }
                Some(_) => {
                    if let Some(pending) = tasks.remove(&id) {
                        let _ = pending.result.send(result.outcome());
                    }
                }
                // A result for a task no longer waited on (cancelled, timed out) is dropped.
                None => {}
            }
        }
        Line::Progress(progress) => {
            let running = match live.lock_tasks().get(&progress.id) {
                // Progress of an earlier attempt says nothing of the one running now.
                Some(pending) if progress.attempt.is_none_or(|a| a == u64::from(pending.attempt)) => {
                    pending.progress.notify_one();
                    pending.attempt
                }
                _ => return,
            };
            let note = progress.note.as_deref().map(|n| clip(n, MAX_NOTE));
            tracing::debug!(agent = %live.agent, task = %progress.id, fraction = ?progress.fraction, "progress");
            link.signal(Signal::Progress {
                task_id: progress.id,
                attempt: running,
                fraction: progress.fraction,
                note,
                held: false,
            });
        }
        Line::State(answer) | Line::Reply(answer) => {
            let waiter = live.lock_requests().remove(&answer.id);
            if let Some(waiter) = waiter {
                let _ = waiter.send(answer.value());
            }
        }
        Line::Log(log) => {
            let (message, agent) = (&log.message, &live.agent);
            match log.level.as_deref() {
                Some("error") => tracing::error!(%agent, "{message}"),
                Some("warn") => tracing::warn!(%agent, "{message}"),
                Some("debug") => tracing::debug!(%agent, "{message}"),
                _ => tracing::info!(%agent, "{message}"),
            }
            let level = log.level.as_deref().unwrap_or("info");
            live.logs.write(agent, None, "log", &format!("{level}: {message}"));
        }
        Line::Send(send) => errand(live, send.id.clone(), ErrandKind::Send(send), "sent", link),
        Line::Publish(publish) => errand(
            live,
            publish.id.clone(),
            ErrandKind::Publish(publish),
            "published",
            link,
        ),
        Line::Memory(memory) => errand(live, memory.id, ErrandKind::Memory(memory.op), "memory_result", link),
        Line::TeamTask(task) => errand(live, task.id.clone(), ErrandKind::TeamTask(task), "team_result", link),
    }
}

/// A line that could not be taken: a protocol error, or a team task answered as failed.
fn refuse(live: &Live, bad: Bad) {
    match bad {
        Bad::Protocol(why) => protocol_error(live, why),
        // Answered, so the leader waiting on it learns why.
        Bad::TeamTask { id, why } => live.send(
            json!({ "type": "team_result", "id": id, "ok": false, "error": format!("INVALID_INPUT: {why}") })
                .to_string(),
        ),
    }
}

/// Hands an errand of the process (a message to send or publish, a read or write of its
/// swarm's memory, work for the sub-team it leads) to its agent, and answers the process
/// with an `answered` line of the errand's id once it is done.
fn errand(live: &Arc<Live>, id: String, what: ErrandKind, answered: &'static str, link: &Link) {
    let (answer, reply) = oneshot::channel();
    link.signal(Signal::Errand(Errand { what, answer }));
    let live = live.clone();
    tokio::spawn(async move {
        let line = match reply.await {
            Ok(Ok(value)) => json!({ "type": answered, "id": id, "ok": true, "value": value }),
            Ok(Err(error)) => json!({ "type": answered, "id": id, "ok": false, "error": error }),
            Err(_) => json!({ "type": answered, "id": id, "ok": false, "error": "the agent stopped" }),
        };
        live.send(line.to_string());
    });
}

/// Counts and logs a line the process got wrong, and tells the process.
fn protocol_error(live: &Live, why: String) {
    metrics::counter!("troupe_agent_protocol_errors_total", "agent" => live.agent.clone()).increment(1);
    tracing::warn!(agent = %live.agent, "protocol error: {why}");
    live.send(json!({ "type": "error", "message": why }).to_string());
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn clip(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

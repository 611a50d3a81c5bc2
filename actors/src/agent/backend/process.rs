//! The `process` backend: one long-lived process per agent that speaks JSON lines on stdin
//! and stdout (`docs/agent-protocol.md`). Tasks in flight are matched by id; a reader task
//! routes what the process says; a watchdog turns missed heartbeats into UNHEALTHY and then
//! into a kill and a restart. The process exiting is the agent failing. No process of the
//! agent outlives it: every way out kills the whole process group.

mod io;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use super::cgroup::AgentCgroup;
use super::limits::signal_group;
use super::{Backend, Link, Signal};
use crate::agent::ladder::{silence, Silence};
use crate::agent::spec::{Limits, ProcessBackend};
use crate::task::{Assignment, Outcome};

/// How long a `checkpoint` or `restore` may take to be answered (a message has its own).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Process {
    spec: ProcessBackend,
    agent: String,
    limits: Limits,
    live: Option<Arc<Live>>,
    child: Option<tokio::process::Child>,
    cgroup: Option<AgentCgroup>,
    logs: crate::agent::LogBook,
}

/// A task in flight: where its result goes and what wakes its inactivity timer.
struct Pending {
    attempt: u32,
    result: oneshot::Sender<Outcome>,
    progress: Arc<Notify>,
}

/// What the running process shares with the reader, the watchdog and the attempts.
pub(super) struct Live {
    agent: String,
    logs: crate::agent::LogBook,
    pgid: u32,
    lines: mpsc::UnboundedSender<String>,
    tasks: Mutex<HashMap<String, Pending>>,
    requests: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    /// When the process last said anything, in ms since `epoch`.
    seen_ms: AtomicU64,
    epoch: Instant,
    paused: AtomicBool,
    /// Set once Troupe itself ends the process: its exit is then not a failure.
    stopping: AtomicBool,
    /// Why Troupe killed the process, when it did (hung): the attempts it was running end
    /// with this, not with the bare exit the kill causes.
    killed_for: Mutex<Option<String>>,
    next_request: AtomicU64,
}

impl Live {
    fn touch(&self) {
        self.seen_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.seen_ms.load(Ordering::Relaxed)))
    }

    fn send(&self, line: String) {
        let _ = self.lines.send(line);
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_requests(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Value>>> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a request the process answers with a `state` (or `reply`) line; waits for that
    /// answer at most `timeout`.
    async fn request(&self, mut message: Value, timeout: Duration) -> Result<Value, String> {
        let id = format!("r{}", self.next_request.fetch_add(1, Ordering::Relaxed));
        let kind = message["type"].as_str().unwrap_or("request").to_owned();
        message["id"] = Value::String(id.clone());
        let (tx, rx) = oneshot::channel();
        self.lock_requests().insert(id.clone(), tx);
        self.send(message.to_string());
        let answer = tokio::time::timeout(timeout, rx).await;
        self.lock_requests().remove(&id);
        match answer {
            Ok(Ok(state)) => Ok(state),
            Ok(Err(_)) => Err(format!("the process ended before answering {kind}")),
            Err(_) => Err(format!(
                "the process did not answer {kind} within {} ms",
                timeout.as_millis()
            )),
        }
    }
}

impl Process {
    pub fn new(spec: ProcessBackend, agent: String, limits: Limits) -> Self {
        Self {
            spec,
            agent,
            limits,
            live: None,
            child: None,
            cgroup: None,
            logs: Default::default(),
        }
    }

    /// Keeps the process's stderr lines and its `log` lines in `logs`.
    pub fn logging(mut self, logs: crate::agent::LogBook) -> Self {
        self.logs = logs;
        self
    }

    fn live(&self) -> Result<&Arc<Live>, String> {
        self.live
            .as_ref()
            .ok_or_else(|| "the process is not running".to_string())
    }
}

impl Backend for Process {
    fn start(&mut self, link: Link) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.cgroup = AgentCgroup::create(&self.agent, &self.limits);
            let cgroup = self.cgroup.as_ref().map(AgentCgroup::procs);
            let started = io::spawn(
                &self.spec,
                &self.agent,
                (self.limits, cgroup),
                link.clone(),
                self.logs.clone(),
            )?;
            let (live, limit) = (started.live, Duration::from_millis(self.spec.ready_timeout_ms));
            self.child = Some(started.child);
            self.live = Some(live.clone());
            match tokio::time::timeout(limit, started.ready).await {
                Ok(Ok(())) => {
                    tokio::spawn(watchdog(live, self.spec.clone(), link));
                    Ok(())
                }
                Ok(Err(_)) => {
                    // What it said on its way out, once its stderr is closed (briefly: a
                    // child it left may hold the pipe).
                    let tail = match started.stderr_tail {
                        Some(tail) => tokio::time::timeout(Duration::from_secs(1), tail)
                            .await
                            .ok()
                            .and_then(Result::ok)
                            .unwrap_or_default(),
                        None => Vec::new(),
                    };
                    Err(match tail.is_empty() {
                        true => "the process exited before it said ready".into(),
                        false => format!(
                            "the process exited before it said ready; its stderr ended with: {}",
                            tail.join(" | ")
                        ),
                    })
                }
                Err(_) => Err(format!("the process did not say ready within {} ms", limit.as_millis())),
            }
        })
    }

    fn run(&mut self, a: Assignment) -> BoxFuture<'static, Outcome> {
        let live = self.live.clone();
        let limit = a.timeout_ms.or(self.spec.timeout_ms).map(Duration::from_millis);
        Box::pin(async move {
            let live = live.ok_or("the process is not running")?;
            let (tx, mut rx) = oneshot::channel();
            let progress = Arc::new(Notify::new());
            live.lock_tasks().insert(
                a.task_id.clone(),
                Pending {
                    attempt: a.attempt,
                    result: tx,
                    progress: progress.clone(),
                },
            );
            // The payload last: simple agents may take everything after it as the payload.
            live.send(format!(
                "{{\"type\":\"task\",\"id\":{},\"attempt\":{},\"payload\":{}}}",
                Value::String(a.task_id.clone()),
                a.attempt,
                a.payload
            ));
            // However the attempt ends early (timeout, cancel, agent gone), the process is
            // told to drop it.
            let _cancel = CancelOnDrop {
                live: live.clone(),
                task: a.task_id.clone(),
                attempt: a.attempt,
            };
            loop {
                let idle = async {
                    match limit {
                        Some(limit) => tokio::time::sleep(limit).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    outcome = &mut rx => {
                        return outcome.unwrap_or_else(|_| {
                            let killed = live.killed_for.lock().unwrap_or_else(|p| p.into_inner()).clone();
                            Err(killed.unwrap_or_else(|| "the process ended while running the task".into()))
                        });
                    }
                    _ = progress.notified() => continue,
                    _ = idle => {
                        let ms = limit.map_or(0, |l| l.as_millis());
                        return Err(format!("no result or progress for {ms} ms: timed out"));
                    }
                }
            }
        })
    }

    fn own_timeouts(&self) -> bool {
        true
    }

    fn message(
        &mut self,
        from: Option<String>,
        payload: Value,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Value, String>> {
        let live = self.live().cloned();
        Box::pin(async move {
            live?
                .request(json!({ "type": "message", "from": from, "payload": payload }), timeout)
                .await
        })
    }

    fn checkpoint(&mut self) -> BoxFuture<'_, Result<Value, String>> {
        Box::pin(async move {
            self.live()?
                .request(json!({ "type": "checkpoint" }), REQUEST_TIMEOUT)
                .await
        })
    }

    fn restore(&mut self, state: Value) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.live()?
                .request(json!({ "type": "restore", "state": state }), REQUEST_TIMEOUT)
                .await
                .map(|_| ())
        })
    }

    fn pause(&mut self, paused: bool) {
        if let Some(live) = &self.live {
            live.paused.store(paused, Ordering::Relaxed);
            if !paused {
                live.touch();
            }
        }
    }

    fn silent_for(&self) -> Option<Duration> {
        self.live.as_ref().map(|l| l.silent_for())
    }

    fn process_groups(&self) -> Vec<u32> {
        self.live.as_ref().map(|l| vec![l.pgid]).unwrap_or_default()
    }

    fn stop(&mut self, grace: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(live) = self.live.take() else { return };
            live.stopping.store(true, Ordering::Relaxed);
            // A suspended process cannot read its shutdown.
            signal_group(live.pgid, libc::SIGCONT);
            live.send(json!({ "type": "shutdown" }).to_string());
            if let Some(mut child) = self.child.take() {
                if tokio::time::timeout(grace, child.wait()).await.is_err() {
                    tracing::info!(agent = %self.agent, "the process did not exit within its grace period: killed");
                }
                signal_group(live.pgid, libc::SIGKILL);
                let _ = child.wait().await;
            }
        })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // The agent died without stopping its backend (a crash): nothing of it may live on.
        if let Some(live) = &self.live {
            live.stopping.store(true, Ordering::Relaxed);
            signal_group(live.pgid, libc::SIGKILL);
        }
    }
}

struct CancelOnDrop {
    live: Arc<Live>,
    task: String,
    attempt: u32,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        // Only this attempt: a later attempt of the same task may already wait under its id.
        let mut tasks = self.live.lock_tasks();
        let mine = tasks.get(&self.task).is_some_and(|p| p.attempt == self.attempt);
        if mine && tasks.remove(&self.task).is_some() {
            drop(tasks);
            self.live.send(json!({ "type": "cancel", "id": self.task }).to_string());
        }
    }
}

/// Watches for signs of life: UNHEALTHY after one and a half intervals of silence, hung
/// (killed, the agent lost) after `missed` intervals.
///
/// A tick that comes over an interval late says this node did not run (it was stopped, as
/// by SIGSTOP, or starved): the process's heartbeats of that time wait unread in its pipe,
/// so its silence is counted from then. Counted from its last line read, a healthy process
/// of a node thawed after its missed intervals was killed as hung at once.
async fn watchdog(live: Arc<Live>, spec: ProcessBackend, link: Link) {
    let interval = Duration::from_millis(spec.heartbeat_ms);
    let mut unhealthy = false;
    let mut tick = tokio::time::interval((interval / 4).max(Duration::from_millis(5)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    let mut judged_from = last;
    loop {
        tick.tick().await;
        let now = Instant::now();
        if now.duration_since(last) > interval {
            tracing::debug!(agent = %live.agent, late_ms = now.duration_since(last).as_millis() as u64,
                "the node did not run for over a heartbeat interval: the process's silence counts from now");
            judged_from = now;
        }
        last = now;
        if live.stopping.load(Ordering::Relaxed) {
            return;
        }
        if live.paused.load(Ordering::Relaxed) {
            continue;
        }
        let silent = live.silent_for().min(now.duration_since(judged_from));
        let verdict = silence(silent, interval, spec.missed_heartbeats);
        if verdict == Silence::Hung {
            let why = format!(
                "no heartbeat for {} ms ({} intervals of {} ms): hung, killed",
                silent.as_millis(),
                spec.missed_heartbeats,
                spec.heartbeat_ms
            );
            live.stopping.store(true, Ordering::Relaxed);
            // Before the kill: the attempts its exit ends say why it was killed.
            *live.killed_for.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
            signal_group(live.pgid, libc::SIGKILL);
            link.signal(Signal::Lost(why));
            return;
        }
        let late = verdict == Silence::Late;
        if late != unhealthy {
            unhealthy = late;
            link.signal(if late {
                Signal::Unhealthy(format!("no heartbeat for {} ms", silent.as_millis()))
            } else {
                Signal::Healthy
            });
        }
    }
}

#[cfg(test)]
mod tests;

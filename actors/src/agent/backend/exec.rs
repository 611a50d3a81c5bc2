//! The `exec` backend: one process per task. The payload goes to stdin as JSON, stdout is the
//! result. The process leads its own process group and starts with a clean environment: what
//! its spec sets, `PATH`, `HOME` and `LANG`, and the `TROUPE_TASK_*` variables, never the
//! node's own secrets.
//!
//! When the leader exits, its group is killed before the leader is reaped: the zombie keeps
//! the group id reserved, so the signal cannot reach an unrelated group that reused the id.
//! An attempt that ends any other way (timeout, cancel, agent gone) kills the group too, so
//! nothing a task started outlives it.

use std::collections::HashSet;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::cgroup::AgentCgroup;
use super::limits;
use super::{Backend, Link};
use crate::agent::logs::{self, Lines, LogBook};
use crate::agent::spec::{ExecBackend, Limits};
use crate::task::{Assignment, Outcome};

/// How much of stderr a failure reports.
const STDERR_TAIL: usize = 2048;
/// The most stdout an attempt may produce: it becomes the task's result, kept in the store.
const MAX_STDOUT: usize = 4 * 1024 * 1024;

pub struct Exec {
    spec: ExecBackend,
    agent: String,
    limits: Limits,
    groups: Groups,
    cgroup: Option<AgentCgroup>,
    logs: LogBook,
}

impl Exec {
    pub fn new(spec: ExecBackend, agent: String, limits: Limits) -> Self {
        Self {
            spec,
            agent,
            limits,
            groups: Groups::default(),
            cgroup: None,
            logs: LogBook::default(),
        }
    }

    /// Keeps what its tasks write to stdout and stderr in `logs`.
    pub fn logging(mut self, logs: LogBook) -> Self {
        self.logs = logs;
        self
    }
}

/// The process groups of the attempts running now.
#[derive(Clone, Default)]
pub struct Groups(Arc<Mutex<HashSet<u32>>>);

impl Groups {
    fn set(&self, pgid: u32, running: bool) {
        let mut groups = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if running {
            groups.insert(pgid);
        } else {
            groups.remove(&pgid);
        }
    }

    fn list(&self) -> Vec<u32> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }
}

impl Backend for Exec {
    fn start(&mut self, _link: Link) -> BoxFuture<'_, Result<(), String>> {
        self.cgroup = AgentCgroup::create(&self.agent, &self.limits);
        Box::pin(async { Ok(()) })
    }

    fn run(&mut self, a: Assignment) -> BoxFuture<'static, Outcome> {
        let (spec, agent, limits) = (self.spec.clone(), self.agent.clone(), self.limits);
        let (groups, logs) = (self.groups.clone(), self.logs.clone());
        let cgroup = self.cgroup.as_ref().map(AgentCgroup::procs);
        Box::pin(async move {
            let ctx = ExecContext {
                agent_id: &agent,
                task_id: &a.task_id,
                attempt: a.attempt,
                limits,
                groups,
                cgroup,
                logs,
            };
            run(&spec, ctx, &a.payload).await
        })
    }

    fn default_timeout_ms(&self) -> Option<u64> {
        self.spec.timeout_ms
    }

    fn process_groups(&self) -> Vec<u32> {
        self.groups.list()
    }
}

pub struct ExecContext<'a> {
    pub agent_id: &'a str,
    pub task_id: &'a str,
    pub attempt: u32,
    pub limits: Limits,
    pub groups: Groups,
    /// The agent's `cgroup.procs`, when it has a cgroup.
    pub cgroup: Option<std::ffi::CString>,
    /// Where the lines the process writes are kept.
    pub logs: LogBook,
}

pub async fn run(backend: &ExecBackend, ctx: ExecContext<'_>, payload: &Value) -> Outcome {
    let program = &backend.command[0];
    let mut cmd = limits::command(&backend.command, &backend.env);
    // Set last, so the spec's env cannot change them.
    cmd.env("TROUPE_TASK_ID", ctx.task_id)
        .env("TROUPE_TASK_ATTEMPT", ctx.attempt.to_string())
        .env("TROUPE_ATTEMPT", ctx.attempt.to_string())
        .env("TROUPE_AGENT_ID", ctx.agent_id);
    limits::apply(&mut cmd, ctx.limits, ctx.cgroup);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {program:?}: {e}"))?;
    let pid = child.id().ok_or("the child exited before it could be watched")?;
    let mut group = GroupKill(Some(pid), ctx.groups.clone());
    ctx.groups.set(pid, true);
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let input = payload.to_string();
    let (logs, agent, task) = (ctx.logs.clone(), ctx.agent_id.to_owned(), ctx.task_id.to_owned());
    let feed = async move {
        if let Some(mut stdin) = stdin {
            // A process that exits without reading its input is not an error here.
            let _ = stdin.write_all(input.as_bytes()).await;
        }
        Ok::<(), String>(())
    };
    let read_stdout = async move {
        let mut out = Vec::new();
        if let Some(stdout) = stdout {
            stdout
                .take(MAX_STDOUT as u64 + 1)
                .read_to_end(&mut out)
                .await
                .map_err(|e| format!("reading stdout failed: {e}"))?;
        }
        if out.len() > MAX_STDOUT {
            // Returning early drops the group guard: the group is killed.
            return Err(format!("stdout exceeded {MAX_STDOUT} bytes"));
        }
        Ok(out)
    };
    let (stderr_logs, stderr_agent, stderr_task) = (logs.clone(), agent.clone(), task.clone());
    let read_stderr = async move {
        let mut tail = Vec::new();
        let mut lines = Lines::default();
        if let Some(mut stderr) = stderr {
            let mut chunk = [0u8; 8192];
            loop {
                match stderr.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        lines.feed(&chunk[..n], |line| {
                            stderr_logs.write(&stderr_agent, Some(&stderr_task), "stderr", line)
                        });
                        tail.extend_from_slice(&chunk[..n]);
                        if tail.len() > 2 * STDERR_TAIL {
                            tail.drain(..tail.len() - STDERR_TAIL);
                        }
                    }
                }
            }
        }
        lines.finish(|line| stderr_logs.write(&stderr_agent, Some(&stderr_task), "stderr", line));
        Ok(tail)
    };
    // The leader's exit, not yet reaped; then whatever is left of its group goes, which
    // also closes pipes a background child still held.
    let exited = async {
        wait_exited(pid)
            .await
            .map_err(|e| format!("waiting for {program:?} failed: {e}"))?;
        kill_group(pid);
        Ok(())
    };
    let (_, stdout, stderr, ()) = tokio::try_join!(feed, read_stdout, read_stderr, exited)?;
    // Reaping and disarming the guard happen together, with no await between them.
    let status = match child.try_wait() {
        Ok(Some(status)) => {
            if let Some(pid) = group.0.take() {
                group.1.set(pid, false);
            }
            status
        }
        Ok(None) => return Err(format!("{program:?} was reported exited but is still running")),
        Err(e) => return Err(format!("waiting for {program:?} failed: {e}")),
    };
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        let tail = tail(stderr.trim_end(), STDERR_TAIL);
        let how = match status.code() {
            Some(code) => format!("exit code {code}"),
            None => "killed by a signal".to_string(),
        };
        return Err(if tail.is_empty() { how } else { format!("{how}: {tail}") });
    }
    let stdout = String::from_utf8_lossy(&stdout);
    // The result's lines too (the book keeps a task's first lines only).
    for line in stdout.lines().take(logs::MAX_PER_TASK as usize + 1) {
        logs.write(&agent, Some(&task), "stdout", line);
    }
    let text = stdout.strip_suffix('\n').unwrap_or(&stdout);
    Ok(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string())))
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Kills the process group of a leader not yet reaped when dropped (an attempt that ends
/// early); disarmed once the leader is reaped.
struct GroupKill(Option<u32>, Groups);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            kill_group(pid);
            self.1.set(pid, false);
        }
    }
}

fn kill_group(pid: u32) {
    limits::signal_group(pid, libc::SIGKILL);
}

/// Resolves once the process has exited, without reaping it.
#[allow(unsafe_code)]
async fn wait_exited(pid: u32) -> std::io::Result<()> {
    match pidfd_open(pid) {
        Ok(fd) => {
            // SAFETY: the OwnedFd moves into the AsyncFd and stays open, the same descriptor,
            // for the AsyncFd's whole life.
            let fd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                .map_err(std::io::Error::from)?;
            // A pidfd turns readable when its process exits.
            let _ready = fd.readable().await?;
            Ok(())
        }
        // Kernels before 5.3 have no pidfd: wait on a blocking thread instead.
        Err(_) => tokio::task::spawn_blocking(move || wait_no_reap(pid))
            .await
            .map_err(std::io::Error::other)?,
    }
}

#[allow(unsafe_code)]
fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just returned to us and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[allow(unsafe_code)]
fn wait_no_reap(pid: u32) -> std::io::Result<()> {
    // SAFETY: waitid writes only into the siginfo we pass; WNOWAIT leaves the child unreaped.
    let rc = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests;

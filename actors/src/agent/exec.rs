//! The `exec` backend: one process per task. The payload goes to stdin as JSON, stdout is the
//! result. The process leads its own process group, and the whole group is killed when the
//! attempt ends for any reason (done, timed out, cancelled, agent gone), so nothing it
//! started outlives the task.

use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::spec::ExecBackend;
use crate::task::Outcome;

/// How much of stderr a failure reports.
const STDERR_TAIL: usize = 2048;
/// The most stdout an attempt may produce: it becomes the task's result, kept in the store.
const MAX_STDOUT: usize = 4 * 1024 * 1024;

pub struct ExecContext<'a> {
    pub agent_id: &'a str,
    pub task_id: &'a str,
    pub attempt: u32,
}

pub async fn run(backend: &ExecBackend, ctx: ExecContext<'_>, payload: &Value) -> Outcome {
    let program = &backend.command[0];
    let mut cmd = Command::new(program);
    cmd.args(&backend.command[1..])
        .envs(backend.env.iter().map(|(k, v)| (k, v)))
        .env("TROUPE_TASK_ID", ctx.task_id)
        .env("TROUPE_ATTEMPT", ctx.attempt.to_string())
        .env("TROUPE_AGENT_ID", ctx.agent_id)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {program:?}: {e}"))?;
    let _group = child.id().map(GroupKill);
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let input = payload.to_string();
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
            // Returning early drops the process guard: the group is killed.
            return Err(format!("stdout exceeded {MAX_STDOUT} bytes"));
        }
        Ok(out)
    };
    let read_stderr = async move {
        let mut tail = Vec::new();
        if let Some(mut stderr) = stderr {
            let mut chunk = [0u8; 8192];
            loop {
                match stderr.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        tail.extend_from_slice(&chunk[..n]);
                        if tail.len() > 2 * STDERR_TAIL {
                            tail.drain(..tail.len() - STDERR_TAIL);
                        }
                    }
                }
            }
        }
        Ok(tail)
    };
    let wait = async {
        child
            .wait()
            .await
            .map_err(|e| format!("waiting for {program:?} failed: {e}"))
    };
    let (_, stdout, stderr, status) = tokio::try_join!(feed, read_stdout, read_stderr, wait)?;
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

/// Kills a process group when dropped.
struct GroupKill(u32);

impl Drop for GroupKill {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        let Ok(pgid) = libc::pid_t::try_from(self.0) else {
            return;
        };
        // SAFETY: killpg only sends a signal; an already-empty group gives ESRCH, ignored.
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sh(script: &str) -> ExecBackend {
        ExecBackend {
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout_ms: None,
            env: vec![("GREETING".into(), "hi".into())],
        }
    }

    fn ctx() -> ExecContext<'static> {
        ExecContext {
            agent_id: "a1",
            task_id: "t1",
            attempt: 2,
        }
    }

    #[tokio::test]
    async fn stdout_is_the_result_parsed_as_json_when_it_is_json() {
        assert_eq!(run(&sh("cat"), ctx(), &json!({"x": [1]})).await, Ok(json!({"x": [1]})));
        let env = run(
            &sh("echo \"$GREETING $TROUPE_TASK_ID $TROUPE_ATTEMPT $TROUPE_AGENT_ID\""),
            ctx(),
            &json!(null),
        )
        .await;
        assert_eq!(env, Ok(json!("hi t1 2 a1")));
    }

    #[tokio::test]
    async fn a_nonzero_exit_reports_the_code_and_stderr_tail() {
        let err = run(&sh("echo boom >&2; exit 3"), ctx(), &json!(null))
            .await
            .unwrap_err();
        assert_eq!(err, "exit code 3: boom");
    }

    #[tokio::test]
    async fn a_missing_program_is_a_clear_error() {
        let b = ExecBackend {
            command: vec!["/nonexistent/troupe-cmd".into()],
            timeout_ms: None,
            env: vec![],
        };
        let err = run(&b, ctx(), &json!(null)).await.unwrap_err();
        assert!(err.starts_with("cannot start"), "{err}");
    }

    #[tokio::test]
    async fn output_past_the_limit_fails_the_attempt_instead_of_filling_memory() {
        let err = run(&sh("head -c 5000000 /dev/zero"), ctx(), &json!(null))
            .await
            .unwrap_err();
        assert!(err.contains("stdout exceeded"), "{err}");
        let long_stderr = run(
            &sh("head -c 100000 /dev/zero | tr '\\0' e >&2; echo end >&2; exit 1"),
            ctx(),
            &json!(null),
        )
        .await;
        let err = long_stderr.unwrap_err();
        assert!(err.ends_with("eend"), "{}", &err[err.len().saturating_sub(40)..]);
        assert!(err.len() < 2 * STDERR_TAIL, "{}", err.len());
    }

    #[test]
    fn the_tail_keeps_the_end_on_a_char_boundary() {
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("ééé", 3), "é");
    }
}

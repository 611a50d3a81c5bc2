//! Child processes: the node under test, the `troupe token` CLI, and pid checks.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tokio::process::{Child, Command};

use super::{Deadline, COOKIE, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_troupe");

/// A port nobody listens on right now, below the system's ephemeral range. A node that is
/// killed and started again takes the same port; one from the ephemeral range (what binding
/// :0 gives) may meanwhile be taken as the local end of any outgoing connection, and the
/// restart then fails with "Address already in use".
pub fn free_port() -> Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    let first_ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, first_ephemeral.saturating_sub(1));
    if high > low {
        for attempt in 0..64u64 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(attempt);
            let port = low + (h.finish() % u64::from(high - low)) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The arguments of `troupe serve` for a node a test starts by hand (not as a `Node`): its
/// data dir, gateway address and name, a free cluster port on loopback, then `extra`.
pub fn serve_args(data_dir: &Path, listen: &str, name: &str, extra: &[&str]) -> Result<Vec<String>> {
    let (dir, cluster) = (data_dir.display().to_string(), format!("127.0.0.1:{}", free_port()?));
    let given = [
        "serve",
        "--data-dir",
        &dir,
        "--listen",
        listen,
        "--node-name",
        name,
        "--cluster-listen",
        &cluster,
    ];
    Ok(given
        .into_iter()
        .chain(extra.iter().copied())
        .map(str::to_owned)
        .collect())
}

/// Owns a running `troupe` process; dropping it kills the process and its group.
pub struct Guard {
    child: Child,
    pid: i32,
}

impl Guard {
    /// Starts `troupe ARGS` in its own process group, appending its output to
    /// stdout.log / stderr.log in `log_dir` (appending keeps the logs of earlier runs).
    pub fn spawn(args: &[String], log_dir: &Path) -> Result<Self> {
        Self::spawn_in(None, args, log_dir)
    }

    /// As [`Guard::spawn`], inside the network namespace `netns` when one is given
    /// (`ip netns exec` execs troupe, so the pid is troupe's).
    pub fn spawn_in(netns: Option<&str>, args: &[String], log_dir: &Path) -> Result<Self> {
        let log = |name: &str| OpenOptions::new().create(true).append(true).open(log_dir.join(name));
        let mut command = match netns {
            None => Command::new(BIN),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, BIN]);
                c
            }
        };
        let child = command
            .args(args)
            .env("TROUPE_COOKIE", COOKIE)
            .stdin(Stdio::null())
            .stdout(log("stdout.log")?)
            .stderr(log("stderr.log")?)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {BIN}"))?;
        let pid = i32::try_from(child.id().context("child has no pid")?)?;
        Ok(Self { child, pid })
    }

    /// The exit status if the process has exited.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    pub async fn kill9(&mut self) -> Result<()> {
        self.child.start_kill()?;
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .context("SIGKILLed node did not exit")??;
        Ok(())
    }

    /// Sends `signal` to the process (SIGSTOP freezes it: its sockets stay open).
    pub fn signal(&self, signal: i32) -> Result<()> {
        send_signal(self.pid, signal).with_context(|| format!("signal {signal}"))
    }

    pub async fn wait_exit(&mut self, within: Duration) -> Result<ExitStatus> {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .with_context(|| format!("node did not exit within {within:?}"))??;
        Ok(status)
    }

    pub async fn terminate(&mut self, within: Duration) -> Result<ExitStatus> {
        send_signal(self.pid, libc::SIGTERM).context("SIGTERM")?;
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .with_context(|| format!("node did not exit within {within:?} of SIGTERM"))??;
        Ok(status)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // The group too, so nothing the node started in it outlives the test.
            let _ = send_signal(-self.pid, libc::SIGKILL);
        }
        let _ = self.child.start_kill();
    }
}

/// kill(2). Neither std nor tokio can send SIGTERM or probe a pid, hence libc; the call
/// takes plain integers and touches none of our memory.
#[allow(unsafe_code)]
pub fn send_signal(pid: i32, signal: i32) -> std::io::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether `pid` is a live (not zombie) process.
pub fn pid_alive(pid: i32) -> bool {
    if send_signal(pid, 0).is_err_and(|e| e.raw_os_error() == Some(libc::ESRCH)) {
        return false;
    }
    // An orphan may stay a zombie when nobody reaps it (e.g. in a container); it is dead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Polls until `pid` is gone.
pub async fn wait_pid_gone(pid: i32) -> Result<()> {
    let deadline = Deadline::after(WAIT, format!("pid {pid} to be gone"));
    while pid_alive(pid) {
        deadline.tick("still alive").await?;
    }
    Ok(())
}

/// `troupe token create --role ROLE --data-dir DIR`; the one line it prints.
pub async fn create_token(role: &str, data_dir: &Path) -> Result<String> {
    let mut cmd = Command::new(BIN);
    cmd.args(["token", "create", "--role", role, "--data-dir"])
        .arg(data_dir)
        .env("TROUPE_COOKIE", COOKIE)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(WAIT, cmd.output())
        .await
        .context("troupe token create hung")??;
    let stdout = String::from_utf8(out.stdout)?;
    ensure!(
        out.stderr.is_empty(),
        "troupe token create in a node's data dir said {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "troupe token create --role {role} failed with {}: {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    ensure!(
        lines.len() == 1 && !lines[0].trim().is_empty(),
        "expected the token alone on one line, got {stdout:?}"
    );
    Ok(lines[0].trim().to_string())
}

/// Runs `troupe recover --data-dir DIR` on a stopped node's data dir; its output.
pub async fn recover(data_dir: &Path) -> Result<String> {
    let mut cmd = Command::new(BIN);
    cmd.args(["recover", "--data-dir"])
        .arg(data_dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(WAIT, cmd.output())
        .await
        .context("troupe recover hung")??;
    let stdout = String::from_utf8(out.stdout)?;
    ensure!(
        out.stderr.is_empty(),
        "troupe token create in a node's data dir said {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "troupe recover failed with {}: {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

//! The processes of exec and process agents: rlimits set in the child before it runs,
//! signals to whole process groups, and usage sampled from `/proc`.

use std::ffi::{CString, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use tokio::process::Command;

use crate::agent::spec::Limits;

/// What an agent's processes use now, summed over its process groups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub rss_bytes: u64,
    /// CPU time (user + system) of the processes alive now.
    pub cpu_seconds: f64,
    pub processes: u32,
}

/// What an agent's process inherits from the node's environment.
const INHERITED: [&str; 3] = ["PATH", "HOME", "LANG"];

/// A command for one of an agent's processes: `argv`, a clean environment (the node's
/// `PATH`, `HOME` and `LANG`, then `env`), piped stdio, a process group of its own, killed if
/// dropped. The caller adds its own variables and then calls [`apply`].
pub fn command(argv: &[String], env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).env_clear();
    for name in INHERITED {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    cmd
}

/// Where `program` is found when started with the spec's `env` (which may set its own
/// `PATH`, as the start then searches that one), or why it cannot be started at all.
pub fn find_program(program: &str, env: &[(String, String)]) -> Result<PathBuf, String> {
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = Path::new(program);
        return match path.metadata() {
            Err(_) => Err(format!("program not found: {program}")),
            Ok(_) if !executable(path) => Err(format!("program not executable: {program}")),
            Ok(_) => Ok(path.to_path_buf()),
        };
    }
    let search = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| OsString::from(v))
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| OsString::from("/bin:/usr/bin"));
    std::env::split_paths(&search)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
        .ok_or_else(|| format!("program not found: {program} (searched PATH)"))
}

/// Why a process could not be started, in words an operator can act on.
pub fn spawn_error(program: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => format!("program not found: {program}"),
        std::io::ErrorKind::PermissionDenied => format!("program not executable: {program} ({e})"),
        _ => format!("cannot start {program:?}: {e}"),
    }
}

/// Prepares an agent's process before it runs: the kernel kills it if the node dies (even
/// by SIGKILL), the spec's limits become rlimits of the process (inherited by its
/// children), and it joins its agent's cgroup (`cgroup` is that cgroup's `cgroup.procs`).
#[allow(unsafe_code)]
pub fn apply(cmd: &mut Command, limits: Limits, cgroup: Option<CString>) {
    let node = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    let mib = |m: u64| m.saturating_mul(1024 * 1024);
    let wanted: Vec<(libc::__rlimit_resource_t, u64)> = [
        (libc::RLIMIT_AS, limits.memory_mib.map(mib)),
        (libc::RLIMIT_CPU, limits.cpu_seconds),
        (libc::RLIMIT_NOFILE, limits.open_files),
    ]
    .into_iter()
    .filter_map(|(r, v)| v.map(|v| (r, v)))
    .collect();
    // SAFETY: the closure runs in the forked child before exec and only calls close_range,
    // prctl, getppid, setrlimit, open, write and close, which are async-signal-safe; it allocates
    // nothing (the vector and the path were built before fork).
    unsafe {
        cmd.pre_exec(move || {
            // Whatever descriptor of the node lacks close-on-exec (a library's) gets it now:
            // the agent's process must not inherit the store, a socket or a token file.
            // Kernels before 5.11 lack the call; everything Troupe opens is close-on-exec anyway.
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The node died between the fork and the prctl: the signal will not come.
            if libc::getppid() != node {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            if let Some(procs) = &cgroup {
                // "0" moves the writing process itself.
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            for &(resource, value) in &wanted {
                let limit = libc::rlimit {
                    rlim_cur: value as libc::rlim_t,
                    rlim_max: value as libc::rlim_t,
                };
                if libc::setrlimit(resource, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Sends `signal` to a whole process group; a group already gone is not an error.
#[allow(unsafe_code)]
pub fn signal_group(pgid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: killpg only sends a signal; an empty group gives ESRCH, ignored.
    unsafe {
        libc::killpg(pgid, signal);
    }
}

/// Sums the usage of every process in the given process groups.
pub fn sample(groups: &[u32]) -> Usage {
    let mut usage = Usage::default();
    if groups.is_empty() {
        return usage;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return usage;
    };
    let (tick, page) = units();
    let mut ticks = 0u64;
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Some(stat) = read_stat(pid) else { continue };
        if groups.contains(&stat.pgrp) {
            usage.processes += 1;
            usage.rss_bytes += stat.rss_pages * page;
            ticks += stat.cpu_ticks;
        }
    }
    usage.cpu_seconds = ticks as f64 / tick as f64;
    usage
}

/// One process's `/proc/<pid>/stat`, the fields Troupe reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// R, S, D, T (stopped), Z, ...
    pub state: char,
    pub pgrp: u32,
    pub cpu_ticks: u64,
    pub rss_pages: u64,
}

pub fn read_stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat(text: &str) -> Option<Stat> {
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        state: f.first()?.chars().next()?,
        pgrp: num(2)? as u32,
        cpu_ticks: num(11)? + num(12)?,
        rss_pages: num(21)?,
    })
}

/// This process's CPU time so far (user and system, in seconds) and resident memory (bytes).
pub fn own_usage() -> Option<(f64, u64)> {
    let stat = read_stat(std::process::id())?;
    let (tick, page) = units();
    Some((stat.cpu_ticks as f64 / tick as f64, stat.rss_pages * page))
}

#[allow(unsafe_code)]
fn units() -> (u64, u64) {
    // SAFETY: sysconf only reads configuration values.
    let (tick, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
    (tick.max(1) as u64, page.max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_is_found_on_the_spec_path_or_the_nodes_or_said_missing() {
        assert!(find_program("sh", &[]).is_ok());
        assert!(find_program("/bin/sh", &[]).is_ok());
        let missing = find_program("troupe-no-such-program", &[]).unwrap_err();
        assert!(
            missing.starts_with("program not found: troupe-no-such-program"),
            "{missing}"
        );
        let missing = find_program("/nonexistent/agent", &[]).unwrap_err();
        assert_eq!(missing, "program not found: /nonexistent/agent");
        // The spec's PATH is the one searched.
        let nowhere = vec![("PATH".to_string(), "/nonexistent".to_string())];
        assert!(find_program("sh", &nowhere).is_err());
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        let err = find_program(&plain.to_string_lossy(), &[]).unwrap_err();
        assert!(err.starts_with("program not executable"), "{err}");
    }

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        let line = "4242 (my (odd) agent) T 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 1000000 300 18446744073709551615";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.state, 'T');
        assert_eq!(stat.pgrp, 4242);
        assert_eq!(stat.cpu_ticks, 300);
        assert_eq!(stat.rss_pages, 300);
    }

    #[test]
    fn this_process_is_sampled_through_its_group() {
        let me = std::process::id();
        let group = read_stat(me).unwrap().pgrp;
        let usage = sample(&[group]);
        assert!(usage.processes >= 1);
        assert!(usage.rss_bytes > 0);
    }
}

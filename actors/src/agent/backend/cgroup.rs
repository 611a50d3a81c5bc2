//! cgroup v2 limits for an agent's processes, where the machine allows them: memory
//! (`memory.max`) and CPU (`cpu.max`). Troupe keeps its agents under
//! `/sys/fs/cgroup/troupe/<agent>`; a process joins its agent's cgroup before it runs. Where
//! there is no cgroup v2 hierarchy with the memory and cpu controllers delegated (a v1 or
//! hybrid host, a container without delegation, no root), the reason is reported and the
//! rlimits alone apply.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::agent::spec::Limits;

const ROOT: &str = "/sys/fs/cgroup";

/// Whether this node can give agents cgroup limits, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// Agents' cgroups go under this directory.
    Available(PathBuf),
    Unavailable(String),
}

/// Found once per process.
pub fn support() -> &'static Support {
    static SUPPORT: OnceLock<Support> = OnceLock::new();
    SUPPORT.get_or_init(|| match prepare(Path::new(ROOT)) {
        Ok(base) => Support::Available(base),
        Err(why) => {
            tracing::info!(%why, "cgroup v2 limits are not available; agents get rlimits only");
            Support::Unavailable(why)
        }
    })
}

/// Makes `<root>/troupe` with the memory and cpu controllers enabled for its children.
fn prepare(root: &Path) -> Result<PathBuf, String> {
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers"))
        .map_err(|_| format!("no cgroup v2 hierarchy at {} (a v1 or hybrid host)", root.display()))?;
    for wanted in ["memory", "cpu"] {
        if !controllers.split_whitespace().any(|c| c == wanted) {
            return Err(format!(
                "the {wanted} controller is not available in {}",
                root.display()
            ));
        }
    }
    let enable = |dir: &Path| -> Result<(), String> {
        let file = dir.join("cgroup.subtree_control");
        let now = std::fs::read_to_string(&file).unwrap_or_default();
        if ["memory", "cpu"]
            .iter()
            .all(|c| now.split_whitespace().any(|n| n == *c))
        {
            return Ok(());
        }
        std::fs::write(&file, "+memory +cpu")
            .map_err(|e| format!("cannot enable memory and cpu in {}: {e}", file.display()))
    };
    enable(root)?;
    let base = root.join("troupe");
    if let Err(e) = std::fs::create_dir(&base) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(format!("cannot create {}: {e}", base.display()));
        }
    }
    enable(&base)?;
    Ok(base)
}

/// What an agent spec's limits come to on this node, for the API.
pub fn describe(limits: &Limits) -> String {
    if limits.memory_mib.is_none() && limits.cpu_cores.is_none() {
        return "not used: no memory or cpu limit".into();
    }
    match support() {
        Support::Available(base) => format!("applied under {}", base.display()),
        Support::Unavailable(why) => format!("unavailable: {why}"),
    }
}

/// One agent's cgroup; removed (once empty) when dropped.
pub struct AgentCgroup {
    dir: PathBuf,
    /// `<dir>/cgroup.procs`, ready for a child to write itself into before it runs.
    procs: CString,
}

impl AgentCgroup {
    /// The agent's cgroup with its limits set, or `None` when it asks for none or the node
    /// cannot give them (reported through [`describe`]).
    pub fn create(agent: &str, limits: &Limits) -> Option<AgentCgroup> {
        if limits.memory_mib.is_none() && limits.cpu_cores.is_none() {
            return None;
        }
        let Support::Available(base) = support() else {
            return None;
        };
        let name: String = agent
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
            .collect();
        let dir = base.join(name);
        let made = (|| -> std::io::Result<()> {
            if let Err(e) = std::fs::create_dir(&dir) {
                if e.kind() != std::io::ErrorKind::AlreadyExists {
                    return Err(e);
                }
            }
            if let Some(mib) = limits.memory_mib {
                std::fs::write(dir.join("memory.max"), (mib * 1024 * 1024).to_string())?;
            }
            if let Some(cores) = limits.cpu_cores {
                let period = 100_000u64;
                let quota = ((cores * period as f64) as u64).max(1000);
                std::fs::write(dir.join("cpu.max"), format!("{quota} {period}"))?;
            }
            Ok(())
        })();
        match made {
            Ok(()) => Some(AgentCgroup {
                procs: CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).ok()?,
                dir,
            }),
            Err(e) => {
                tracing::warn!(%agent, dir = %dir.display(), error = %e, "cannot set the agent's cgroup limits");
                None
            }
        }
    }

    pub fn procs(&self) -> CString {
        self.procs.clone()
    }
}

impl Drop for AgentCgroup {
    fn drop(&mut self) {
        // Fails while a process is still inside (it is being killed): then it stays, empty
        // soon, and is reused by the agent's next start.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_without_cgroup_v2_is_reported_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let why = prepare(dir.path()).unwrap_err();
        assert!(why.contains("no cgroup v2 hierarchy"), "{why}");
        std::fs::write(dir.path().join("cgroup.controllers"), "cpuset io pids").unwrap();
        let why = prepare(dir.path()).unwrap_err();
        assert!(why.contains("memory controller"), "{why}");
        std::fs::write(dir.path().join("cgroup.controllers"), "cpuset cpu io memory pids").unwrap();
        let base = prepare(dir.path()).unwrap();
        assert_eq!(base, dir.path().join("troupe"));
        let enabled = std::fs::read_to_string(base.join("cgroup.subtree_control")).unwrap();
        assert_eq!(enabled, "+memory +cpu");
    }

    #[test]
    fn limits_without_memory_or_cpu_need_no_cgroup() {
        let limits = Limits {
            open_files: Some(10),
            ..Limits::default()
        };
        assert!(describe(&limits).starts_with("not used"));
        assert!(AgentCgroup::create("a@n", &limits).is_none());
    }
}

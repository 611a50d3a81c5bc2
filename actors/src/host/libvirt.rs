//! A host's libvirt connection, on a thread of its own.
//!
//! libvirt calls block, and `virt::connect::Connect` panics if closing it fails, so each host's
//! connection lives on one dedicated OS thread for the host's life: callers send it closures
//! and await the answers; nothing blocking ever runs on an async worker thread. The thread also
//! carries the injected "connection lost" fault: while it is set, every call fails as a dropped
//! connection would, and the domains on the host keep running, as they would on a real host
//! behind a broken link.

use std::sync::mpsc;
use std::sync::Once;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use virt::connect::Connect;
use virt::domain::{Domain, DomainState};

/// Why a libvirt call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LibvirtError {
    /// The connection is gone (or the fault says so): the host is unreachable.
    #[error("connection lost: {0}")]
    Lost(String),
    /// libvirt refused or failed the call.
    #[error("{message}")]
    Call {
        message: String,
        unsupported: bool,
        no_domain: bool,
    },
}

impl LibvirtError {
    fn from_virt(e: virt::error::Error) -> Self {
        use virt::error::ErrorNumber as N;
        let code = e.code();
        if code.is_any(vec![
            N::SystemError,
            N::Rpc,
            N::NoConnect,
            N::InvalidConn,
            N::AuthFailed,
        ]) {
            return Self::Lost(e.message().to_owned());
        }
        Self::Call {
            message: e.message().to_owned(),
            unsupported: code.is_any(vec![N::NoSupport, N::ArgumentUnsupported, N::OperationUnsupported]),
            no_domain: code.is(N::NoDomain),
        }
    }

    pub fn is_lost(&self) -> bool {
        matches!(self, Self::Lost(_))
    }

    pub fn is_unsupported(&self) -> bool {
        matches!(self, Self::Call { unsupported: true, .. })
    }

    pub fn is_no_domain(&self) -> bool {
        matches!(self, Self::Call { no_domain: true, .. })
    }
}

/// What libvirt says of a domain now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainObs {
    pub name: String,
    pub uuid: String,
    pub state: DomainStateName,
    /// libvirt's reason for the state (`destroyed`, `shutdown`, `crashed`, `booted`, ...).
    pub reason: String,
    pub cpu_time_ns: u64,
    pub memory_kib: u64,
    pub vcpus: u32,
}

/// libvirt's domain states, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DomainStateName {
    NoState,
    Running,
    Blocked,
    Paused,
    ShuttingDown,
    Shutoff,
    Crashed,
    PmSuspended,
}

impl DomainStateName {
    fn of(state: DomainState) -> Self {
        match state {
            DomainState::NoState => Self::NoState,
            DomainState::Running => Self::Running,
            DomainState::Blocked => Self::Blocked,
            DomainState::Paused => Self::Paused,
            DomainState::Shutdown => Self::ShuttingDown,
            DomainState::Shutoff => Self::Shutoff,
            DomainState::Crashed => Self::Crashed,
            DomainState::PMSuspended => Self::PmSuspended,
        }
    }

    /// Whether the guest is using the host's CPUs and memory (running, paused, going down).
    pub fn is_active(self) -> bool {
        !matches!(self, Self::Shutoff | Self::Crashed | Self::NoState)
    }
}

/// What the host's CPUs and memory are, as libvirt reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCapacity {
    pub cpus: u32,
    pub memory_mib: u64,
}

type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// The thread's side: the connection (when open) and the fault.
pub struct Session {
    uri: String,
    conn: Option<Connect>,
    broken: Option<String>,
}

impl Session {
    /// The open connection, or why there is none.
    pub fn conn(&mut self) -> Result<&Connect, LibvirtError> {
        if let Some(why) = &self.broken {
            return Err(LibvirtError::Lost(why.clone()));
        }
        self.conn
            .as_ref()
            .ok_or_else(|| LibvirtError::Lost(format!("not connected to {}", self.uri)))
    }

    /// Keeps the connection if it is alive; opens a new one otherwise.
    fn reconnect(&mut self) -> Result<bool, LibvirtError> {
        if let Some(why) = &self.broken {
            return Err(LibvirtError::Lost(why.clone()));
        }
        if let Some(conn) = &self.conn {
            if conn.is_alive().unwrap_or(false) {
                return Ok(false);
            }
        }
        close(self.conn.take());
        let conn = Connect::open(Some(&self.uri)).map_err(|e| LibvirtError::Lost(e.message().to_owned()))?;
        self.conn = Some(conn);
        Ok(true)
    }
}

/// Closing a connection libvirt already dropped may fail, and `Connect`'s Drop panics then:
/// the panic is contained here, on the connection's own thread.
fn close(conn: Option<Connect>) {
    if let Some(conn) = conn {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(conn))).is_err() {
            tracing::warn!("closing a libvirt connection failed");
        }
    }
}

/// The async side: a handle to the connection's thread. Clones share the thread; it ends
/// (closing the connection) when the last handle is dropped.
#[derive(Clone)]
pub struct Libvirt {
    uri: String,
    jobs: mpsc::Sender<Job>,
}

static QUIET: Once = Once::new();

impl Libvirt {
    /// Starts the connection's thread and opens the connection on it. A connection that does
    /// not open is not an error here: the handle reports calls as `Lost` until
    /// [`Libvirt::reconnect`] succeeds.
    pub async fn open(uri: &str) -> (Self, Result<(), LibvirtError>) {
        // libvirt prints every error to stderr by default; Troupe reports them itself.
        QUIET.call_once(virt::error::clear_error_callback);
        let (jobs, inbox) = mpsc::channel::<Job>();
        let thread_uri = uri.to_owned();
        let spawned = std::thread::Builder::new()
            .name(format!("libvirt {}", short(uri)))
            .spawn(move || {
                let mut session = Session {
                    uri: thread_uri,
                    conn: None,
                    broken: None,
                };
                while let Ok(job) = inbox.recv() {
                    job(&mut session);
                }
                close(session.conn.take());
            });
        let me = Self {
            uri: uri.to_owned(),
            jobs,
        };
        if let Err(e) = spawned {
            return (me, Err(LibvirtError::Lost(format!("cannot start its thread: {e}"))));
        }
        let opened = me.reconnect().await.map(|_| ());
        (me, opened)
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Runs `f` on the connection's thread.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Session) -> Result<T, LibvirtError> + Send + 'static,
    ) -> Result<T, LibvirtError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |session| {
            let _ = tx.send(f(session));
        });
        self.jobs
            .send(job)
            .map_err(|_| LibvirtError::Lost("the connection's thread has stopped".into()))?;
        rx.await
            .map_err(|_| LibvirtError::Lost("the connection's thread has stopped".into()))?
    }

    /// Checks the connection, opening a new one if it dropped; `true` when it is a new one
    /// (for `test:///` hosts, a fresh, empty host).
    pub async fn reconnect(&self) -> Result<bool, LibvirtError> {
        self.run(|s| s.reconnect()).await
    }

    /// Breaks (`Some(why)`) or heals (`None`) the connection, as an injected fault.
    pub async fn set_broken(&self, why: Option<String>) -> Result<(), LibvirtError> {
        self.run(move |s| {
            s.broken = why;
            Ok(())
        })
        .await
    }

    pub async fn capacity(&self) -> Result<NodeCapacity, LibvirtError> {
        self.run(|s| {
            let info = s.conn()?.node_info().map_err(LibvirtError::from_virt)?;
            Ok(NodeCapacity {
                cpus: info.cpus,
                memory_mib: info.memory / 1024,
            })
        })
        .await
    }

    /// Every domain on the host, with its state and usage: one sweep of the reconcile loop.
    pub async fn domains(&self) -> Result<Vec<DomainObs>, LibvirtError> {
        self.run(|s| {
            let conn = s.conn()?;
            let domains = conn.list_all_domains(0).map_err(LibvirtError::from_virt)?;
            let mut seen = Vec::with_capacity(domains.len());
            for dom in domains {
                // A domain undefined between the listing and this look is simply gone.
                match observe(&dom) {
                    Ok(obs) => seen.push(obs),
                    Err(e) if e.is_no_domain() => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(seen)
        })
        .await
    }

    /// Runs `f` on the named domain.
    pub async fn on_domain<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce(&Domain) -> Result<T, virt::error::Error> + Send + 'static,
    ) -> Result<T, LibvirtError> {
        let name = name.to_owned();
        self.run(move |s| {
            let dom = s
                .conn()?
                .lookup_domain_by_name(&name)
                .map_err(LibvirtError::from_virt)?;
            f(&dom).map_err(LibvirtError::from_virt)
        })
        .await
    }

    /// What libvirt says of the named domain now; `None` when it has no such domain.
    pub async fn observe(&self, name: &str) -> Result<Option<DomainObs>, LibvirtError> {
        let name = name.to_owned();
        self.run(move |s| match s.conn()?.lookup_domain_by_name(&name) {
            Ok(dom) => match observe(&dom) {
                Ok(obs) => Ok(Some(obs)),
                Err(e) if e.is_no_domain() => Ok(None),
                Err(e) => Err(e),
            },
            Err(e) => match LibvirtError::from_virt(e) {
                e if e.is_no_domain() => Ok(None),
                e => Err(e),
            },
        })
        .await
    }

    /// Defines a domain from its XML (replacing the definition of one with the same name).
    pub async fn define(&self, xml: String) -> Result<(), LibvirtError> {
        self.run(move |s| {
            s.conn()?.define_domain_xml(&xml).map_err(LibvirtError::from_virt)?;
            Ok(())
        })
        .await
    }

    /// Destroys (if active) and undefines the named domain; a missing domain is no error.
    pub async fn remove(&self, name: &str) -> Result<(), LibvirtError> {
        let name = name.to_owned();
        self.run(move |s| {
            let dom = match s.conn()?.lookup_domain_by_name(&name) {
                Ok(dom) => dom,
                Err(e) => {
                    return match LibvirtError::from_virt(e) {
                        e if e.is_no_domain() => Ok(()),
                        e => Err(e),
                    }
                }
            };
            if dom.is_active().map_err(LibvirtError::from_virt)? {
                dom.destroy().map_err(LibvirtError::from_virt)?;
            }
            // A domain with snapshots needs their metadata removed with it.
            dom.undefine_flags(virt::sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
                .map_err(LibvirtError::from_virt)?;
            Ok(())
        })
        .await
    }

    /// Live-migrates the named domain to the host of `target` (both connections in this
    /// process), keeping its name.
    pub async fn migrate_live(&self, name: &str, target: &Libvirt) -> Result<(), LibvirtError> {
        // The target's connection lives on its own thread: open a second one to it here.
        let (name, target_uri) = (name.to_owned(), target.uri.clone());
        self.run(move |s| {
            let dom = s
                .conn()?
                .lookup_domain_by_name(&name)
                .map_err(LibvirtError::from_virt)?;
            let dconn = Connect::open(Some(&target_uri)).map_err(|e| LibvirtError::Lost(e.message().to_owned()))?;
            let flags = virt::sys::VIR_MIGRATE_LIVE
                | virt::sys::VIR_MIGRATE_PERSIST_DEST
                | virt::sys::VIR_MIGRATE_UNDEFINE_SOURCE;
            let result = dom.migrate(&dconn, flags, None, None, 0).map(|_| ());
            close(Some(dconn));
            result.map_err(LibvirtError::from_virt)
        })
        .await
    }
}

fn observe(dom: &Domain) -> Result<DomainObs, LibvirtError> {
    let (state, reason) = dom.state().map_err(LibvirtError::from_virt)?;
    let info = dom.info().map_err(LibvirtError::from_virt)?;
    let state = DomainStateName::of(state.unwrap_or(DomainState::NoState));
    Ok(DomainObs {
        name: dom.name().map_err(LibvirtError::from_virt)?,
        uuid: dom.uuid_string().map_err(LibvirtError::from_virt)?,
        state,
        reason: match reason {
            virt::enumutil::Enum::Known(r) => r.to_string(),
            virt::enumutil::Enum::Unknown(n) => format!("reason {n}"),
        },
        cpu_time_ns: info.cpu_time,
        memory_kib: info.memory,
        vcpus: info.nr_virt_cpu,
    })
}

/// A URI short enough for a thread name (15 bytes on Linux).
fn short(uri: &str) -> String {
    uri.rsplit('/').next().unwrap_or(uri).chars().take(7).collect()
}

/// The domain XML for a VM. `test:///` hosts get test-driver domains; others get KVM ones
/// (with no disk: a real guest's devices are beyond this issue and documented as such).
pub fn domain_xml(uri: &str, name: &str, uuid: &str, vcpus: u32, memory_mib: u64) -> String {
    let kind = if uri.starts_with("test:") { "test" } else { "kvm" };
    format!(
        "<domain type='{kind}'><name>{name}</name><uuid>{uuid}</uuid>\
         <memory unit='MiB'>{memory_mib}</memory><currentMemory unit='MiB'>{memory_mib}</currentMemory>\
         <vcpu>{vcpus}</vcpu><os><type arch='x86_64'>hvm</type></os>\
         <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash></domain>"
    )
}

/// The node XML of a simulated host: libvirt's test driver reads CPUs and memory from it.
pub fn simulated_node_xml(cpus: u32, memory_mib: u64) -> String {
    format!(
        "<node>\n  <cpu>\n    <mhz>2400</mhz>\n    <model>troupe-simulated</model>\n    <active>{cpus}</active>\n    \
         <max>{cpus}</max>\n    <total>{cpus}</total>\n    <nodes>1</nodes>\n    <sockets>1</sockets>\n    \
         <cores>{cpus}</cores>\n    <threads>1</threads>\n  </cpu>\n  <memory>{}</memory>\n</node>\n",
        memory_mib * 1024
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn simulated(dir: &std::path::Path, cpus: u32, memory_mib: u64) -> Libvirt {
        let path = dir.join(format!("host-{cpus}.xml"));
        std::fs::write(&path, simulated_node_xml(cpus, memory_mib)).unwrap();
        let (lv, opened) = Libvirt::open(&format!("test://{}", path.display())).await;
        opened.unwrap();
        lv
    }

    #[tokio::test]
    async fn a_simulated_host_reports_its_own_capacity_and_runs_domains() {
        let dir = tempfile::tempdir().unwrap();
        let lv = simulated(dir.path(), 24, 32 * 1024).await;
        assert_eq!(
            lv.capacity().await.unwrap(),
            NodeCapacity {
                cpus: 24,
                memory_mib: 32 * 1024
            }
        );
        let uuid = uuid::Uuid::new_v4().to_string();
        lv.define(domain_xml(lv.uri(), "troupe-a", &uuid, 2, 512))
            .await
            .unwrap();
        let obs = lv.observe("troupe-a").await.unwrap().unwrap();
        assert_eq!(obs.state, DomainStateName::Shutoff);
        assert_eq!(obs.uuid, uuid);
        lv.on_domain("troupe-a", |d| d.create().map(|_| ())).await.unwrap();
        let obs = lv.observe("troupe-a").await.unwrap().unwrap();
        assert_eq!(
            (obs.state, obs.vcpus, obs.memory_kib),
            (DomainStateName::Running, 2, 512 * 1024)
        );
        // The test driver does not migrate: Troupe must move VMs itself.
        let other = simulated(dir.path(), 8, 8 * 1024).await;
        let err = lv.migrate_live("troupe-a", &other).await.unwrap_err();
        assert!(err.is_unsupported(), "{err:?}");
        lv.on_domain("troupe-a", |d| d.destroy()).await.unwrap();
        let obs = lv.observe("troupe-a").await.unwrap().unwrap();
        assert_eq!(
            (obs.state, obs.reason.as_str()),
            (DomainStateName::Shutoff, "destroyed")
        );
        lv.remove("troupe-a").await.unwrap();
        assert_eq!(lv.observe("troupe-a").await.unwrap(), None);
        lv.remove("troupe-a").await.unwrap();
    }

    #[tokio::test]
    async fn a_broken_connection_fails_every_call_until_healed_and_keeps_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let lv = simulated(dir.path(), 4, 4096).await;
        let uuid = uuid::Uuid::new_v4().to_string();
        lv.define(domain_xml(lv.uri(), "troupe-b", &uuid, 1, 256))
            .await
            .unwrap();
        lv.set_broken(Some("injected".into())).await.unwrap();
        assert!(lv.domains().await.unwrap_err().is_lost());
        assert!(lv.reconnect().await.unwrap_err().is_lost());
        lv.set_broken(None).await.unwrap();
        assert!(!lv.reconnect().await.unwrap(), "the live connection is kept");
        assert_eq!(lv.domains().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_uri_that_does_not_open_reports_the_host_unreachable() {
        // Nothing listens on port 1 of loopback: the connection is refused.
        let (lv, opened) = Libvirt::open("qemu+tcp://127.0.0.1:1/system").await;
        assert!(opened.unwrap_err().is_lost());
        assert!(lv.domains().await.unwrap_err().is_lost());
    }
}

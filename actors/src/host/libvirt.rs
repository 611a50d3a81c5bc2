//! A host's libvirt connection, on a thread of its own.
//!
//! libvirt calls block, and `virt::connect::Connect` panics if closing it fails, so each host's
//! connection lives on a dedicated OS thread ([`worker`]): callers send it closures and await
//! the answers, at most the call timeout each; nothing blocking ever runs on an async worker
//! thread, and a call that does not answer in time is the host being unreachable. A live
//! migration runs on a thread of its own, so it holds up no other call to its hosts. The
//! thread also carries the injected faults: "connection lost" (every call fails as a dropped
//! connection would, and the domains on the host keep running, as they would on a real host
//! behind a broken link) and "hang" (every call blocks, as on a black-holed link).

mod worker;

use std::sync::{Arc, Once};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use virt::domain::{Domain, DomainState};

pub use worker::Session;
use worker::{close, Hang, Job, Worker};

/// How long a live migration may run before it is reported FAILED.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(600);

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

/// Every domain libvirt listed on a host, Troupe's or not, and when it listed them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    pub at: chrono::DateTime<chrono::Utc>,
    pub domains: Vec<DomainObs>,
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

/// The async side: a handle to the connection's thread. Clones share the thread; it ends
/// (closing the connection) when the last handle is dropped.
#[derive(Clone)]
pub struct Libvirt {
    uri: String,
    timeout: Duration,
    worker: Arc<Worker>,
    hang: Arc<Hang>,
}

static QUIET: Once = Once::new();

impl Libvirt {
    /// Starts the connection's thread without connecting: the first [`Libvirt::reconnect`]
    /// opens the connection. Every call waits at most `timeout`.
    pub fn new(uri: &str, timeout: Duration) -> Self {
        // libvirt prints every error to stderr by default; Troupe reports them itself.
        QUIET.call_once(virt::error::clear_error_callback);
        Self {
            uri: uri.to_owned(),
            timeout,
            worker: Arc::new(Worker::start(uri)),
            hang: Arc::default(),
        }
    }

    /// [`Libvirt::new`], then opens the connection. A connection that does not open is not
    /// an error here: the handle reports calls as `Lost` until [`Libvirt::reconnect`]
    /// succeeds.
    pub async fn open(uri: &str, timeout: Duration) -> (Self, Result<(), LibvirtError>) {
        let me = Self::new(uri, timeout);
        let opened = me.reconnect().await.map(|_| ());
        (me, opened)
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Runs `f` on the connection's thread and waits at most the call timeout. A call that
    /// does not answer in time fails as `Lost` (the host is unreachable) and its thread is
    /// given up on: the next call goes to a fresh one.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Session) -> Result<T, LibvirtError> + Send + 'static,
    ) -> Result<T, LibvirtError> {
        let (tx, rx) = oneshot::channel();
        let hang = self.hang.clone();
        let job: Job = Box::new(move |session| {
            hang.wait();
            // Nothing runs for a caller that has stopped waiting: a late define or destroy
            // would act on a decision already reported failed.
            if !tx.is_closed() {
                let _ = tx.send(f(session));
            }
        });
        let generation = self.worker.send(job)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(LibvirtError::Lost("the connection's thread has stopped".into())),
            Err(_) => {
                self.worker.abandon(generation);
                Err(LibvirtError::Lost(format!(
                    "libvirt did not answer within {} ms",
                    self.timeout.as_millis()
                )))
            }
        }
    }

    /// Makes every call block (`true`), as on a black-holed link, or answer again (`false`):
    /// an injected fault. Acts at once, whatever the connection's thread is doing.
    pub fn set_hang(&self, on: bool) {
        self.hang.set(on);
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

    /// Live-migrates the named domain to the host of `target`, keeping its name. The
    /// migration runs on a thread of its own with its own connection to the target, so the
    /// source's other calls go on meanwhile; it may take up to [`MIGRATION_TIMEOUT`].
    pub async fn migrate_live(&self, name: &str, target: &Libvirt) -> Result<(), LibvirtError> {
        let name = name.to_owned();
        let dom = self
            .run(move |s| s.conn()?.lookup_domain_by_name(&name).map_err(LibvirtError::from_virt))
            .await?;
        let target_uri = target.uri.clone();
        let (tx, rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("libvirt migrate".into())
            .spawn(move || {
                let result = worker::open(&target_uri).and_then(|dconn| {
                    let flags = virt::sys::VIR_MIGRATE_LIVE
                        | virt::sys::VIR_MIGRATE_PERSIST_DEST
                        | virt::sys::VIR_MIGRATE_UNDEFINE_SOURCE;
                    let result = dom.migrate(&dconn, flags, None, None, 0).map(release);
                    close(Some(dconn));
                    result.map_err(LibvirtError::from_virt)
                });
                release(dom);
                let _ = tx.send(result);
            })
            .map_err(|e| LibvirtError::Lost(format!("cannot start a migration thread: {e}")))?;
        match tokio::time::timeout(MIGRATION_TIMEOUT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(LibvirtError::Lost("the migration's thread stopped".into())),
            Err(_) => Err(LibvirtError::Lost(format!(
                "the live migration did not end within {} s",
                MIGRATION_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// Drops a domain handle; freeing one whose connection libvirt dropped may fail, and
/// `Domain`'s Drop panics then.
fn release(dom: Domain) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(dom))).is_err() {
        tracing::warn!("freeing a libvirt domain handle failed");
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
mod tests;

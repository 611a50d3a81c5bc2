//! The thread a host's libvirt connection lives on, and the bounded call to it.
//!
//! ```text
//! Libvirt::run ──job──▶ channel ──▶ thread (Session: the Connect) ──answer──▶ oneshot
//!      └─ waits at most `timeout`; on a timeout the thread is abandoned (left to finish its
//!         stuck call and end) and a fresh one, with no connection yet, takes its place
//! ```
//!
//! A call to a black-holed host blocks inside libvirt until the kernel or libvirt's keepalive
//! gives up, which may be never. The async side therefore never waits longer than the call
//! timeout, and a thread that did not answer in time is not given more work: the next call
//! goes to a new thread, which reconnects. At most [`MAX_ABANDONED`] stuck threads are kept per
//! host; past that, calls queue on the current thread and each still ends at its timeout.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};

use virt::connect::Connect;

use super::LibvirtError;

/// Stuck threads kept per host before calls stop getting fresh ones.
const MAX_ABANDONED: usize = 4;

/// libvirt's keepalive on a connection through its remote driver: a probe every `INTERVAL`
/// seconds; `COUNT` unanswered probes close the connection, which ends any call blocked on it.
pub(super) const KEEPALIVE_INTERVAL: i32 = 5;
pub(super) const KEEPALIVE_COUNT: u32 = 3;

pub(super) type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// Whether libvirt keepalive is set on connections to `uri`: every driver reached through
/// libvirt's remote protocol (a daemon, local or not) takes it; the in-process `test:` driver
/// does not support it.
pub(super) fn keepalive_for(uri: &str) -> Option<(i32, u32)> {
    (!uri.starts_with("test:")).then_some((KEEPALIVE_INTERVAL, KEEPALIVE_COUNT))
}

/// Opens a connection to `uri`, with keepalive where the driver supports it.
pub(super) fn open(uri: &str) -> Result<Connect, LibvirtError> {
    let conn = Connect::open(Some(uri)).map_err(|e| LibvirtError::Lost(e.message().to_owned()))?;
    if let Some((interval, count)) = keepalive_for(uri) {
        if let Err(e) = conn.set_keep_alive(interval, count) {
            // A driver without keepalive still works; its calls stay bounded by the timeout.
            tracing::debug!(%uri, error = %e.message(), "libvirt keepalive not set");
        }
    }
    Ok(conn)
}

/// The thread's side: the connection (when open) and the injected "connection lost" fault.
pub struct Session {
    uri: String,
    conn: Option<Connect>,
    pub(super) broken: Option<String>,
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
    pub(super) fn reconnect(&mut self) -> Result<bool, LibvirtError> {
        if let Some(why) = &self.broken {
            return Err(LibvirtError::Lost(why.clone()));
        }
        if let Some(conn) = &self.conn {
            if conn.is_alive().unwrap_or(false) {
                return Ok(false);
            }
        }
        close(self.conn.take());
        self.conn = Some(open(&self.uri)?);
        Ok(true)
    }
}

/// Closing a connection libvirt already dropped may fail, and `Connect`'s Drop panics then:
/// the panic is contained here, on the thread that closes it.
pub(super) fn close(conn: Option<Connect>) {
    if let Some(conn) = conn {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(conn))).is_err() {
            tracing::warn!("closing a libvirt connection failed");
        }
    }
}

/// The injected hang (a black-holed host): while on, every job blocks on its thread before it
/// touches libvirt, as a call to an unanswering host does. Healed from the async side
/// directly, never through a thread that may be the one blocked.
#[derive(Default)]
pub(super) struct Hang {
    on: Mutex<bool>,
    healed: Condvar,
}

impl Hang {
    fn lock(&self) -> MutexGuard<'_, bool> {
        self.on.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn set(&self, on: bool) {
        *self.lock() = on;
        if !on {
            self.healed.notify_all();
        }
    }

    pub(super) fn wait(&self) {
        let mut on = self.lock();
        while *on {
            on = self.healed.wait(on).unwrap_or_else(|p| p.into_inner());
        }
    }
}

struct Current {
    jobs: mpsc::Sender<Job>,
    generation: u64,
    /// Set when this thread is given up on: it ends once its stuck call returns.
    abandoned: Arc<AtomicBool>,
}

/// The connection's thread, replaced when it stops answering.
pub(super) struct Worker {
    uri: String,
    current: Mutex<Current>,
    /// Threads given up on that have not ended yet.
    stuck: Arc<AtomicUsize>,
}

impl Worker {
    pub(super) fn start(uri: &str) -> Self {
        let stuck = Arc::new(AtomicUsize::new(0));
        Self {
            current: Mutex::new(spawn(uri, 0, &stuck)),
            uri: uri.to_owned(),
            stuck,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a job on the current thread (a fresh one if it has ended); answers which
    /// thread took it.
    pub(super) fn send(&self, job: Job) -> Result<u64, LibvirtError> {
        let mut current = self.lock();
        let job = match current.jobs.send(job) {
            Ok(()) => return Ok(current.generation),
            Err(mpsc::SendError(job)) => job,
        };
        let generation = current.generation + 1;
        *current = spawn(&self.uri, generation, &self.stuck);
        current
            .jobs
            .send(job)
            .map_err(|_| LibvirtError::Lost("cannot start the connection's thread".into()))?;
        Ok(generation)
    }

    /// The thread `generation` did not answer in time: a fresh one takes its place (once per
    /// stuck thread, and only while fewer than [`MAX_ABANDONED`] are stuck).
    pub(super) fn abandon(&self, generation: u64) {
        let mut current = self.lock();
        if current.generation != generation {
            return;
        }
        if self.stuck.load(Ordering::SeqCst) >= MAX_ABANDONED {
            tracing::warn!(uri = %self.uri, "libvirt is not answering and too many of its threads are stuck; not starting another");
            return;
        }
        let old = std::mem::replace(&mut *current, spawn(&self.uri, generation + 1, &self.stuck));
        // Counted before the old thread can see its flag: its end takes the count back.
        self.stuck.fetch_add(1, Ordering::SeqCst);
        old.abandoned.store(true, Ordering::SeqCst);
        tracing::warn!(uri = %self.uri, "libvirt did not answer in time; its connection moves to a new thread");
    }

    /// Threads given up on that are still stuck.
    #[cfg(test)]
    pub(super) fn stuck(&self) -> usize {
        self.stuck.load(Ordering::SeqCst)
    }
}

/// Starts a connection thread. One that cannot start leaves a closed channel: every send
/// to it fails, and the next call tries again.
fn spawn(uri: &str, generation: u64, stuck: &Arc<AtomicUsize>) -> Current {
    let (jobs, inbox) = mpsc::channel::<Job>();
    let abandoned = Arc::new(AtomicBool::new(false));
    let (thread_uri, gone, stuck) = (uri.to_owned(), abandoned.clone(), stuck.clone());
    let spawned = std::thread::Builder::new()
        .name(format!("libvirt {}", short(uri)))
        .spawn(move || {
            let mut session = Session {
                uri: thread_uri,
                conn: None,
                broken: None,
            };
            // Ends when the worker drops its sender: the host's handles are gone, or this
            // thread was abandoned and its stuck call has returned.
            while let Ok(job) = inbox.recv() {
                job(&mut session);
            }
            close(session.conn.take());
            if gone.load(Ordering::SeqCst) {
                stuck.fetch_sub(1, Ordering::SeqCst);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(%uri, error = %e, "cannot start a libvirt thread");
    }
    Current {
        jobs,
        generation,
        abandoned,
    }
}

/// A URI short enough for a thread name (15 bytes on Linux).
fn short(uri: &str) -> String {
    uri.rsplit('/').next().unwrap_or(uri).chars().take(7).collect()
}

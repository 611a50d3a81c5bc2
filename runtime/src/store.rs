//! The node's durable store: one redb file, written by a single writer thread that commits
//! every batch it has received since the last commit in one transaction (group commit).
//!
//! ```text
//!  callers ──Batch──▶ mpsc ──▶ writer thread: drain ▶ one log entry ▶ fsync ▶ apply ▶ reply
//!                                                                      (events fanned out)
//!  readers ──────────────────▶ read views (MVCC, never blocked by the writer)
//! ```
//!
//! Every group of batches is one entry of a Raft log ([`raft`]): it is acknowledged once
//! the entry is committed and applied. On a cluster of this node alone, the writer applies
//! the group to the tables itself, in one durable transaction, without an entry (see
//! `writer::Writer::alone`). A batch's events get their sequence numbers when the
//! entry is applied, so the event order is the log order (the same on every member), and an
//! event is fanned out only after it is durable. The store knows no domain: each crate
//! declares its own [`Table`]s.

mod apply;
mod batch;
mod error;
mod fault;
mod file;
mod index;
mod log_reads;
mod project;
pub mod raft;
mod view;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableDatabase, TableDefinition};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

#[cfg(test)]
use apply::Log;
pub use batch::{Batch, Op, Table, MAX_BATCH_BYTES};
pub use error::StoreError;
#[cfg(feature = "fault-injection")]
pub use fault::file_gates;
pub use fault::{
    gate_is_set, gates_in, hold_at, named_gates_in, set_gates, ArmedFaults, Fault, FaultHook, Hits, NamedGates,
    NodeFault, EXPERIMENTS,
};
pub(crate) use file::create;
pub use file::DEFAULT_CACHE_BYTES;
pub use project::{Change, Projection};
pub use view::{View, Window};

use crate::events::Event;

pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
pub(crate) use index::{EVENT_KINDS, EVENT_SUBJECTS};
/// Events kept for the live fan-out.
const LIVE_BUFFER: usize = 65_536;

/// The store's own bookkeeping: format version, node identity.
pub const META: Table = Table::new("meta");

/// How the store is run.
#[derive(Clone)]
pub struct StoreOptions {
    /// How many of the newest events the log keeps; 0 keeps all. Older ones are trimmed in
    /// the background, a tenth of the limit at a time.
    pub event_retention: u64,
    /// Asked about every batch before it is committed (tests).
    pub fault: Option<FaultHook>,
    /// This node's name and Raft timing.
    pub identity: raft::Identity,
    /// The tables' page cache, in bytes; the Raft log's is a quarter of it.
    pub cache_bytes: usize,
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("event_retention", &self.event_retention)
            .field("fault", &self.fault.is_some())
            .field("identity", &self.identity)
            .field("cache_bytes", &self.cache_bytes)
            .finish()
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            event_retention: 1_000_000,
            fault: None,
            identity: raft::Identity::default(),
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// A handle that does not keep the store open: for tasks that live as long as the Raft
/// runtime, which ends only once every [`Store`] is gone.
#[derive(Clone)]
pub struct WeakStore(std::sync::Weak<Inner>);

impl WeakStore {
    /// The store, while a [`Store`] somewhere still holds it.
    pub fn upgrade(&self) -> Option<Store> {
        self.0.upgrade().map(|inner| Store { inner })
    }
}

struct Inner {
    db: Arc<Database>,
    tx: mpsc::UnboundedSender<writer::Request>,
    live: broadcast::Sender<Arc<Event>>,
    health: watch::Receiver<Option<String>>,
    raft: raft::Raft,
    /// The runtime the Raft core runs on (owned by the writer thread).
    raft_runtime: tokio::runtime::Handle,
    transport: raft::TransportSlot,
    /// The condition this node's batches carry (see [`Store::fence`]).
    fence: std::sync::Mutex<Option<Op>>,
    shared: Arc<writer::Shared>,
    /// Forwarded groups handed to the Raft core, per origin (when this node leads).
    arrivals: raft::session::Arrivals,
    /// The tables as the state machine applies to them (see [`Store::project`]).
    tables: Arc<apply::Tables>,
    /// The node's name, as the cluster addresses it.
    node: String,
    /// Members of the clusters this one was recovered from: not heard (see
    /// [`raft::FORGOTTEN_IDS`]).
    forgotten: Arc<raft::ForgottenIds>,
    /// What this member heard of a stopping leader's successor.
    successions: raft::elect::Successions,
    /// The log's writer, which answers how far the log is durable (see `raft::log`).
    log: raft::log::Durable,
    /// The pre-votes this member won and lost (see `raft::prevote`).
    pre_votes: watch::Sender<raft::PreVotes>,
    /// Whether this member was away (did not run) a moment ago (see `raft::prevote`).
    presence: raft::prevote::Presence,
    /// Held while this member (the leader) changes the membership: openraft takes one
    /// change at a time and refuses a second while the first is under way.
    changing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// A commit that was handed to the writer; await it to know the batch is durable.
#[derive(Debug)]
pub struct Ticket {
    rx: oneshot::Receiver<Result<Vec<u64>, StoreError>>,
    health: watch::Receiver<Option<String>>,
}

impl Ticket {
    /// Waits until the batch is committed and returns the sequence numbers its events got.
    pub async fn durable(self) -> Result<Vec<u64>, StoreError> {
        match self.rx.await {
            Ok(outcome) => outcome,
            Err(_) => Err(match self.health.borrow().clone() {
                Some(reason) => StoreError::Failed(reason),
                None => StoreError::Closed,
            }),
        }
    }
}

impl Store {
    /// Opens (or creates) the database at `path` with default options.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, StoreOptions::default())
    }

    /// Opens (or creates) the database at `path` (readable by its owner only) and starts its
    /// writer thread.
    pub fn open_with(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let db = create(path, options.cache_bytes)?;
        // The Raft log in files of its own: an append then writes only the log's records, not
        // the tables' pages every apply left dirty (see `raft::log`).
        let wal = raft::log::files::open(path, &db)?;
        let txn = db.begin_write().map_err(StoreError::db)?;
        txn.open_table(EVENTS).map_err(StoreError::db)?;
        txn.open_table(EVENT_KINDS).map_err(StoreError::db)?;
        index::backfill_subjects(&txn)?;
        txn.commit().map_err(StoreError::db)?;
        // Deep enough that subscribers who fall a little behind still read from memory; one
        // further behind catches up from the log.
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        let (tx, rx) = mpsc::unbounded_channel();
        let (health_tx, health) = watch::channel(None);
        let transport = raft::TransportSlot::default();
        let tables = Arc::new(apply::Tables::open(db.clone(), live.clone(), options.event_retention)?);
        // Before the log applies anything: the Raft core may hear from a member at once.
        let forgotten = Arc::new(raft::ForgottenIds::default());
        tables.project(forgotten.clone())?;
        let (started_tx, started) = std::sync::mpsc::channel();
        let hold = options.identity.timing.hold_unawaited;
        let forward_within = options.identity.timing.forward_within;
        let node = options.identity.name.clone();
        let applied_tables = tables.clone();
        let start = {
            let (tables, transport) = (tables.clone(), transport.clone());
            let files = raft::Files {
                log: wal,
                tables: path.to_path_buf(),
                snapshots: raft::snapshot_dir(path),
            };
            move || -> Result<(tokio::runtime::Runtime, (raft::Raft, raft::log::Durable)), StoreError> {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("troupe-raft")
                    .enable_all()
                    .build()
                    .map_err(StoreError::db)?;
                let raft = rt.block_on(raft::start(tables, files, &options.identity, transport))?;
                Ok((rt, raft))
            }
        };
        let fault = options.fault.clone();
        let writer_transport = transport.clone();
        let shared = Arc::new(writer::Shared::default());
        let writer_shared = shared.clone();
        std::thread::Builder::new()
            .name("troupe-store-writer".into())
            .spawn(move || match start() {
                Ok((rt, (raft, log))) => {
                    let _ = started_tx.send(Ok((raft.clone(), log, rt.handle().clone())));
                    writer::Writer {
                        rx,
                        raft,
                        transport: writer_transport,
                        health: health_tx,
                        fault,
                        tables,
                        shared: writer_shared,
                        hold,
                        forward_within,
                    }
                    .run(rt);
                }
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                }
            })
            .map_err(StoreError::db)?;
        let (raft, log, raft_runtime) = started
            .recv()
            .map_err(|_| StoreError::Database("the store writer did not start".into()))??;
        let store = Self {
            inner: Arc::new(Inner {
                db,
                tx,
                live,
                health,
                raft,
                raft_runtime,
                transport,
                fence: Default::default(),
                shared,
                arrivals: Default::default(),
                tables: applied_tables,
                node,
                forgotten,
                successions: Default::default(),
                log,
                pre_votes: Default::default(),
                presence: Default::default(),
                changing: Default::default(),
            }),
        };
        store.raft_runtime().spawn(raft::prevote::keep_timer(store.downgrade()));
        Ok(store)
    }

    /// The name of the node this store is (the cluster's name for it).
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Makes every batch handed over from now on conditional on `table[key]` holding `value`
    /// (`None`: holding nothing; see [`Op::Require`]): the cluster refuses the writes of a
    /// node it has declared down, by the fencing epoch it gave it. `None` lifts the condition.
    /// A batch carries the fence of the moment it was handed over, not of the moment the
    /// writer takes it: a write a node decided before it was fenced stays refused even when
    /// it reaches the writer after the node took its new epoch.
    pub fn fence(&self, condition: Option<(Table, String, Option<Vec<u8>>)>) {
        let op = condition.map(|(table, key, value)| Op::Require { table, key, value });
        *self.inner.fence.lock().unwrap_or_else(|p| p.into_inner()) = op;
    }

    /// This node's member of the replicated log (membership, metrics, leadership).
    pub fn raft(&self) -> &raft::Raft {
        &self.inner.raft
    }

    /// Tells the store this node left the cluster (its member record says so): its writes
    /// are refused at once from now on (`StoreError::Left`), for they would wait for a leader
    /// that never takes them. The first telling says so in the log, once, whichever part of
    /// the node noticed first (the lease keeper, a readiness probe, the stop).
    pub fn left_the_cluster(&self) {
        if !self.inner.shared.left.swap(true, std::sync::atomic::Ordering::SeqCst) {
            // The node runs on, serving nothing, until its process is stopped (a log that
            // ended at "leaving the cluster" left its operator waiting).
            tracing::warn!(
                node = %self.node(),
                "this node left the cluster: it serves no request and runs no work from now; stop its process \
                 (a fresh data dir and --join make it a member again)"
            );
        }
    }

    /// Whether [`Self::left_the_cluster`] was said.
    pub fn has_left(&self) -> bool {
        self.inner.shared.left.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether this node leads a cluster of several voters of which no majority answers it
    /// now (the others stopped, or are cut off), asked with one read round at most
    /// `within`. A node alone, or one that does not lead, says no.
    pub async fn leads_without_a_majority(&self, within: std::time::Duration) -> bool {
        let (leads, voters) = {
            let metrics = self.raft().metrics();
            let m = metrics.borrow();
            let voters = m.membership_config.membership().voter_ids().count();
            (m.current_leader == Some(m.id), voters)
        };
        leads && voters > 1 && !matches!(tokio::time::timeout(within, self.linearize()).await, Ok(Ok(())))
    }

    /// The names of the cluster's voters other than this node, and how many voters a
    /// majority is.
    pub fn other_voters(&self) -> (Vec<String>, usize) {
        let metrics = self.raft().metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let names = voters
            .iter()
            .filter(|id| **id != m.id)
            .filter_map(|id| membership.get_node(id).map(|n| n.addr.clone()))
            .collect();
        (names, voters.len() / 2 + 1)
    }

    /// Tells the store this node stops with no majority up to take its writes: they are
    /// refused at once from now on (`StoreError::Alone`) instead of each waiting for a
    /// majority that will not come before the node is gone.
    pub fn stop_unwritten(&self) {
        self.inner.shared.alone.send_replace(true);
    }

    /// Stops this node's Raft member: it neither votes, stands nor takes entries any more,
    /// and every write from now on is answered `Closed`. For a node about to stop, once its last writes
    /// committed and before its link to the other members closes. A leader first takes no
    /// more forwarded writes and lets its voters catch up, then names its successor to them
    /// (`raft::elect`).
    pub async fn stop_raft(&self) {
        self.inner
            .shared
            .stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let leading = self.let_voters_catch_up().await;
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::debug!(error = %e, "the Raft member had stopped already");
        }
        if let Some(leaving) = leading {
            self.name_successor(leaving).await;
        }
    }

    /// Whether the node stopped its Raft member ([`Store::stop_raft`]).
    pub fn raft_stopped(&self) -> bool {
        self.inner.shared.stopped.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A handle that does not keep the store open.
    pub fn downgrade(&self) -> WeakStore {
        WeakStore(Arc::downgrade(&self.inner))
    }

    /// The runtime this node's Raft core runs on: a member's messages served there reach
    /// the core without crossing to another thread.
    pub fn raft_runtime(&self) -> &tokio::runtime::Handle {
        &self.inner.raft_runtime
    }

    /// Where the node's cluster puts the transport that carries Raft's messages.
    pub fn transport(&self) -> &raft::TransportSlot {
        &self.inner.transport
    }

    /// Hands a batch to the writer without waiting; the returned ticket resolves once it is
    /// durable. Batches are committed in the order they were handed over.
    pub fn submit(&self, batch: Batch) -> Ticket {
        let (done, rx) = oneshot::channel();
        // A closed writer drops `done`, and the ticket then reports why.
        let _ = self.inner.tx.send(self.request(batch, writer::Done::Reply(done)));
        Ticket {
            rx,
            health: self.inner.health.clone(),
        }
    }

    /// Hands a batch to the writer without waiting for it; `failed` is called (on the writer
    /// thread: it must not block) if the batch does not become durable. For writers that go
    /// on without waiting but must learn that memory and disk parted.
    pub fn submit_watched(&self, batch: Batch, failed: impl FnOnce(StoreError) + Send + 'static) {
        let request = self.request(batch, writer::Done::OnFailure(Box::new(failed)));
        if let Err(refused) = self.inner.tx.send(request) {
            let reason = self.failure().map_or(StoreError::Closed, StoreError::Failed);
            refused.0.done.send(Err(reason));
        }
    }

    /// A batch for the writer, with the fence of this moment (see [`Store::fence`]). A
    /// leader's decision ([`Batch::led_in`]) carries none: the term it was decided in fences
    /// it, and a leader whose record the previous one made DOWN must still judge itself UP
    /// again (under its old epoch, its judgement was refused for ever, and no member's
    /// state changed while it led).
    fn request(&self, batch: Batch, done: writer::Done) -> writer::Request {
        let fence = match batch.is_empty() || batch.is_led() {
            true => None,
            false => self.inner.fence.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        };
        writer::Request {
            batch,
            fence,
            done,
            at: tokio::time::Instant::now(),
        }
    }

    /// Writes a batch and waits until it is durable.
    pub async fn write(&self, batch: Batch) -> Result<Vec<u64>, StoreError> {
        self.submit(batch).durable().await
    }

    /// Waits until everything handed over so far is durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.write(Batch::default()).await.map(|_| ())
    }

    /// Makes every state this node applied durable in its tables' file: applies of the
    /// replicated log are made durable only now and then (see `raft::machine`), the log
    /// holding what a crash would lose. For a node about to stop, once its Raft member
    /// stopped: the tables' file is left as a closed database leaves it, so the next start
    /// opens it without a repair (see [`apply::persist_for_restart`]).
    pub async fn persist(&self) -> Result<(), StoreError> {
        // The log's last writes first: nothing is written to its files after this one.
        self.inner.log.everything().await?;
        let db = self.inner.db.clone();
        raft::blocking(move || apply::persist_for_restart(&db)).await
    }

    /// Keeps `projection` in memory from now on, as the state machine drives it: built from
    /// the tables now, following each write as it is applied, and built again after a
    /// snapshot replaced the tables (see [`project`]).
    pub async fn project(&self, projection: Arc<dyn Projection>) -> Result<(), StoreError> {
        let tables = self.inner.tables.clone();
        tokio::task::spawn_blocking(move || tables.project(projection))
            .await
            .map_err(|e| StoreError::Database(format!("registering a projection failed: {e}")))?
    }

    /// `None` while the store works; the reason once it has failed.
    pub fn failure(&self) -> Option<String> {
        self.inner.health.borrow().clone()
    }

    /// Resolves with the reason once the store has failed.
    pub async fn failed(&self) -> String {
        let mut health = self.inner.health.clone();
        loop {
            if let Some(reason) = health.borrow_and_update().clone() {
                return reason;
            }
            if health.changed().await.is_err() {
                // The writer is gone without a word: it can no longer fail either.
                return std::future::pending().await;
            }
        }
    }

    /// Live events, each sent after its commit. Use [`crate::events::subscribe`] for a stream
    /// that also replays the log.
    pub fn live(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.live.subscribe()
    }

    /// Runs `f` on a consistent read view, off the async threads.
    pub async fn view<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&View<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.inner.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(StoreError::db)?;
            f(&View::new(&txn))
        })
        .await
        .map_err(|e| StoreError::Database(format!("read task failed: {e}")))?
    }

    /// `f` over a read transaction on the caller's thread: for a read of a few keys, which
    /// costs less than the hand-off to a blocking thread [`Store::view`] makes (a wake-up
    /// of that thread and of the caller's task). Never for a scan the caller does not bound.
    pub fn view_now<T>(&self, f: impl FnOnce(&View<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let txn = self.inner.db.begin_read().map_err(StoreError::db)?;
        f(&View::new(&txn))
    }

    /// Reads one value.
    pub async fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_owned();
        self.view(move |v| v.get(table, &key)).await
    }

    /// Reads up to `limit` entries with keys after `after` (all when `None`), in key order,
    /// keeping those `keep` accepts.
    pub async fn scan<F>(
        &self,
        table: Table,
        after: Option<String>,
        limit: usize,
        keep: F,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>
    where
        F: Fn(&[u8]) -> bool + Send + 'static,
    {
        self.view(move |v| {
            let mut out = Vec::new();
            v.scan(table, after.as_deref(), |k, value| {
                if keep(value) {
                    out.push((k.to_owned(), value.to_vec()));
                }
                Ok(out.len() < limit)
            })?;
            Ok(out)
        })
        .await
    }

    /// The last log entry this node applied (what a mutation's answer carries as its
    /// `commitIndex`).
    pub fn applied_index(&self) -> u64 {
        self.status().commit_index
    }

    /// Waits, for at most `within`, until this node has applied the log entry `index`
    /// (committed through any member); whether it has.
    pub async fn applied_at_least(&self, index: u64, within: Duration) -> Result<bool, StoreError> {
        if self.applied_index() >= index {
            return Ok(true);
        }
        let waited = self
            .raft()
            .wait(Some(within))
            .applied_index_at_least(Some(index), "a client's commit index is applied here")
            .await;
        Ok(waited.is_ok() || self.applied_index() >= index)
    }
}

#[cfg(test)]
mod tests;

//! How the supervision tree (re)creates agents: one [`AgentChild`] per agent, and the
//! [`AgentsChild`] that rebuilds the node's agents supervisor from the agents it owns.
//!
//! An `AgentChild` is also the agent's handle on this node (found through [`Handles`]): it
//! holds the spec the next start uses, the status, and the actor running now, and it is the
//! one place that writes the agent's status, so every status change is also an event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use serde_json::{json, Value};
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{Batch, Op, Store, Ticket};
use troupe_runtime::supervision::{ChildEvent, ChildSpec, Intensity, Shutdown};

use super::actor::{AgentActor, AgentMsg, Reporter};
use super::ladder::{self, Ladder};
use super::secrets::Secrets;
use super::spec::{AgentSpec, BackendSpec};
use super::status::{AgentState, AgentStatus};
use super::Slots;
use crate::scheduler::report::Report;
use crate::tables::AGENT_STATUS;

mod agents;

pub use agents::AgentsChild;

/// What every agent's child spec shares.
#[derive(Debug, Clone)]
pub struct AgentPolicy {
    /// Each agent's own restart intensity (unless its spec sets one): past it, the agent is
    /// rolled back to its last checkpoint once, then FAILED.
    pub intensity: Intensity,
    pub shutdown: Shutdown,
    /// How long a graceful stop waits for running tasks.
    pub stop_grace: Duration,
    pub checkpoints_kept: usize,
    /// What agents may use as API keys.
    pub secrets: Arc<Secrets>,
    /// What a model's tokens cost (`llm_prices`).
    pub prices: Arc<super::backend::Prices>,
    /// Where exec and process agents' lines are kept.
    pub logs: super::LogBook,
    /// Where LLM agents' replies stream while they come.
    pub deltas: super::LlmDeltas,
    /// The node's HTTP client, shared by its agents.
    pub http: reqwest::Client,
}

impl AgentPolicy {
    /// What every agent of a node started with `config`, on `store`, shares.
    pub fn of_node(config: &troupe_runtime::config::Config, store: &Store) -> Self {
        Self {
            intensity: Intensity {
                max_restarts: config.agent_max_restarts,
                window: config.agent_restart_window,
            },
            shutdown: Shutdown::Timeout(Duration::from_secs(10)),
            stop_grace: config.agent_stop_grace,
            checkpoints_kept: config.agent_checkpoints_kept,
            secrets: Arc::new(Secrets::new(
                config.secret_env.clone(),
                config.secret_dirs.clone(),
                // The node's own secrets: its data dir (store, admin token, cookie) and its
                // cookie file wherever it is.
                std::iter::once(config.data_dir.clone())
                    .chain(config.cookie_file.clone())
                    .collect(),
            )),
            prices: Arc::new(config.llm_prices.clone()),
            logs: super::LogBook::start(store),
            deltas: Default::default(),
            http: super::http_client(),
        }
    }
}

/// How long an agent's start may take when its backend sets no wait of its own.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Added to a process agent's `readyTimeoutMs`: the restore of a checkpoint after `ready`
/// (which may take 10 s) and the actor's own start.
const START_MARGIN: Duration = Duration::from_secs(15);

/// How long the supervisor gives an agent's start: a process agent may wait its own
/// `readyTimeoutMs` for `ready`, so its start may take that long, and more.
pub fn start_timeout(backend: &BackendSpec) -> Duration {
    match backend {
        BackendSpec::Process(p) => Duration::from_millis(p.ready_timeout_ms) + START_MARGIN,
        // Its server starts, initialises and lists its tools within 30 s each.
        BackendSpec::Mcp(_) => Duration::from_secs(60) + START_MARGIN,
        _ => START_TIMEOUT,
    }
}

/// This node's agents by id.
#[derive(Clone, Default)]
pub struct Handles(Arc<RwLock<HashMap<String, Arc<AgentChild>>>>);

impl Handles {
    pub fn get(&self, id: &str) -> Option<Arc<AgentChild>> {
        self.0.read().ok()?.get(id).cloned()
    }

    pub fn insert(&self, child: Arc<AgentChild>) {
        if let Ok(mut map) = self.0.write() {
            map.insert(child.id().to_owned(), child);
        }
    }

    /// The handle already kept for the agent, else `child`, now kept.
    pub fn get_or_insert(&self, child: Arc<AgentChild>) -> Arc<AgentChild> {
        match self.0.write() {
            Ok(mut map) => map.entry(child.id().to_owned()).or_insert(child).clone(),
            Err(_) => child,
        }
    }

    pub fn remove(&self, id: &str) {
        if let Ok(mut map) = self.0.write() {
            map.remove(id);
        }
    }

    /// Every agent of this node whose actor runs now.
    pub fn running(&self) -> Vec<(String, ActorRef<AgentMsg>)> {
        let Ok(map) = self.0.read() else { return Vec::new() };
        map.iter()
            .filter_map(|(id, h)| h.actor().map(|a| (id.clone(), a)))
            .collect()
    }
}

/// A checkpoint to put back at the agent's next start.
#[derive(Debug, Clone)]
pub struct Restore {
    pub checkpoint: String,
    pub state: Value,
}

pub struct AgentChild {
    id: String,
    spec: Mutex<Arc<AgentSpec>>,
    status: Mutex<AgentStatus>,
    /// The actor running now, so a down report names the right incarnation.
    current: Mutex<Option<ActorRef<AgentMsg>>>,
    /// The newest checkpoint: the recovery ladder's second rung restores it.
    latest_checkpoint: Mutex<Option<String>>,
    /// Set when the ladder chose a rollback: the next start restores this.
    restore: Mutex<Option<Restore>>,
    /// The recovery ladder's memory (whether its rollback rung was used).
    ladder: Mutex<Ladder>,
    slots: Slots,
    store: Store,
    policy: AgentPolicy,
    /// Held by each mutation on the agent, so two of them never interleave.
    ops: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AgentChild {
    pub fn new(spec: AgentSpec, status: AgentStatus, slots: Slots, store: Store, policy: AgentPolicy) -> Self {
        Self {
            id: spec.id.clone(),
            spec: Mutex::new(Arc::new(spec)),
            status: Mutex::new(status),
            current: Mutex::new(None),
            latest_checkpoint: Mutex::new(None),
            restore: Mutex::new(None),
            ladder: Mutex::new(Ladder::default()),
            slots,
            store,
            policy,
            ops: tokio::sync::Mutex::new(()),
        }
    }

    /// Waits for the agent's other mutations to finish; hold the guard while acting.
    pub async fn serialize(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.ops.lock().await
    }

    pub fn status(&self) -> AgentStatus {
        lock(&self.status).clone()
    }

    pub fn spec(&self) -> Arc<AgentSpec> {
        lock(&self.spec).clone()
    }

    /// The spec the next start uses (an update, a pause wish).
    pub fn set_spec(&self, spec: AgentSpec) {
        *lock(&self.spec) = Arc::new(spec);
    }

    /// The actor running the agent now, if any.
    pub fn actor(&self) -> Option<ActorRef<AgentMsg>> {
        lock(&self.current)
            .clone()
            .filter(|a| a.get_status() == ractor::ActorStatus::Running)
    }

    pub fn set_latest_checkpoint(&self, id: Option<String>) {
        *lock(&self.latest_checkpoint) = id;
    }

    /// The newest checkpoint, if it has one.
    pub fn latest_checkpoint(&self) -> Option<String> {
        lock(&self.latest_checkpoint).clone()
    }

    /// Restores `restore` at the next start (a rollback of a stopped agent).
    pub fn restore_at_next_start(&self, restore: Restore) {
        *lock(&self.restore) = Some(restore);
    }

    /// Moves the agent to `state` and records it with an event of `kind`; a `reason` becomes
    /// its last error when the state is a bad one.
    pub fn report(&self, state: AgentState, kind: &str, reason: Option<String>, data: Value) -> Ticket {
        let mut status = lock(&self.status);
        status.state = state;
        if matches!(
            state,
            AgentState::Unhealthy | AgentState::Failed | AgentState::Recovering
        ) {
            status.last_error = reason.clone().or(status.last_error.take());
        }
        status.updated_at = troupe_runtime::clock::now();
        let mut data = data;
        data["state"] = json!(state.as_str());
        if let Some(reason) = reason {
            data["reason"] = json!(reason);
        }
        let mut batch = Batch::new().event(NewEvent::new(kind, Some(self.id.clone()), data));
        push_status(&mut batch, &self.id, &status);
        // Submitted under the lock: status records reach the writer in the order they change.
        self.store.submit(batch)
    }

    /// Records the capabilities the agent's backend found (an MCP server's tools) in its
    /// status, with an `AGENT_CAPABILITIES_CHANGED` event when they changed.
    pub fn discovered(&self, found: Vec<String>) -> Option<Ticket> {
        let mut status = lock(&self.status);
        if status.discovered == found {
            return None;
        }
        status.discovered = found.clone();
        status.updated_at = troupe_runtime::clock::now();
        let data = json!({ "discovered": found });
        let mut batch = Batch::new().event(NewEvent::new("AGENT_CAPABILITIES_CHANGED", Some(self.id.clone()), data));
        push_status(&mut batch, &self.id, &status);
        Some(self.store.submit(batch))
    }

    fn discoverer(self: &Arc<Self>) -> super::actor::Discoverer {
        let me = Arc::downgrade(self);
        Arc::new(move |found| {
            if let Some(me) = me.upgrade() {
                drop(me.discovered(found));
            }
        })
    }

    fn reporter(self: &Arc<Self>) -> Reporter {
        let me = Arc::downgrade(self);
        Arc::new(move |state, kind, reason| {
            if let Some(me) = me.upgrade() {
                drop(me.report(state, kind, reason, json!({})));
            }
        })
    }
}

fn push_status(batch: &mut Batch, id: &str, status: &AgentStatus) {
    match troupe_runtime::codec::encode(status) {
        Ok(bytes) => batch.push(Op::Put {
            table: AGENT_STATUS,
            key: id.to_owned(),
            value: bytes,
        }),
        Err(e) => tracing::error!(agent = %id, error = %e, "cannot encode agent status"),
    }
}

impl ChildSpec for AgentChild {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &str {
        "AGENT"
    }

    fn intensity(&self) -> Option<Intensity> {
        Some(ladder::intensity(self.spec().restart, self.policy.intensity))
    }

    fn shutdown(&self) -> Shutdown {
        self.policy.shutdown
    }

    fn start_timeout(&self) -> Duration {
        start_timeout(&self.spec().backend)
    }

    fn retries_a_failed_start(&self) -> bool {
        // As after a crash: the agent's restart limit, then its checkpoint, then FAILED.
        true
    }

    fn start(self: Arc<Self>, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>> {
        Box::pin(async move {
            let scheduler = self.slots.scheduler.get().ok_or("the scheduler is not running")?;
            let actor = AgentActor {
                spec: self.spec(),
                reports: scheduler.get_derived(),
                report: self.reporter(),
                discovered: self.discoverer(),
                outbox: self.slots.outbox.get().cloned().map(super::carrier),
                lent: super::backend::Lent {
                    secrets: self.policy.secrets.clone(),
                    store: Some(self.store.clone()),
                    prices: self.policy.prices.clone(),
                    logs: self.policy.logs.clone(),
                    deltas: self.policy.deltas.clone(),
                    http: Some(self.policy.http.clone()),
                },
            };
            let mut restore = lock(&self.restore).take();
            if let Some(r) = restore.as_mut().filter(|r| r.state.is_null()) {
                r.state = super::checkpoints::load(&self.store, &self.id, &r.checkpoint)
                    .await?
                    .ok_or_else(|| format!("checkpoint {} of agent {} is gone", r.checkpoint, self.id))?
                    .state;
            }
            let (agent, _) = Actor::spawn_linked(None, actor, restore.clone(), supervisor)
                .await
                .map_err(troupe_runtime::supervision::start_failed)?;
            if let Some(r) = restore {
                let data = json!({ "checkpointId": r.checkpoint });
                drop(self.report(self.status().state, "AGENT_ROLLED_BACK", None, data));
            }
            *lock(&self.current) = Some(agent.clone());
            Ok(agent.get_cell())
        })
    }

    fn one_more_chance(&self) -> bool {
        let latest = lock(&self.latest_checkpoint).clone();
        let Some(checkpoint) = lock(&self.ladder).spent(latest.as_deref()) else {
            return false;
        };
        tracing::warn!(agent = %self.id, %checkpoint, "restart intensity exceeded: rolling back to the last checkpoint");
        // The state itself is read by the start, which runs on a job of its own.
        *lock(&self.restore) = Some(Restore {
            checkpoint,
            state: Value::Null,
        });
        true
    }

    fn lifecycle(&self, event: &ChildEvent, batch: &mut Batch) {
        let desired = self.spec().desired;
        let mut status = lock(&self.status);
        let step = lock(&self.ladder).event(event, desired, &status, troupe_runtime::clock::now());
        *status = step.status;
        if let Some(alert) = step.alert {
            batch.push(Op::Event(NewEvent::new("AGENT_ALERT", Some(self.id.clone()), alert)));
        }
        let incarnation = lock(&self.current).as_ref().map(|a| a.get_id().pid());
        if let (Some(down), Some(scheduler), Some(incarnation)) = (step.down, self.slots.scheduler.get(), incarnation) {
            let report = Report::Down {
                id: self.id.clone(),
                incarnation,
                down,
            };
            let _ = scheduler.cast(report.into());
        }
        // Submitted here, under the lock, rather than in the supervisor's batch: every status
        // record reaches the writer in the order the status changed (an agent's own report
        // may come between), and before the supervisor's event about it.
        let mut own = Batch::new();
        push_status(&mut own, &self.id, &status);
        drop(self.store.submit(own));
    }

    fn event_data(&self) -> serde_json::Value {
        let spec = self.spec();
        let restarts = lock(&self.status).restarts;
        json!({ "name": spec.name, "node": spec.node, "agentRestarts": restarts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::spec::{BuiltinKind, ProcessBackend};

    #[test]
    fn a_process_agent_may_take_its_ready_timeout_and_more_to_start() {
        let process = |ready_timeout_ms| {
            BackendSpec::Process(ProcessBackend {
                command: vec!["agent".into()],
                env: vec![],
                timeout_ms: None,
                heartbeat_ms: ProcessBackend::DEFAULT_HEARTBEAT_MS,
                missed_heartbeats: ProcessBackend::DEFAULT_MISSED,
                ready_timeout_ms,
            })
        };
        assert!(start_timeout(&process(60_000)) > Duration::from_secs(60));
        assert!(start_timeout(&process(600_000)) > Duration::from_secs(600));
        assert!(start_timeout(&process(10_000)) > Duration::from_secs(10));
        assert_eq!(start_timeout(&BackendSpec::Builtin(BuiltinKind::Echo)), START_TIMEOUT);
    }
}

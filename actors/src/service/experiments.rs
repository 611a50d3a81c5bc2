//! Fault experiments (admin only, on a node started with `--fault-injection`): faults picked
//! by selectors over the supervision tree are injected, held while the experiment runs (and
//! while its lease is renewed), reverted, and judged: each injection's expected effects, as
//! the target's supervisor predicts them from its strategy and intensity, against the events
//! observed, with the time to detect and to recover, then invariants over the tree and a
//! verdict.
//!
//! ```text
//!   startExperiment ─▶ ACTIVE (faults armed) ─duration / stop / lease / halt─▶ RECOVERING
//!        │ dryRun: the targets and expected effects only          (gates reverted)
//!        ▼                                                              │ recovery, invariants
//!   INVALID_INPUT (nothing matched), CONFLICT (refused)        PASSED | FAILED | ABORTED
//! ```
//!
//! Experiments and their gates live in the memory of the node each runs on: a restart clears
//! every gate (and its experiments are then recorded ABORTED). Their records are replicated
//! (see `kept`), so every node reads every experiment.

mod halt;
mod inject;
mod invariants;
mod kept;
mod model;
mod params;
mod reads;
mod remote;
mod rounds;
mod run;
pub mod select;
mod spread;
#[cfg(test)]
mod tests;

pub use model::*;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::{watch, Notify};
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{ArmedFaults, Batch, NodeFault, Store};

use self::inject::Armed;
use self::select::Candidate;
use crate::error::ApiError;
use crate::service::Api;

struct Record {
    view: watch::Sender<Experiment>,
    gates: Vec<(FaultGate, Armed)>,
    lease_until: Option<tokio::time::Instant>,
    lease: Option<Duration>,
    /// Why it was told to end before its duration (stopExperiment, haltAllFaults, the lease).
    end: Option<End>,
    /// The cluster recorded it ABORTED while this node was lost: that record is what every
    /// node shows, this one included.
    overtaken: bool,
    wake: Arc<Notify>,
}

/// An end asked before the duration ran out.
#[derive(Debug, Clone)]
pub(crate) struct End {
    why: String,
    /// The kill switch or a lapsed lease (ABORTED), not an ordinary stop (judged as usual).
    aborted: bool,
}

/// How long a start waits for the experiment's first record to be written.
const RECORDED_WITHIN: Duration = Duration::from_secs(5);
/// How many experiments a node remembers (the oldest ended ones go first).
const KEPT: usize = 200;
/// How long past the experiment's hold a node fault armed on a peer stays armed when the
/// node that armed it never comes back to heal it (it died, or is cut off for good).
pub(super) const GATE_GRACE: Duration = Duration::from_secs(10);

/// This node's experiments and the gates they hold.
#[derive(Clone)]
pub struct Experiments {
    pub(crate) enabled: bool,
    pub(crate) max_targets: usize,
    pub(crate) max_duration: Duration,
    records: Arc<Mutex<HashMap<String, Record>>>,
    store: Store,
    /// The node faults armed in this node's memory (by its experiments or a peer's).
    pub(crate) armed: ArmedFaults,
    /// The node's API, for experiments a peer starts or asks about here (bound at start).
    api: Arc<std::sync::OnceLock<Api>>,
    /// Wakes the readers following experiments' records as writes to them are applied.
    watch: crate::swarm::Watch,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Experiments {
    pub fn new(enabled: bool, max_targets: usize, max_duration: Duration, store: Store, armed: ArmedFaults) -> Self {
        Self {
            enabled,
            max_targets,
            max_duration,
            records: Arc::default(),
            store,
            armed,
            api: Arc::default(),
            watch: Default::default(),
        }
    }

    /// Binds the node's API once it is made.
    pub(crate) fn bind(&self, api: Api) {
        let _ = self.api.set(api);
    }

    /// The node's API, for a peer's request.
    pub(crate) fn api(&self) -> Result<Api, ApiError> {
        self.api
            .get()
            .cloned()
            .ok_or_else(|| ApiError::Unavailable("this node is still starting".into()))
    }

    /// Arms a node fault here, for at most `for_` (asked by this node's experiment or a
    /// peer's: a peer's gate expires on its own even if the peer never comes back to heal it).
    pub(crate) fn arm_here(&self, id: &str, fault: NodeFault, for_: Duration) -> Result<(), ApiError> {
        self.ensure_enabled()?;
        self.armed.arm(id, fault, std::time::Instant::now() + for_);
        Ok(())
    }

    /// Records that an injection recovered through this node's store: the write committing
    /// is the proof that the store takes writes again. An experiment's records pass the
    /// store's gates, so the injection's own gate must be gone first.
    pub(crate) async fn writable_here(&self, experiment: &str, injection: &str) -> Result<DateTime<Utc>, ApiError> {
        if self.armed.armed().iter().any(|(id, _, _)| id == injection) {
            return Err(ApiError::Unavailable(format!(
                "{injection} is still armed on this node"
            )));
        }
        let event = NewEvent::new(
            "RECOVERY_OBSERVED",
            Some(experiment.to_owned()),
            json!({ "experiment": experiment, "injection": injection, "store": "writable" }),
        );
        self.store.write(Batch::new().event(event)).await?;
        Ok(Utc::now())
    }

    /// Writes an experiment's event; a failure to record is logged, not fatal to the run.
    async fn record(&self, event: NewEvent) {
        if let Err(e) = self.store.write(Batch::new().event(event)).await {
            tracing::warn!(error = %e, "an experiment's event was not recorded");
        }
    }

    /// Undoes one armed fault and records it. A node or link fault's first hit is when it
    /// took effect, and for a store or message fault when it was detected (the first write
    /// it refused, the first message it held or lost).
    async fn revert(&self, experiment: &str, gate: &FaultGate, armed: Armed) {
        let undone = inject::undo(armed).await;
        let now = Utc::now();
        self.update(experiment, |e| {
            if let Some(i) = e.injections.iter_mut().find(|i| i.id == gate.injection) {
                i.reverted_at = Some(now);
                if let Some(first) = undone.hits.first {
                    i.effective_at.get_or_insert(first);
                    if i.action.reaches_store() || i.action.reaches_messages() {
                        i.time_to_detect_ms
                            .get_or_insert((first - i.injected_at).num_milliseconds().max(0));
                    }
                }
            }
        });
        self.record(NewEvent::new(
            "FAULT_REVERTED",
            Some(gate.target.clone()),
            json!({
                "experiment": experiment,
                "injection": gate.injection,
                "action": format!("{:?}", gate.action),
                "hits": undone.hits.hits,
                "unhealed": undone.unhealed,
            }),
        ))
        .await;
    }

    fn ensure_enabled(&self) -> Result<(), ApiError> {
        if self.enabled {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "fault injection is disabled on this node; start it with --fault-injection".into(),
            ))
        }
    }

    fn update(&self, id: &str, change: impl FnOnce(&mut Experiment)) {
        if let Some(r) = lock(&self.records).get(id) {
            r.view.send_modify(change);
        }
    }

    /// Keeps memory bounded: past [`KEPT`] experiments, the oldest ended ones are forgotten.
    fn forget_old(&self) {
        let mut records = lock(&self.records);
        if records.len() < KEPT {
            return;
        }
        let mut ended: Vec<String> = records
            .iter()
            .filter(|(_, r)| r.view.borrow().state.is_final())
            .map(|(id, _)| id.clone())
            .collect();
        // Ids are UUIDv7: their order is their start order.
        ended.sort();
        for id in ended.into_iter().take(records.len() + 1 - KEPT) {
            records.remove(&id);
        }
    }

    /// The children this node's other experiments hit or expected to restart, of those
    /// not ended before `since`.
    fn touched_by_others(&self, id: &str, since: DateTime<Utc>) -> std::collections::BTreeSet<String> {
        let records = lock(&self.records);
        let others = records
            .iter()
            .filter(|(other, _)| *other != id)
            .map(|(_, r)| r.view.borrow());
        others
            .filter(|e| e.finished_at.is_none_or(|f| f >= since))
            .flat_map(|e| {
                e.injections
                    .iter()
                    .flat_map(|i| std::iter::once(i.target.clone()).chain(i.expected.iter().map(|x| x.id.clone())))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Tells experiment `id` of this node to end now (unless told already, or ended);
    /// false when this node runs no such experiment.
    fn end_now(&self, id: &str, end: End) -> bool {
        let mut records = lock(&self.records);
        let Some(r) = records.get_mut(id) else {
            return false;
        };
        if r.end.is_none() && !r.view.borrow().state.is_final() {
            r.end = Some(end);
        }
        r.wake.notify_one();
        true
    }

    fn current(&self, id: &str) -> Option<Experiment> {
        lock(&self.records).get(id).map(|r| r.view.borrow().clone())
    }
}

impl Api {
    /// Resolves the targets, predicts the effects, injects (unless a dry run) and answers
    /// the experiment as it stands; the rest runs on. An experiment whose faults select in
    /// another node's tree is started there; one whose faults select in several nodes'
    /// trees is started in parts, one per node (see `spread`).
    pub async fn start_experiment(&self, mut input: ExperimentInput) -> Result<Experiment, ApiError> {
        self.experiments.ensure_enabled()?;
        self.place_vm_hangs(&mut input).await?;
        if let Some(parts) = spread::parts(&self.ctx.node_name, &input)? {
            return Box::pin(self.start_spread(input, parts)).await;
        }
        if let Some(home) = remote::home_of(self, &input)? {
            return remote::start_on(self, &home, input).await;
        }
        self.start_here(input).await
    }

    /// Names in each VM HANG the node that drives its VMs' host (where their actors are
    /// held), unless it names one already; then in each fault by ids, their holder.
    async fn place_vm_hangs(&self, input: &mut ExperimentInput) -> Result<(), ApiError> {
        for (n, fault) in input.faults.iter_mut().enumerate() {
            if !(fault.action == FaultAction::Hang && fault.hits_vms() && fault.target.nodes.is_empty()) {
                continue;
            }
            let mut nodes = std::collections::BTreeSet::new();
            for id in &fault.target.ids {
                if let Some(vm) = self.vms().get(id).await? {
                    let host = vm.status.host.unwrap_or_default();
                    nodes.insert(
                        self.cluster()
                            .holder(&host)
                            .unwrap_or_else(|| self.ctx.node_name.clone()),
                    );
                }
            }
            if nodes.len() > 1 {
                return Err(ApiError::invalid(format!(
                    "fault {n} holds VMs driven by {}: name the VMs of one node per fault",
                    nodes.into_iter().collect::<Vec<_>>().join(", ")
                )));
            }
            fault.target.nodes = nodes.into_iter().collect();
        }
        self.place_by_holders(input)
    }

    /// Names in each fault of a tree that picks its children by `ids` alone the node holding
    /// them, when a peer does (an agent, a swarm or a host driver moved there, or made
    /// there): the fault is then carried out in that node's tree, as if `target.nodes` said
    /// so, instead of matching nothing in this one.
    fn place_by_holders(&self, input: &mut ExperimentInput) -> Result<(), ApiError> {
        let me = &self.ctx.node_name;
        for (n, fault) in input.faults.iter_mut().enumerate() {
            if !fault.runs_on_its_node()
                || fault.hits_vms()
                || !fault.target.nodes.is_empty()
                || fault.target.ids.is_empty()
            {
                continue;
            }
            let holders: std::collections::BTreeSet<String> = fault
                .target
                .ids
                .iter()
                .map(|id| self.cluster().holder(id).unwrap_or_else(|| me.clone()))
                .collect();
            if holders.len() > 1 {
                return Err(ApiError::invalid(format!(
                    "fault {n} picks children of {}: name the ids of one node per fault",
                    holders.into_iter().collect::<Vec<_>>().join(", ")
                )));
            }
            if holders.first().is_some_and(|node| node != me) {
                fault.target.nodes = holders.into_iter().collect();
            }
        }
        Ok(())
    }

    /// Starts an experiment whose faults select in this node's tree (or hit nodes or VMs).
    async fn start_here(&self, input: ExperimentInput) -> Result<Experiment, ApiError> {
        let experiments = &self.experiments;
        if input.faults.is_empty() {
            return Err(ApiError::invalid("an experiment needs at least one fault"));
        }
        if let Some(d) = input.duration.filter(|d| *d > experiments.max_duration) {
            return Err(ApiError::invalid(format!(
                "durationMs {} is above fault_max_duration_ms ({})",
                d.as_millis(),
                experiments.max_duration.as_millis()
            )));
        }
        if let Some(unknown) = input.invariants.iter().find(|i| !INVARIANTS.contains(&i.as_str())) {
            return Err(ApiError::invalid(format!(
                "unknown invariant {unknown}; known: {}",
                INVARIANTS.join(", ")
            )));
        }
        // Below 2^53, so a JSON reader that holds numbers as doubles (JavaScript, jq) reads
        // the seed it was given exactly, and replaying it picks the same targets.
        let seed = input.seed.unwrap_or_else(|| rand::random::<u64>() >> 11);
        let limit = hold(&input, experiments.max_duration)?;
        let targets = rounds::resolve(self, &input, seed, 0, limit).await?;
        // The node it runs on is part of its id: a call about it on another node is routed.
        let id = format!("{}@{}", uuid::Uuid::now_v7(), self.ctx.node_name);
        let now = Utc::now();
        let mut experiment = Experiment {
            id: id.clone(),
            name: input.name.clone(),
            state: if input.dry_run {
                ExperimentState::Pending
            } else {
                ExperimentState::Active
            },
            seed,
            started_at: now,
            finished_at: None,
            injections: Vec::new(),
            report: None,
        };
        if input.dry_run {
            for (n, t) in targets.iter().enumerate() {
                let expected = inject::predict(self, t, input.allow_escalation).await?;
                experiment
                    .injections
                    .push(injection(&id, n, t.action, &t.candidate, expected, "DRY_RUN", 0));
            }
            return Ok(experiment);
        }
        // Every target is checked (and a refused one refuses the whole) before any is hit.
        let mut plans = Vec::new();
        for t in &targets {
            plans.push(inject::predict(self, t, input.allow_escalation).await?);
        }
        let (view, written) = watch::channel(experiment.clone());
        let recorded = kept::follow(experiments.clone(), written);
        let wake = Arc::new(Notify::new());
        experiments.forget_old();
        lock(&experiments.records).insert(
            id.clone(),
            Record {
                view,
                gates: Vec::new(),
                lease_until: input.lease.map(|l| tokio::time::Instant::now() + l),
                lease: input.lease,
                end: None,
                overtaken: false,
                wake: wake.clone(),
            },
        );
        self.record(NewEvent::new(
            "EXPERIMENT_STARTED",
            Some(id.clone()),
            json!({ "name": input.name, "seed": seed, "targets": targets.iter().map(|t| json!({"action": format!("{:?}", t.action), "target": t.candidate.id})).collect::<Vec<_>>() }),
        ))
        .await;
        experiment.injections = rounds::inject_round(self, &id, &input, targets, plans, 0).await?;
        experiments.update(&id, |e| *e = experiment.clone());
        tokio::spawn(run::run(self.clone(), id, input, seed, limit, wake));
        // Answered once its record is written, so a read of it through any node that has
        // applied the answer's writes finds it (not waiting long on a node cut off).
        let _ = tokio::time::timeout(RECORDED_WITHIN, recorded).await;
        Ok(experiment)
    }

    /// Keeps only the agents that carry every label.
    pub(super) async fn with_labels(
        &self,
        candidates: Vec<Candidate>,
        labels: &[(String, String)],
    ) -> Result<Vec<Candidate>, ApiError> {
        let mut kept = Vec::new();
        for c in candidates.into_iter().filter(|c| c.kind == "AGENT") {
            if let Some(agent) = self.agents().get(&c.id).await? {
                if labels.iter().all(|(k, v)| agent.spec.labels.get(k) == Some(v)) {
                    kept.push(c);
                }
            }
        }
        Ok(kept)
    }

    pub(super) async fn record(&self, event: NewEvent) {
        self.experiments.record(event).await;
    }

    /// The experiment now, then at every change, until it ends.
    pub(super) fn experiment_updates_here(&self, id: &str) -> Result<watch::Receiver<Experiment>, ApiError> {
        self.experiments.ensure_enabled()?;
        lock(&self.experiments.records)
            .get(id)
            .map(|r| r.view.subscribe())
            .ok_or_else(|| ApiError::NotFound(format!("no experiment {id} on this node")))
    }

    /// Ends it now: its faults are reverted and it is judged as usual (PASSED or FAILED).
    pub(super) fn stop_experiment_here(&self, id: &str) -> Result<Experiment, ApiError> {
        self.experiments.ensure_enabled()?;
        self.end(
            id,
            End {
                why: "ended by stopExperiment".into(),
                aborted: false,
            },
        )?;
        self.experiments
            .current(id)
            .ok_or_else(|| ApiError::NotFound(format!("no experiment {id} on this node")))
    }

    /// Stops this node's experiments that hold a host fault on `host`; their ids.
    pub(crate) fn end_host_faults_here(&self, host: &str) -> Result<Vec<String>, ApiError> {
        self.experiments.ensure_enabled()?;
        let holding: Vec<String> = self
            .experiments
            .local()
            .into_iter()
            .filter(|e| !e.state.is_final())
            .filter(|e| {
                e.injections.iter().any(|i| {
                    i.target == host
                        && i.outcome == "ARMED"
                        && matches!(i.action, FaultAction::HostDisconnect | FaultAction::HostHang)
                })
            })
            .map(|e| e.id)
            .collect();
        for id in &holding {
            self.stop_experiment_here(id)?;
        }
        Ok(holding)
    }

    /// Extends the lease by its length from now.
    pub(super) fn renew_experiment_here(&self, id: &str) -> Result<Experiment, ApiError> {
        self.experiments.ensure_enabled()?;
        {
            let mut records = lock(&self.experiments.records);
            let r = records
                .get_mut(id)
                .ok_or_else(|| ApiError::NotFound(format!("no experiment {id} on this node")))?;
            if r.view.borrow().state.is_final() {
                return Err(ApiError::Conflict(format!("experiment {id} has ended")));
            }
            if let Some(l) = r.lease {
                r.lease_until = Some(tokio::time::Instant::now() + l);
            }
        }
        Ok(self.experiments.current(id).expect("present"))
    }

    fn end(&self, id: &str, end: End) -> Result<(), ApiError> {
        match self.experiments.end_now(id, end) {
            true => Ok(()),
            false => Err(ApiError::NotFound(format!("no experiment {id} on this node"))),
        }
    }
}

/// The most rounds an experiment may have.
const MAX_ROUNDS: u32 = 1000;

/// How long each round's armed faults stay armed: `durationMs` (at most `everyMs` when
/// rounds repeat), else the round's whole interval, else until stopped, never past
/// `fault_max_duration_ms` for the whole run.
fn hold(input: &ExperimentInput, max: Duration) -> Result<Duration, ApiError> {
    let rounds = input.count;
    if rounds == 0 || rounds > MAX_ROUNDS {
        return Err(ApiError::invalid(format!("count is from 1 to {MAX_ROUNDS}")));
    }
    let Some(every) = input.every else {
        if rounds > 1 {
            return Err(ApiError::invalid(
                "count above 1 needs everyMs: the time between rounds",
            ));
        }
        return Ok(input.duration.unwrap_or(max).min(max));
    };
    if rounds == 1 {
        return Err(ApiError::invalid(
            "everyMs is the time between rounds: give count above 1 too",
        ));
    }
    let hold = input.duration.unwrap_or(every);
    if hold > every {
        return Err(ApiError::invalid(format!(
            "durationMs {} is longer than everyMs {}: a round's faults are reverted before the next round",
            hold.as_millis(),
            every.as_millis()
        )));
    }
    let total = every * (rounds - 1) + hold;
    if total > max {
        return Err(ApiError::invalid(format!(
            "{rounds} rounds every {} ms last {} ms, above fault_max_duration_ms ({})",
            every.as_millis(),
            total.as_millis(),
            max.as_millis()
        )));
    }
    Ok(hold)
}

pub(super) fn injection(
    experiment: &str,
    n: usize,
    action: FaultAction,
    target: &Candidate,
    expected: Vec<Expected>,
    outcome: &str,
    after_seq: u64,
) -> Injection {
    Injection {
        id: format!("{experiment}/{n}"),
        action,
        target: target.id.clone(),
        kind: target.kind.clone(),
        injected_at: Utc::now(),
        effective_at: None,
        reverted_at: None,
        recovered_at: None,
        time_to_detect_ms: None,
        time_to_recover_ms: None,
        outcome: outcome.into(),
        expected,
        observed: Vec::new(),
        supervisor: target.owner.clone(),
        groups: Vec::new(),
        nodes: Vec::new(),
        after_seq,
    }
}

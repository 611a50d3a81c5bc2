//! Fault experiments in GraphQL (admin only, on a node started with `--fault-injection`):
//! `startExperiment`, `stopExperiment`, `renewExperiment`, `haltAllFaults`, `experiment`,
//! `experiments`, `faultGates` and `experimentUpdates`. See docs/faults.md.

use std::time::Duration;

use async_graphql::{Context, Enum, InputObject, Object, Subscription, ID};
use chrono::{DateTime, Utc};
use futures::Stream;
use troupe_actors::service::experiments::{self as ex, select};
use troupe_actors::Api;
use troupe_runtime::auth::Role;

use super::events::Event;
use super::shared::{pairs, LabelInput};
use super::Int64;
use crate::auth::RoleGuard;
use crate::error::{coded, OrGql};

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "troupe_actors::service::experiments::FaultAction")]
pub enum FaultAction {
    /// The child fails as if it panicked (any child of the tree); its supervisor restarts it
    /// by its strategy. Nothing to revert.
    Crash,
    /// An actor's loop is held (an agent, a supervisor, the scheduler, a swarm coordinator,
    /// a host driver, the cluster link or the services endpoint with their service actors,
    /// or a VM picked by `ids` with `kinds: ["VM"]`): it takes no message, its mailbox fills,
    /// calls time out. Reverted by releasing the loop.
    Hang,
    /// SIGKILL of an agent's process groups behind Troupe's back. Nothing to revert.
    ProcessKill,
    /// SIGSTOP of an agent's process groups behind Troupe's back; reverted by SIGCONT.
    ProcessPause,
    /// A host's connection broken (calls fail; its domains keep running); reverted by a
    /// reconnect.
    HostDisconnect,
    /// Every libvirt call to a host blocks until the revert reconnects it.
    HostHang,
    /// The target nodes (`target.nodes`) send nothing to the nodes of `to` (every other member
    /// by default) and, unless `params: { oneWay: true }`, they nothing back: beats, Raft
    /// messages and calls, re-dials included. Reverted by healing the cut; recovered when
    /// every node of both sides is UP again.
    Partition,
    /// The target node's store (this node by default) rejects every batch that writes to
    /// `params.tables` (any table when not given). Reverted by lifting the gate.
    StoreReject,
    /// Each commit of the target node's store waits `params.delayMs` (1 to 10000, default
    /// 500) first. Reverted by lifting the gate.
    StoreSlowCommit,
    /// The target node's store refuses every write that adds data, as a full disk would
    /// (UNAVAILABLE); deletes go through, the node stays up. Reverted by lifting the gate.
    DiskFull,
    /// Each message delivered to the target agent (from the agents in `params.from`, any
    /// sender by default) waits `params.delayMs` (0 to 60000, default 500) ± `params.jitterMs`
    /// first, with `params.probability` (default 1). Reverted by lifting the fault.
    MessageDelay,
    /// Each message to the target agent (from `params.from`, any sender by default) is lost
    /// in transit with `params.probability` (default 1): its sender hears nothing until its
    /// timeout and it goes to the dead-letter queue. Reverted by lifting the fault.
    MessageDrop,
    /// The target VM's domain is destroyed behind Troupe's back (VMs picked by `ids`);
    /// nothing to revert: by its run policy it is started again (ALWAYS, RERUN_ON_FAILURE)
    /// or left stopped (MANUAL), and recovered when it is so.
    DomainDestroy,
    /// The target VM's domain is destroyed and undefined behind Troupe's back: defined from
    /// its spec and started again by its run policy.
    DomainUndefine,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Default)]
#[graphql(remote = "troupe_actors::service::experiments::select::SelectMode")]
pub enum SelectMode {
    /// One of the matching children, picked by the seed.
    #[default]
    One,
    All,
    /// `value` of them.
    Fixed,
    /// `value` percent of them, rounded up.
    Percent,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "troupe_actors::service::experiments::ExperimentState")]
pub enum ExperimentState {
    /// A dry run: nothing was injected.
    Pending,
    /// Its faults are armed.
    Active,
    /// Reverted; waiting for the targets to recover.
    Recovering,
    Passed,
    Failed,
    /// Ended by haltAllFaults or a lapsed lease; its report says what recovered.
    Aborted,
}

/// Which children of the supervision tree a fault hits.
#[derive(InputObject)]
pub struct TreeSelector {
    pub ids: Option<Vec<ID>>,
    /// AGENT, SWARM, HOST, SERVICE, SUPERVISOR... (a kind, or the start of one).
    pub kinds: Option<Vec<String>>,
    /// Agents carrying every one of these labels.
    pub labels: Option<Vec<LabelInput>>,
    /// Nodes by name: for the node actions (PARTITION, STORE_*, DISK_FULL; this node by
    /// default for the store's), the nodes hit; for the tree's actions, the one node whose
    /// tree is searched (the experiment is started there; this node by default).
    pub nodes: Option<Vec<String>>,
    /// Only children below this supervisor (its name, or its id as a child).
    pub under: Option<String>,
    #[graphql(default)]
    pub mode: SelectMode,
    pub value: Option<i32>,
    pub exclude: Option<Vec<ID>>,
}

#[derive(InputObject)]
pub struct FaultInput {
    pub action: FaultAction,
    pub target: TreeSelector,
    /// The far side of a PARTITION (its `nodes`; every other member by default).
    pub to: Option<TreeSelector>,
    /// The action's settings: PARTITION `{ oneWay }`, STORE_REJECT `{ tables }`,
    /// STORE_SLOW_COMMIT `{ delayMs }`, MESSAGE_DELAY `{ delayMs, jitterMs, probability, from }`,
    /// MESSAGE_DROP `{ probability, from }`.
    pub params: Option<async_graphql::Json<serde_json::Value>>,
}

#[derive(InputObject)]
pub struct StartExperimentInput {
    pub name: String,
    pub faults: Vec<FaultInput>,
    /// How long armed faults (HANG, PROCESS_PAUSE) stay armed; without it, until stopped,
    /// halted or the lease lapses (at most `fault_max_duration_ms`).
    pub duration_ms: Option<i32>,
    /// The time between rounds when `count` is above 1; each round's armed faults are
    /// reverted within it (`durationMs`, at most `everyMs`).
    pub every_ms: Option<i32>,
    /// How many rounds (1 to 1000) [default: 1]: each picks its targets again (from the seed
    /// and the round) and injects them; all of them within `fault_max_duration_ms`.
    pub count: Option<i32>,
    /// Replays the target picks [default: random, answered in `seed`].
    pub seed: Option<Int64>,
    /// How long each target has to recover after its injection [default: 30000].
    pub recover_within_ms: Option<i32>,
    /// TREE_RESTORED, RESTARTS_MATCH_STRATEGY, NO_ESCALATION, PEERS_UP, TASKS_KEPT,
    /// VMS_SINGLE [default: all].
    pub invariants: Option<Vec<String>>,
    /// Inject a crash even when the supervisor would escalate or give up [default: false].
    #[graphql(default)]
    pub allow_escalation: bool,
    /// Everything reverts unless renewExperiment comes within this.
    pub lease_ms: Option<i32>,
    /// Answer the targets and the expected effects; inject nothing.
    #[graphql(default)]
    pub dry_run: bool,
}

fn positive_ms(v: Option<i32>, what: &str) -> async_graphql::Result<Option<Duration>> {
    match v {
        None => Ok(None),
        Some(ms) if ms > 0 => Ok(Some(Duration::from_millis(ms as u64))),
        Some(_) => Err(coded("INVALID_INPUT", format!("{what} must be above 0"))),
    }
}

fn selector(s: TreeSelector) -> async_graphql::Result<select::Selector> {
    let value = match s.value {
        Some(v) if v < 0 => return Err(coded("INVALID_INPUT", "a selector's value must not be negative")),
        v => v.map(|v| v as u32),
    };
    Ok(select::Selector {
        ids: s.ids.unwrap_or_default().into_iter().map(|i| i.0).collect(),
        kinds: s
            .kinds
            .unwrap_or_default()
            .into_iter()
            .map(|k| k.to_uppercase())
            .collect(),
        labels: pairs(s.labels),
        nodes: s.nodes.unwrap_or_default(),
        under: s.under,
        mode: s.mode.into(),
        value,
        exclude: s.exclude.unwrap_or_default().into_iter().map(|i| i.0).collect(),
    })
}

fn input(i: StartExperimentInput) -> async_graphql::Result<ex::ExperimentInput> {
    let mut faults = Vec::new();
    for f in i.faults {
        faults.push(ex::FaultSpec {
            action: f.action.into(),
            target: selector(f.target)?,
            to: f.to.map(selector).transpose()?,
            params: f.params.map(|p| p.0).unwrap_or_default(),
        });
    }
    Ok(ex::ExperimentInput {
        name: i.name,
        faults,
        duration: positive_ms(i.duration_ms, "durationMs")?,
        every: positive_ms(i.every_ms, "everyMs")?,
        count: match i.count {
            None => 1,
            Some(c) if c > 0 => c as u32,
            Some(_) => return Err(coded("INVALID_INPUT", "count must be above 0")),
        },
        seed: match i.seed {
            Some(Int64(s)) if s < 0 => return Err(coded("INVALID_INPUT", "seed must not be negative")),
            s => s.map(|Int64(s)| s as u64),
        },
        recover_within: positive_ms(i.recover_within_ms, "recoverWithinMs")?.unwrap_or(Duration::from_secs(30)),
        invariants: i
            .invariants
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.to_uppercase())
            .collect(),
        allow_escalation: i.allow_escalation,
        lease: positive_ms(i.lease_ms, "leaseMs")?,
        dry_run: i.dry_run,
    })
}

pub struct Experiment(ex::Experiment);

#[Object]
impl Experiment {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn state(&self) -> ExperimentState {
        self.0.state.into()
    }
    /// Start another experiment with it to pick the same targets.
    async fn seed(&self) -> Int64 {
        Int64(self.0.seed as i64)
    }
    async fn started_at(&self) -> DateTime<Utc> {
        self.0.started_at
    }
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
    async fn injections(&self) -> Vec<Injection> {
        self.0.injections.iter().cloned().map(Injection).collect()
    }
    /// Once it has ended.
    async fn report(&self) -> Option<RecoveryReport> {
        self.0.report.clone().map(RecoveryReport)
    }
}

pub struct Injection(ex::Injection);

#[Object]
impl Injection {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn action(&self) -> FaultAction {
        self.0.action.into()
    }
    async fn target(&self) -> ID {
        ID(self.0.target.clone())
    }
    /// What people call the target: an agent's, swarm's, host's or VM's name; a node's,
    /// supervisor's or service's own name (its id) otherwise.
    async fn target_name(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        let store = ctx.data::<Api>()?.store();
        let named = troupe_actors::names::named(store, &self.0.target).await;
        Ok(named.map_or_else(|| self.0.target.clone(), |n| n.name))
    }
    /// The target's kind in the tree (AGENT, SERVICE, SUPERVISOR...).
    async fn kind(&self) -> &str {
        &self.0.kind
    }
    /// The supervisor that owns the target.
    async fn supervisor(&self) -> &str {
        &self.0.supervisor
    }
    async fn injected_at(&self) -> DateTime<Utc> {
        self.0.injected_at
    }
    /// When it was at full effect: the failure seen by the supervisor, the loop held, the
    /// signal sent.
    async fn effective_at(&self) -> Option<DateTime<Utc>> {
        self.0.effective_at
    }
    async fn reverted_at(&self) -> Option<DateTime<Utc>> {
        self.0.reverted_at
    }
    async fn recovered_at(&self) -> Option<DateTime<Utc>> {
        self.0.recovered_at
    }
    /// From the injection to the first sign Troupe noticed (a FAILED or UNHEALTHY event of
    /// the target); null when nothing noticed.
    async fn time_to_detect_ms(&self) -> Option<i32> {
        self.0.time_to_detect_ms.map(|v| v as i32)
    }
    async fn time_to_recover_ms(&self) -> Option<i32> {
        self.0.time_to_recover_ms.map(|v| v as i32)
    }
    /// PENDING, ARMED, RECOVERED, NOT_RECOVERED, DRY_RUN, or NOT_INJECTED with the reason.
    async fn outcome(&self) -> &str {
        &self.0.outcome
    }
    /// What the target's supervisor predicted from its strategy and intensity.
    async fn expected(&self) -> Vec<ExpectedEffect> {
        self.0
            .expected
            .iter()
            .map(|e| ExpectedEffect {
                id: ID(e.id.clone()),
                effect: e.effect.clone(),
            })
            .collect()
    }
    /// The events about the target and the children it was expected to touch.
    async fn observed(&self) -> Vec<Event> {
        self.0.observed.iter().cloned().map(Event::from).collect()
    }
}

#[derive(async_graphql::SimpleObject)]
pub struct ExpectedEffect {
    id: ID,
    /// RESTART, FAIL, ESCALATE, GIVE_UP, HELD, PROCESS_REPLACED, PAUSED_THEN_CONTINUED.
    effect: String,
}

pub struct RecoveryReport(ex::RecoveryReport);

#[Object]
impl RecoveryReport {
    /// PASS or FAIL.
    async fn verdict(&self) -> &str {
        &self.0.verdict
    }
    /// Why, in a sentence.
    async fn reason(&self) -> &str {
        &self.0.reason
    }
    async fn injected(&self) -> i32 {
        self.0.injected as i32
    }
    async fn recovered(&self) -> i32 {
        self.0.recovered as i32
    }
    async fn max_time_to_recover_ms(&self) -> Option<i32> {
        self.0.max_time_to_recover_ms.map(|v| v as i32)
    }
    async fn invariants(&self) -> Vec<InvariantResult> {
        self.0
            .invariants
            .iter()
            .map(|i| InvariantResult {
                name: i.name.clone(),
                ok: i.ok,
                detail: i.detail.clone(),
            })
            .collect()
    }
    /// Restarts nobody predicted (a sibling under one_for_one, say).
    async fn unexpected(&self) -> Vec<Event> {
        self.0.unexpected.iter().cloned().map(Event::from).collect()
    }
}

#[derive(async_graphql::SimpleObject)]
pub struct InvariantResult {
    name: String,
    ok: bool,
    detail: Option<String>,
}

#[derive(async_graphql::SimpleObject)]
pub struct FaultGate {
    experiment: ID,
    injection: ID,
    action: FaultAction,
    target: ID,
    since: DateTime<Utc>,
}

#[derive(Default)]
pub struct ExperimentsQuery;

#[Object]
impl ExperimentsQuery {
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn experiment(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Experiment>> {
        Ok(ctx.data::<Api>()?.experiment(&id).await.gql()?.map(Experiment))
    }

    /// Every experiment of the cluster (each node keeps its newest 200 ended ones), newest
    /// first; read from this node's replica, a peer's running one as its node last wrote it.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn experiments(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Experiment>> {
        Ok(ctx
            .data::<Api>()?
            .experiments()
            .await
            .gql()?
            .into_iter()
            .map(Experiment)
            .collect())
    }

    /// What is armed now on this node: empty once every fault was reverted.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn fault_gates(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<FaultGate>> {
        Ok(ctx
            .data::<Api>()?
            .fault_gates()
            .gql()?
            .into_iter()
            .map(|g| FaultGate {
                experiment: ID(g.experiment),
                injection: ID(g.injection),
                action: g.action.into(),
                target: ID(g.target),
                since: g.since,
            })
            .collect())
    }
}

#[derive(Default)]
pub struct ExperimentsMutation;

#[Object]
impl ExperimentsMutation {
    /// Resolves the targets, checks each against its supervisor (a crash that would push it
    /// past its intensity is CONFLICT unless `allowEscalation`), injects, and answers the
    /// experiment ACTIVE (PENDING for a dry run); it then runs on and ends PASSED, FAILED or
    /// ABORTED with its report. A selector that matches nothing is INVALID_INPUT.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn start_experiment(
        &self,
        ctx: &Context<'_>,
        input: StartExperimentInput,
    ) -> async_graphql::Result<Experiment> {
        let input = self::input(input)?;
        Ok(Experiment(ctx.data::<Api>()?.start_experiment(input).await.gql()?))
    }

    /// Ends it now: its faults are reverted and it is judged as usual (PASSED or FAILED), as
    /// a test's block ends its fault.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn stop_experiment(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Experiment> {
        Ok(Experiment(ctx.data::<Api>()?.stop_experiment(&id).await.gql()?))
    }

    /// Extends its lease by `leaseMs` from now.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn renew_experiment(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Experiment> {
        Ok(Experiment(ctx.data::<Api>()?.renew_experiment(&id).await.gql()?))
    }

    /// The kill switch: reverts every armed fault of this node and of every reachable peer,
    /// and ends their experiments (ABORTED); answers how many faults it reverted.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn halt_all_faults(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        Ok(ctx.data::<Api>()?.halt_all_faults().await.gql()? as i32)
    }
}

#[derive(Default)]
pub struct ExperimentsSubscription;

#[Subscription]
impl ExperimentsSubscription {
    /// The experiment now, then at every change, ending after its report.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn experiment_updates(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<impl Stream<Item = Experiment>> {
        let updates = ctx.data::<Api>()?.experiment_updates(&id).await.gql()?;
        // The current state first, then each change; the stream ends with the final one
        // (without waiting for a change that will never come).
        Ok(futures::stream::unfold(
            (updates, true, false),
            |(mut rx, first, done)| async move {
                if done || (!first && rx.changed().await.is_err()) {
                    return None;
                }
                let e = rx.borrow_and_update().clone();
                let done = e.state.is_final();
                Some((Experiment(e), (rx, false, done)))
            },
        ))
    }
}

//! Virtual machines in GraphQL: the `Vm` type, `vms` / `vm`, `createVm`, `startVm`,
//! `stopVm`, `rebootVm`, `pauseVm`, `resumeVm`, `deleteVm`, `migrateVm` and `vmUpdates`.

use std::time::Duration;

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use futures::Stream;
use troupe_actors::placement::Weigher;
use troupe_actors::vm::{
    CreateVmRequest, Migration as Move, MigrationKind as Kind, MigrationPhase as Phase, RunPolicy as Policy, VmCommand,
    VmFilter, VmState as State, VmView, Want,
};
use troupe_actors::Api;
use troupe_runtime::auth::Role;

use super::hosts::Host;
use super::page::{page_size, DEFAULT_PAGE, MAX_PAGE};
use super::shared::{labels, pairs, Label, LabelInput};
use super::updates::Follow;
use super::Int64;
use crate::auth::RoleGuard;
use crate::error::{coded, OrGql};

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum VmState {
    /// Accepted; no domain defined yet.
    Pending,
    Running,
    Paused,
    ShuttingDown,
    Stopped,
    Crashed,
    Suspended,
    /// Its host has no such domain (undefined behind Troupe's back): it is defined again.
    Missing,
    /// Its host cannot be asked (UNREACHABLE or DOWN): nothing is claimed about the guest.
    Unknown,
}

impl From<State> for VmState {
    fn from(s: State) -> Self {
        match s {
            State::Pending => Self::Pending,
            State::Running => Self::Running,
            State::Paused => Self::Paused,
            State::ShuttingDown => Self::ShuttingDown,
            State::Stopped => Self::Stopped,
            State::Crashed => Self::Crashed,
            State::Suspended => Self::Suspended,
            State::Missing => Self::Missing,
            State::Unknown => Self::Unknown,
        }
    }
}

impl From<VmState> for State {
    fn from(s: VmState) -> Self {
        match s {
            VmState::Pending => Self::Pending,
            VmState::Running => Self::Running,
            VmState::Paused => Self::Paused,
            VmState::ShuttingDown => Self::ShuttingDown,
            VmState::Stopped => Self::Stopped,
            VmState::Crashed => Self::Crashed,
            VmState::Suspended => Self::Suspended,
            VmState::Missing => Self::Missing,
            VmState::Unknown => Self::Unknown,
        }
    }
}

/// When Troupe runs a VM, as KubeVirt's run strategies define them (docs/vms.md).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum RunPolicy {
    /// Started at creation, restarted whenever it stops.
    Always,
    /// Started at creation, restarted when it fails; a clean guest shutdown stays stopped.
    RerunOnFailure,
    /// Only startVm and stopVm start and stop it.
    Manual,
    /// Kept stopped.
    Halted,
}

impl From<Policy> for RunPolicy {
    fn from(p: Policy) -> Self {
        match p {
            Policy::Always => Self::Always,
            Policy::RerunOnFailure => Self::RerunOnFailure,
            Policy::Manual => Self::Manual,
            Policy::Halted => Self::Halted,
        }
    }
}

impl From<RunPolicy> for Policy {
    fn from(p: RunPolicy) -> Self {
        match p {
            RunPolicy::Always => Self::Always,
            RunPolicy::RerunOnFailure => Self::RerunOnFailure,
            RunPolicy::Manual => Self::Manual,
            RunPolicy::Halted => Self::Halted,
        }
    }
}

/// How the placer orders the hosts that fit.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Default)]
pub enum Placement {
    /// The host with the most room left first.
    #[default]
    Spread,
    /// The fullest host that still fits first.
    Pack,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum MigrationPhase {
    /// Accepted; waiting for a slot (at most `max_outbound_migrations` per host).
    Pending,
    Scheduling,
    PreparingTarget,
    Running,
    Succeeded,
    Failed,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum MigrationKind {
    /// libvirt's live migration: the guest kept running.
    Live,
    /// Where the driver cannot migrate (test:///): defined and started on the target from
    /// the same spec, then destroyed and undefined on the source. The guest restarts.
    Orchestrated,
}

pub struct Migration(pub Move);

#[Object]
impl Migration {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn phase(&self) -> MigrationPhase {
        match self.0.phase {
            Phase::Pending => MigrationPhase::Pending,
            Phase::Scheduling => MigrationPhase::Scheduling,
            Phase::PreparingTarget => MigrationPhase::PreparingTarget,
            Phase::Running => MigrationPhase::Running,
            Phase::Succeeded => MigrationPhase::Succeeded,
            Phase::Failed => MigrationPhase::Failed,
        }
    }
    /// Which kind of move happened (null until it is known).
    async fn kind(&self) -> Option<MigrationKind> {
        self.0.kind.map(|k| match k {
            Kind::Live => MigrationKind::Live,
            Kind::Orchestrated => MigrationKind::Orchestrated,
        })
    }
    async fn source_host(&self) -> ID {
        ID(self.0.source.clone())
    }
    async fn target_host(&self) -> Option<ID> {
        self.0.target.clone().map(ID)
    }
    /// `migrateVm`, `drain` or `evacuation`.
    async fn reason(&self) -> &str {
        &self.0.reason
    }
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    async fn started_at(&self) -> DateTime<Utc> {
        self.0.started_at
    }
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
}

/// What the VM was asked to be.
#[derive(SimpleObject)]
pub struct VmSpecOut {
    pub vcpus: i32,
    #[graphql(name = "memoryMiB")]
    pub memory_mib: Int64,
    pub labels: Vec<Label>,
    pub anti_affinity_group: Option<String>,
    pub run_policy: RunPolicy,
    /// Whether it is meant to be running now (startVm / stopVm and the run policy set it).
    pub running: bool,
    pub host_selector: Vec<Label>,
    pub placement: Placement,
    /// The libvirt domain's name on its host.
    pub domain: String,
}

/// CPU time and memory, sampled from libvirt at each reconcile.
#[derive(SimpleObject)]
pub struct VmStats {
    pub cpu_time_ns: Int64,
    pub memory_ki_b: Int64,
    /// CPU use between the last two samples, in cores.
    pub cpu_cores: f64,
    pub sampled_at: Option<DateTime<Utc>>,
}

pub struct Vm(pub VmView);

impl From<VmView> for Vm {
    fn from(v: VmView) -> Self {
        Self(v)
    }
}

#[Object]
impl Vm {
    async fn id(&self) -> ID {
        ID(self.0.spec.id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.spec.name
    }
    /// The state libvirt last reported (UNKNOWN while its host cannot be asked).
    async fn state(&self) -> VmState {
        self.0.status.state.into()
    }
    /// libvirt's reason for the state: booted, destroyed, shutdown, user, ...
    async fn reason(&self) -> Option<&str> {
        self.0.status.reason.as_deref()
    }
    async fn observed_at(&self) -> Option<DateTime<Utc>> {
        self.0.status.observed_at
    }
    async fn last_error(&self) -> Option<&str> {
        self.0.status.last_error.as_deref()
    }
    /// Times Troupe started it again by its run policy.
    async fn restarts(&self) -> i32 {
        self.0.status.restarts as i32
    }
    async fn host_id(&self) -> Option<ID> {
        self.0.status.host.clone().map(ID)
    }
    async fn host(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Host>> {
        match &self.0.status.host {
            Some(id) => Ok(ctx.data::<Api>()?.hosts().get(id).await.gql()?.map(Host)),
            None => Ok(None),
        }
    }
    async fn spec(&self) -> VmSpecOut {
        let s = &self.0.spec;
        VmSpecOut {
            vcpus: s.vcpus as i32,
            memory_mib: s.memory_mib.into(),
            labels: labels(&s.labels),
            anti_affinity_group: s.anti_affinity_group.clone(),
            run_policy: s.run_policy.into(),
            running: s.want == Want::Running,
            host_selector: labels(&s.host_selector),
            placement: match s.weigher {
                Weigher::Spread => Placement::Spread,
                Weigher::Pack => Placement::Pack,
            },
            domain: s.domain.clone(),
        }
    }
    async fn stats(&self) -> VmStats {
        let s = &self.0.status.stats;
        VmStats {
            cpu_time_ns: s.cpu_time_ns.into(),
            memory_ki_b: s.memory_kib.into(),
            cpu_cores: s.cpu_cores,
            sampled_at: s.sampled_at,
        }
    }
    /// The current or last migration.
    async fn migration(&self) -> Option<Migration> {
        self.0.status.migration.clone().map(Migration)
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.spec.created_at
    }
}

#[derive(InputObject)]
pub struct CreateVmInput {
    pub name: String,
    pub vcpus: i32,
    #[graphql(name = "memoryMiB")]
    pub memory_mib: Int64,
    pub labels: Option<Vec<LabelInput>>,
    /// No two VMs of one group share a host.
    pub anti_affinity_group: Option<String>,
    #[graphql(default_with = "RunPolicy::Always")]
    pub run_policy: RunPolicy,
    /// Labels a host must carry to take the VM.
    pub host_selector: Option<Vec<LabelInput>>,
    #[graphql(default)]
    pub placement: Placement,
    /// A host (id or name) to put it on instead of the placer's choice; still checked.
    pub host: Option<ID>,
    /// The node whose hosts it goes to [default: the node answering].
    pub node: Option<String>,
}

/// The result of migrateVm: the migration and the VM after it.
#[derive(SimpleObject)]
pub struct MigrationResult {
    pub migration: Migration,
    pub vm: Option<Vm>,
}

/// The extra fields of the `vms` connection.
#[derive(SimpleObject)]
pub struct VmsExtra {
    /// Nodes whose VMs could not be included in this page.
    pub missing_nodes: Vec<String>,
}

#[derive(Default)]
pub struct VmsQuery;

#[Object]
impl VmsQuery {
    /// The cluster's VMs in id order, optionally only one host's, one state's or those with
    /// every given label.
    #[graphql(
        guard = "RoleGuard(Role::Viewer)",
        complexity = "super::page::cost(first, DEFAULT_PAGE, MAX_PAGE, child_complexity)"
    )]
    async fn vms(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        host: Option<ID>,
        state: Option<VmState>,
        labels: Option<Vec<LabelInput>>,
    ) -> async_graphql::Result<Connection<String, Vm, VmsExtra>> {
        let first = page_size(ctx, first, DEFAULT_PAGE, MAX_PAGE)?;
        let api = ctx.data::<Api>()?;
        let host = match host {
            // A host name works on the node holding it.
            Some(h) => Some(api.hosts().get(&h).await.gql()?.map_or(h.0, |v| v.spec.id)),
            None => None,
        };
        let filter = VmFilter {
            host,
            state: state.map(State::from),
            labels: pairs(labels),
        };
        let has_previous = after.is_some();
        let listing = api.vms().list(after, first, filter).await.gql()?;
        crate::error::partial(ctx, "vms", &listing.missing);
        let extra = VmsExtra {
            missing_nodes: listing.missing,
        };
        let mut connection = Connection::with_additional_fields(has_previous, listing.more, extra);
        connection
            .edges
            .extend(listing.items.into_iter().map(|v| Edge::new(v.spec.id.clone(), Vm(v))));
        Ok(connection)
    }

    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn vm(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Vm>> {
        Ok(ctx.data::<Api>()?.vms().get(&id).await.gql()?.map(Vm))
    }
}

async fn act(ctx: &Context<'_>, id: ID, command: VmCommand) -> async_graphql::Result<Vm> {
    Ok(Vm(ctx.data::<Api>()?.vms().act(&id, command).await.gql()?))
}

#[derive(Default)]
pub struct VmsMutation;

#[Object]
impl VmsMutation {
    /// Places a VM (NO_VALID_HOST names why each host was rejected), claims its share of the
    /// host, defines its domain and starts it per its run policy. Answers with the state
    /// libvirt reports then.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn create_vm(
        &self,
        ctx: &Context<'_>,
        input: CreateVmInput,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Vm> {
        let memory_mib = input.memory_mib.non_negative("memoryMiB")?;
        let vcpus = u32::try_from(input.vcpus).map_err(|_| coded("INVALID_INPUT", "vcpus must be positive"))?;
        let request = CreateVmRequest {
            labels: pairs(input.labels),
            anti_affinity_group: input.anti_affinity_group,
            run_policy: input.run_policy.into(),
            host_selector: pairs(input.host_selector),
            weigher: match input.placement {
                Placement::Spread => Weigher::Spread,
                Placement::Pack => Weigher::Pack,
            },
            host: input.host.map(|h| h.0),
            ..CreateVmRequest::new(input.name, vcpus, memory_mib)
        };
        Ok(Vm(ctx
            .data::<Api>()?
            .vms()
            .create(request, input.node, idempotency_key)
            .await
            .gql()?))
    }

    /// Starts the VM (a HALTED one becomes ALWAYS).
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn start_vm(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Vm> {
        act(ctx, id, VmCommand::Start).await
    }

    /// Asks the guest to shut down and waits up to `timeoutMs` (default
    /// `vm_stop_timeout_ms`), then destroys it. An ALWAYS or RERUN_ON_FAILURE VM becomes
    /// HALTED, so it stays stopped.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn stop_vm(&self, ctx: &Context<'_>, id: ID, timeout_ms: Option<Int64>) -> async_graphql::Result<Vm> {
        let api = ctx.data::<Api>()?;
        let timeout = match timeout_ms {
            Some(t) => Duration::from_millis(t.non_negative("timeoutMs")?.min(600_000)),
            None => api.vms().stop_timeout(),
        };
        act(ctx, id, VmCommand::Stop { timeout }).await
    }

    /// Reboots a RUNNING VM.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn reboot_vm(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Vm> {
        act(ctx, id, VmCommand::Reboot).await
    }

    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn pause_vm(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Vm> {
        act(ctx, id, VmCommand::Pause).await
    }

    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn resume_vm(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Vm> {
        act(ctx, id, VmCommand::Resume).await
    }

    /// Destroys and undefines the VM's domain and forgets the VM; answers with its last state.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn delete_vm(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Vm> {
        act(ctx, id, VmCommand::Delete).await
    }

    /// Moves a VM to `targetHost` (id or name), or to where the placer puts it; answers
    /// when the migration has ended, with its kind (LIVE or ORCHESTRATED) and phase
    /// (SUCCEEDED, or FAILED with the VM still where it was).
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn migrate_vm(
        &self,
        ctx: &Context<'_>,
        id: ID,
        target_host: Option<ID>,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<MigrationResult> {
        let vms = ctx.data::<Api>()?.vms();
        let migration = vms
            .migrate(&id, target_host.map(|t| t.0), idempotency_key)
            .await
            .gql()?;
        let vm = vms.get(&id).await.gql()?.map(Vm);
        Ok(MigrationResult {
            migration: Migration(migration),
            vm,
        })
    }
}

#[derive(Default)]
pub struct VmsSubscription;

#[Subscription]
impl VmsSubscription {
    /// The VM now, then after every change of it (state, migration phase, host); ends when
    /// it is deleted.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn vm_updates(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Vm>>> {
        let follow = Follow {
            noun: "VM",
            read: |api, id| Box::pin(async move { api.vms().get(&id).await }),
            // Usage samples alone are not a change.
            changed: |sent, now| {
                fn key(v: &VmView) -> (State, &Option<String>, &Option<Move>, &troupe_actors::vm::VmSpec) {
                    (v.status.state, &v.status.host, &v.status.migration, &v.spec)
                }
                key(sent) != key(now)
            },
            last: |_| false,
            gone_is_error: false,
            show: Vm,
        };
        super::updates::follow(ctx.data::<Api>()?, &id, follow).await
    }
}

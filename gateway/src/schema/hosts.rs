//! Hypervisor hosts in GraphQL: the `Host` type, `hosts` / `host`, `addHost`, `removeHost`,
//! `drainHost`, `setHostMaintenance`, `injectFault` and `hostUpdates`.

use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use troupe_actors::host::{AddHostRequest, DomainObs, Fault, HostState as State, HostView};
use troupe_actors::placement::Overcommit;
use troupe_actors::vm::VmFilter;
use troupe_actors::Api;
use troupe_runtime::auth::Role;
use troupe_runtime::events::EventFilter;

use super::shared::{labels, pairs, Label, LabelInput};
use super::vms::Vm;
use super::Int64;
use crate::auth::RoleGuard;
use crate::error::{coded, OrGql};

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum HostState {
    /// Connected; takes new VMs.
    Up,
    /// Its VMs are being moved away (drainHost); takes no new ones.
    Draining,
    /// Holds no VMs and takes none (after a drain, or setHostMaintenance).
    Maintenance,
    /// The connection is lost or never opened; the driver reconnects with backoff.
    Unreachable,
    /// Unreachable past `host_down_after_ms`: its ALWAYS and RERUN_ON_FAILURE VMs are
    /// re-created on other hosts.
    Down,
    /// Not reported to the answering node yet: the node that drives it has not answered one
    /// of its beats since it started (`seenAt` is null).
    Unknown,
}

impl From<State> for HostState {
    fn from(s: State) -> Self {
        match s {
            State::Up => Self::Up,
            State::Draining => Self::Draining,
            State::Maintenance => Self::Maintenance,
            State::Unreachable => Self::Unreachable,
            State::Down => Self::Down,
            State::Unknown => Self::Unknown,
        }
    }
}

/// CPUs and memory of a host, as libvirt reports them.
#[derive(SimpleObject)]
pub struct HostCapacity {
    pub cpus: i32,
    #[graphql(name = "memoryMiB")]
    pub memory_mib: Int64,
}

/// What a host's VMs have been promised, against what it may promise (its capacity times the
/// overcommit ratios, less reserved memory).
#[derive(SimpleObject)]
pub struct HostAllocation {
    pub vcpus: Int64,
    #[graphql(name = "memoryMiB")]
    pub memory_mib: Int64,
    pub vcpu_limit: Int64,
    #[graphql(name = "memoryLimitMiB")]
    pub memory_limit_mib: Int64,
    /// vcpus / vcpuLimit.
    pub cpu_ratio: f64,
    /// memoryMiB / memoryLimitMiB.
    pub memory_ratio: f64,
    pub vms: i32,
}

#[derive(SimpleObject)]
pub struct OvercommitRatios {
    pub cpu: f64,
    pub memory: f64,
}

/// A drain's progress: VMs moved, failed, of the total.
#[derive(SimpleObject)]
pub struct DrainProgress {
    pub total: i32,
    pub moved: i32,
    pub failed: i32,
    pub done: bool,
}

/// A domain as libvirt reports it on the host now.
#[derive(SimpleObject)]
pub struct Domain {
    pub name: String,
    pub uuid: String,
    /// libvirt's state: RUNNING, PAUSED, SHUTOFF, ...
    pub state: String,
    pub reason: String,
    pub vcpus: i32,
    pub memory_ki_b: Int64,
    pub cpu_time_ns: Int64,
    /// When libvirt listed it: now for a host of the node answering; for a host another node
    /// drives, that node's last reconcile sweep (every `vm_reconcile_ms`), as its last beat
    /// carried it.
    pub observed_at: DateTime<Utc>,
}

impl Domain {
    fn listed(d: DomainObs, observed_at: DateTime<Utc>) -> Self {
        Self {
            observed_at,
            state: format!("{:?}", d.state).to_uppercase(),
            name: d.name,
            uuid: d.uuid,
            reason: d.reason,
            vcpus: d.vcpus as i32,
            memory_ki_b: d.memory_kib.into(),
            cpu_time_ns: d.cpu_time_ns.into(),
        }
    }
}

pub struct Host(pub HostView);

fn ratio(used: u64, limit: u64) -> f64 {
    if limit == 0 {
        0.0
    } else {
        used as f64 / limit as f64
    }
}

#[Object]
impl Host {
    async fn id(&self) -> ID {
        ID(self.0.spec.id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.spec.name
    }
    /// `name@node`, the node that made the host: what names it in the cluster when nodes'
    /// hosts share a name (every node's simulated hosts are `sim-1`…); it stays when the
    /// host moves to another node. `host(id:)` takes it.
    async fn qualified_name(&self) -> String {
        self.0.spec.qualified_name()
    }
    /// The libvirt URI its driver connects to.
    async fn uri(&self) -> &str {
        &self.0.spec.uri
    }
    /// The node whose driver holds the connection.
    async fn node(&self) -> &str {
        &self.0.spec.node
    }
    async fn labels(&self) -> Vec<Label> {
        labels(&self.0.spec.labels)
    }
    async fn state(&self) -> HostState {
        self.0.state.into()
    }
    /// Since when it has been in its state.
    async fn since(&self) -> DateTime<Utc> {
        self.0.since
    }
    /// When the node that drives it reported what this shows: the time of the answer on
    /// that node, else of that node's last heartbeat the answering node heard (a read asks
    /// no peer); null before any.
    async fn seen_at(&self) -> Option<DateTime<Utc>> {
        self.0.seen_at
    }
    /// Made by the node from `simulated_hosts` (libvirt's test:/// driver).
    async fn simulated(&self) -> bool {
        self.0.spec.simulated
    }
    /// As libvirt reported it at the last connect; null before the first.
    async fn capacity(&self) -> Option<HostCapacity> {
        self.0.capacity.map(|c| HostCapacity {
            cpus: c.cpus as i32,
            memory_mib: c.memory_mib.into(),
        })
    }
    async fn allocated(&self) -> HostAllocation {
        let v = &self.0;
        HostAllocation {
            vcpus: v.allocated_vcpus.into(),
            memory_mib: v.allocated_memory_mib.into(),
            vcpu_limit: v.vcpu_limit.into(),
            memory_limit_mib: v.memory_limit_mib.into(),
            cpu_ratio: ratio(v.allocated_vcpus, v.vcpu_limit),
            memory_ratio: ratio(v.allocated_memory_mib, v.memory_limit_mib),
            vms: v.vms as i32,
        }
    }
    async fn overcommit(&self) -> OvercommitRatios {
        OvercommitRatios {
            cpu: self.0.spec.overcommit.cpu,
            memory: self.0.spec.overcommit.memory,
        }
    }
    #[graphql(name = "reservedMemoryMiB")]
    async fn reserved_memory_mib(&self) -> Int64 {
        self.0.spec.reserved_memory_mib.into()
    }
    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }
    /// The current or last drain.
    async fn drain(&self) -> Option<DrainProgress> {
        self.0.drain.as_ref().map(|d| DrainProgress {
            total: d.total as i32,
            moved: d.moved as i32,
            failed: d.failed as i32,
            done: d.done,
        })
    }
    /// Migrations leaving this host now (at most `max_outbound_migrations`).
    async fn outbound_migrations(&self) -> i32 {
        self.0.outbound_migrations as i32
    }
    /// The VMs Troupe has placed on this host.
    #[graphql(complexity = "super::page::cost(first, 100, 1000, child_complexity)")]
    async fn vms(&self, ctx: &Context<'_>, first: Option<i32>) -> async_graphql::Result<Vec<Vm>> {
        let first = super::page::page_size(ctx, first, 100, 1000)?;
        let filter = VmFilter {
            host: Some(self.0.spec.id.clone()),
            ..Default::default()
        };
        let listing = ctx.data::<Api>()?.vms().list(None, first, filter).await.gql()?;
        Ok(listing.items.into_iter().map(Vm::from).collect())
    }
    /// Every domain libvirt lists on the host, Troupe's or not (libvirt's view, not Troupe's
    /// records): asked now for a host of the node answering; for another node's, its last
    /// listing as that node's beats carried it (`observedAt` says when). UNAVAILABLE while
    /// that node has reported no listing of the host.
    async fn domains(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Domain>> {
        let listed = ctx.data::<Api>()?.hosts().domains(&self.0.spec.id).await.gql()?;
        Ok(listed
            .domains
            .into_iter()
            .map(|d| Domain::listed(d, listed.at))
            .collect())
    }
}

#[derive(InputObject)]
pub struct OvercommitInput {
    /// vCPUs promised per host CPU [default: 16.0].
    pub cpu: Option<f64>,
    /// Memory promised per MiB of host memory (less reserved) [default: 1.5].
    pub memory: Option<f64>,
}

#[derive(InputObject)]
pub struct AddHostInput {
    pub name: String,
    /// A libvirt URI: qemu:///system, qemu+ssh://user@host/system, test:///default or
    /// test:///<absolute path to a node XML>.
    pub uri: String,
    /// The node whose driver holds the connection [default: the node answering].
    pub node: Option<String>,
    pub labels: Option<Vec<LabelInput>>,
    pub overcommit: Option<OvercommitInput>,
    /// Memory the host keeps for itself, not promised to VMs [default: 0].
    #[graphql(name = "reservedMemoryMiB")]
    pub reserved_memory_mib: Option<Int64>,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum FaultKind {
    /// Breaks a host's connection (target: a host) until HOST_RECONNECT; its domains keep
    /// running, as on a real host behind a broken link.
    HostDisconnect,
    /// Makes every libvirt call to a host (target: a host) block until HOST_RECONNECT, as on
    /// a black-holed link: the calls time out (`libvirt_timeout_ms`) and the host is
    /// UNREACHABLE; its domains keep running.
    HostHang,
    /// Heals a host's broken or hung connection at once, and stops the experiments that
    /// held it.
    HostReconnect,
    /// Destroys a VM's domain (target: a VM) behind Troupe's back.
    DomainDestroy,
    /// Destroys and undefines a VM's domain behind Troupe's back.
    DomainUndefine,
    /// Crashes a host's driver (target: a host): its supervisor restarts it and the VMs'
    /// new actors adopt the domains that exist.
    DriverCrash,
    /// Crashes a swarm's coordinator (target: a swarm): its supervisor restarts it alone and
    /// it takes up its living members and open tasks.
    SwarmCoordinatorCrash,
}

#[derive(Default)]
pub struct HostsQuery;

#[Object]
impl HostsQuery {
    /// Every host of the cluster, in id order.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn hosts(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Host>> {
        let listing = ctx.data::<Api>()?.hosts().list().await.gql()?;
        crate::error::partial(ctx, "hosts", &listing.missing);
        Ok(listing.items.into_iter().map(Host).collect())
    }

    /// A host by id, or by name: its `qualifiedName` (`sim-1@beta`), or a bare name only one
    /// host has (a bare name several have is INVALID_INPUT naming each).
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn host(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Host>> {
        Ok(ctx.data::<Api>()?.hosts().get(&id).await.gql()?.map(Host))
    }
}

#[derive(Default)]
pub struct HostsMutation;

#[Object]
impl HostsMutation {
    /// Adds a hypervisor host; its driver starts on `input.node` and connects before this
    /// answers (state UP, or UNREACHABLE with `lastError`).
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn add_host(
        &self,
        ctx: &Context<'_>,
        input: AddHostInput,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Host> {
        let defaults = Overcommit::default();
        let request = AddHostRequest {
            name: input.name,
            uri: input.uri,
            node: input.node,
            labels: pairs(input.labels),
            overcommit: input.overcommit.map(|o| Overcommit {
                cpu: o.cpu.unwrap_or(defaults.cpu),
                memory: o.memory.unwrap_or(defaults.memory),
            }),
            reserved_memory_mib: input
                .reserved_memory_mib
                .map(|m| m.non_negative("reservedMemoryMiB"))
                .transpose()?,
        };
        Ok(Host(
            ctx.data::<Api>()?.hosts().add(request, idempotency_key).await.gql()?,
        ))
    }

    /// Removes a host. Refused (CONFLICT) while it holds VMs, unless `force`: then its VMs
    /// are deleted with it (their domains too, when the host can be reached; a VM it cannot
    /// delete, e.g. one migrating, is the error answered). Refused (CONFLICT) while a VM is
    /// being created on it or migrating to it.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn remove_host(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(default)] force: bool,
    ) -> async_graphql::Result<Host> {
        Ok(Host(ctx.data::<Api>()?.hosts().remove(&id, force).await.gql()?))
    }

    /// Moves every VM off the host (at most `max_outbound_migrations` at once; see
    /// `drain` for progress), then puts it in MAINTENANCE. Answers at once, DRAINING.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn drain_host(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Host> {
        Ok(Host(ctx.data::<Api>()?.hosts().drain(&id).await.gql()?))
    }

    /// Puts an empty host in MAINTENANCE (one holding VMs: CONFLICT, drain it first), or
    /// takes it out (UP again).
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn set_host_maintenance(&self, ctx: &Context<'_>, id: ID, enabled: bool) -> async_graphql::Result<Host> {
        Ok(Host(
            ctx.data::<Api>()?.hosts().set_maintenance(&id, enabled).await.gql()?,
        ))
    }

    /// Injects a fault, for tests and drills; only on a node started with
    /// `--fault-injection` (else FORBIDDEN). Answers what was done. Every kind but
    /// HOST_RECONNECT is a one-fault experiment (its id is in the answer; `experiment(id)`
    /// has the report); HOST_DISCONNECT and HOST_HANG stay armed until HOST_RECONNECT (which
    /// heals the host and stops their experiments), `stopExperiment`, `haltAllFaults` or
    /// `fault_max_duration_ms`.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn inject_fault(&self, ctx: &Context<'_>, target: ID, kind: FaultKind) -> async_graphql::Result<String> {
        use troupe_actors::service::experiments::{select::Selector, FaultAction};
        let api = ctx.data::<Api>()?;
        // A host by id or name; its driver is a child of the tree of the node holding it.
        let host = || async {
            let host = api
                .hosts()
                .get(&target)
                .await
                .gql()?
                .ok_or_else(|| coded("NOT_FOUND", format!("no host {}", target.0)))?;
            let node = api.cluster().holder(&host.spec.id);
            Ok::<_, async_graphql::Error>((host.spec.id, node))
        };
        let (action, selector) = match kind {
            FaultKind::HostReconnect => {
                // Healed at once, then the experiments holding it are judged.
                let said = api.hosts().inject_fault(&target, Fault::HostReconnect).await.gql()?;
                let (id, _) = host().await?;
                let stopped = api.end_host_faults(&id).await.gql()?;
                return Ok(match stopped.is_empty() {
                    true => said,
                    false => format!("{said} (experiment {} stopped)", stopped.join(", ")),
                });
            }
            FaultKind::HostDisconnect | FaultKind::HostHang => {
                let (id, node) = host().await?;
                let action = match kind {
                    FaultKind::HostDisconnect => FaultAction::HostDisconnect,
                    _ => FaultAction::HostHang,
                };
                (action, Selector::one(vec![id], None, node))
            }
            FaultKind::DomainDestroy => (
                FaultAction::DomainDestroy,
                Selector::one(vec![target.0.clone()], None, None),
            ),
            FaultKind::DomainUndefine => (
                FaultAction::DomainUndefine,
                Selector::one(vec![target.0.clone()], None, None),
            ),
            FaultKind::DriverCrash => {
                let (id, node) = host().await?;
                (FaultAction::Crash, Selector::one(vec![id], None, node))
            }
            FaultKind::SwarmCoordinatorCrash => {
                let node = api.cluster().holder(&target);
                let under = Some(target.0.clone());
                (
                    FaultAction::Crash,
                    Selector::one(vec!["coordinator".into()], under, node),
                )
            }
        };
        let e = api
            .one_fault(format!("injectFault {kind:?} {}", target.0), action, selector)
            .await
            .gql()?;
        Ok(format!("{kind:?} injected on {} (experiment {})", target.0, e.id))
    }
}

/// Every kind of host event.
const HOST_EVENTS: [&str; 11] = [
    "HOST_ADDED",
    "HOST_UP",
    "HOST_DRAINING",
    "HOST_MAINTENANCE",
    "HOST_UNREACHABLE",
    "HOST_DOWN",
    "HOST_REMOVED",
    "HOST_DRAIN_PROGRESS",
    "HOST_DRAIN_ENDED",
    "HOST_RESTARTED",
    "HOST_FAILED",
];

#[derive(Default)]
pub struct HostsSubscription;

#[Subscription]
impl HostsSubscription {
    /// This node's hosts (or the one with `id`) as they change: the host after each of its
    /// HOST_* events (state changes, drain progress). A removed host is not sent again.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn host_updates(
        &self,
        ctx: &Context<'_>,
        id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Host>>> {
        let api = ctx.data::<Api>()?.clone();
        if let Some(id) = &id {
            if api.hosts().get(id).await.gql()?.is_none() {
                return Err(coded("NOT_FOUND", format!("no host {}", id.0)));
            }
        }
        let after = api.last_seq().await.gql()?;
        let filter = EventFilter {
            kinds: Some(HOST_EVENTS.iter().map(|k| k.to_string()).collect()),
            subject: id.map(|i| i.0),
        };
        let events = api.subscribe(after, filter);
        Ok(events.filter_map(move |event| {
            let api = api.clone();
            async move {
                match event {
                    Err(e) => Some(Err(crate::error::api(e.into()))),
                    Ok(event) => {
                        let id = event.subject.clone()?;
                        match api.hosts().get(&id).await {
                            Ok(found) => found.map(|h| Ok(Host(h))),
                            Err(e) => Some(Err(crate::error::api(e))),
                        }
                    }
                }
            }
        }))
    }
}

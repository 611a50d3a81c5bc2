//! The host driver: one actor per host, under the node's `hosts` supervisor. It keeps the
//! host's libvirt connection (reconnecting with backoff when it drops), runs the reconcile
//! sweep, destroys stale copies of VMs that now live elsewhere, and supervises one VM actor
//! per VM placed on the host.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde_json::json;
use tokio::task::JoinHandle;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{Batch, Store};
use troupe_runtime::supervision::{
    Backoff, ChildSpec, Intensity, Shutdown, StartOrder, Strategy, Supervisor, SupervisorArgs,
};

use super::fleet::Link;
use super::{DomainObs, Fleet, HostSpec, Libvirt, LibvirtError, NodeCapacity};
use crate::error::ApiError;
use crate::tables::{VMS, VM_STATUS};
use crate::vm::{Observation, VmActor, VmArgs, VmCommand, VmMsg, VmSpec, VmStatus};

/// Reconnect attempts start this far apart and double up to [`RECONNECT_MAX`].
const RECONNECT_BASE: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Faults `injectFault` can cause (with `--fault-injection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Fault {
    /// Breaks the host's connection until healed: every call fails as on a lost link; the
    /// host's domains keep running.
    HostDisconnect,
    /// Makes every libvirt call to the host block until healed, as on a black-holed link:
    /// calls time out and the host is UNREACHABLE; its domains keep running.
    HostHang,
    /// Heals a broken or hung connection.
    HostReconnect,
    /// Destroys the VM's domain behind Troupe's back.
    DomainDestroy,
    /// Destroys and undefines the VM's domain behind Troupe's back.
    DomainUndefine,
    /// Crashes the host's driver: its supervisor restarts it, and the new driver's VM actors
    /// adopt the domains that exist.
    DriverCrash,
}

pub enum HostMsg {
    Tick,
    /// What a tick's look at the host found (asked off the driver's mailbox, so a host that
    /// does not answer holds up none of the driver's other calls).
    Probed(Probe),
    /// Starts the actor of a VM placed on this host.
    AddVm(Box<(VmSpec, VmStatus)>, RpcReplyPort<Result<ActorRef<VmMsg>, ApiError>>),
    Vm(String, RpcReplyPort<Option<ActorRef<VmMsg>>>),
    Vms(RpcReplyPort<Vec<ActorRef<VmMsg>>>),
    /// What libvirt reports on the host now.
    Domains(RpcReplyPort<Result<Vec<DomainObs>, ApiError>>),
    Fault(Fault, Option<String>, RpcReplyPort<Result<(), ApiError>>),
    /// An evacuation task ended.
    Evacuated,
}

impl ractor::Message for HostMsg {}

/// A look at the host, made in a task of its own.
pub enum Probe {
    /// The domains listed on an UP host.
    Sweep(Result<Vec<DomainObs>, LibvirtError>),
    /// A reconnect attempt: whether the connection is new, the capacity and the domains.
    Connect(Result<(bool, NodeCapacity, Vec<DomainObs>), LibvirtError>),
}

/// The node's `hosts` supervisor as a child of the root: one host driver per host.
pub struct HostsChild {
    pub fleet: Arc<Fleet>,
    pub backoff: Backoff,
    pub intensity: Intensity,
}

impl ChildSpec for HostsChild {
    fn id(&self) -> &str {
        "hosts"
    }

    fn kind(&self) -> &str {
        "SUPERVISOR"
    }

    fn shutdown(&self) -> Shutdown {
        Shutdown::Infinity
    }

    fn is_supervisor(&self) -> bool {
        true
    }

    fn start(self: Arc<Self>, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>> {
        Box::pin(async move {
            let children = self
                .fleet
                .host_ids()
                .into_iter()
                .map(|id| host_child(&self.fleet, id, self.intensity))
                .collect();
            let args = SupervisorArgs {
                name: "hosts".into(),
                strategy: Strategy::OneForOne,
                intensity: None,
                backoff: self.backoff,
                children,
                start_order: StartOrder::Concurrent,
                store: self.fleet.store.clone(),
            };
            let (sup, _) =
                Actor::spawn_linked(Some(format!("hosts@{}", self.fleet.node)), Supervisor, args, supervisor).await?;
            self.fleet.supervisor.set(sup.clone());
            Ok(sup.get_cell())
        })
    }
}

pub fn host_child(fleet: &Arc<Fleet>, id: String, intensity: Intensity) -> Arc<dyn ChildSpec> {
    Arc::new(HostChild {
        fleet: fleet.clone(),
        id,
        intensity,
    })
}

struct HostChild {
    fleet: Arc<Fleet>,
    id: String,
    intensity: Intensity,
}

impl ChildSpec for HostChild {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &str {
        "HOST"
    }

    fn intensity(&self) -> Option<Intensity> {
        Some(self.intensity)
    }

    fn start_timeout(&self) -> Duration {
        // Connecting to a remote host may take a while; an unreachable one still starts.
        Duration::from_secs(30)
    }

    fn start(self: Arc<Self>, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>> {
        Box::pin(async move {
            let args = (self.fleet.clone(), self.id.clone());
            let (driver, _) = Actor::spawn_linked(None, HostDriver, args, supervisor).await?;
            Ok(driver.get_cell())
        })
    }

    fn event_data(&self) -> serde_json::Value {
        json!({ "name": self.fleet.spec(&self.id).map(|s| s.name) })
    }
}

pub struct HostDriver;

pub struct Driver {
    id: String,
    spec: HostSpec,
    fleet: Arc<Fleet>,
    libvirt: Libvirt,
    /// VM actors by VM id, with their domain names.
    vms: HashMap<String, (String, ActorRef<VmMsg>)>,
    next_attempt: Instant,
    backoff: Duration,
    evacuating: bool,
    /// A probe is under way: ticks start no other until it reports.
    probing: bool,
    ticker: Option<JoinHandle<()>>,
}

/// However the driver ends (stopped, or failed: ractor calls no `post_stop` then), its VM
/// actors end with it; a new driver starts its own.
impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        for (_, actor) in self.vms.values() {
            actor.stop(Some("its host driver stopped".into()));
        }
    }
}

impl Actor for HostDriver {
    type Msg = HostMsg;
    type State = Driver;
    type Arguments = (Arc<Fleet>, String);

    async fn pre_start(
        &self,
        myself: ActorRef<HostMsg>,
        (fleet, id): (Arc<Fleet>, String),
    ) -> Result<Driver, ActorProcessingErr> {
        let spec = fleet.spec(&id).ok_or_else(|| format!("host {id} is not registered"))?;
        // Known before the host can be seen UP: a call made from then on waits in the mailbox
        // until this start is done instead of finding no driver.
        fleet.set_driver(&id, myself.clone());
        // The session outlives a driver restart: a simulated host's domains live in it.
        let libvirt = match fleet.libvirt(&id) {
            Some(lv) => lv,
            None => {
                let (lv, opened) = Libvirt::open(&spec.uri, fleet.settings.libvirt_timeout).await;
                if let Err(e) = opened {
                    tracing::warn!(host = %spec.name, uri = %spec.uri, error = %e, "host unreachable at start");
                }
                fleet.set_libvirt(&id, lv.clone());
                lv
            }
        };
        let mut driver = Driver {
            id: id.clone(),
            spec,
            fleet: fleet.clone(),
            libvirt,
            vms: HashMap::new(),
            next_attempt: Instant::now(),
            backoff: RECONNECT_BASE,
            evacuating: false,
            probing: false,
            ticker: None,
        };
        driver.connect().await;
        for (spec, status) in owned_vms(&fleet.store, &id).await? {
            driver.spawn_vm(&myself, spec, status).await?;
        }
        driver.ticker = Some(myself.send_interval(fleet.settings.reconcile, || HostMsg::Tick));
        myself.send_message(HostMsg::Tick)?;
        Ok(driver)
    }

    async fn handle(&self, myself: ActorRef<HostMsg>, msg: HostMsg, d: &mut Driver) -> Result<(), ActorProcessingErr> {
        match msg {
            HostMsg::Tick => d.tick(&myself).await,
            HostMsg::Probed(probe) => {
                d.probing = false;
                match probe {
                    Probe::Sweep(Ok(domains)) => d.sweep(domains).await,
                    Probe::Sweep(Err(e)) => d.lost(e).await,
                    Probe::Connect(result) => {
                        d.connected(result).await;
                    }
                }
            }
            HostMsg::AddVm(vm, reply) => {
                let (spec, status) = *vm;
                let _ = reply.send(
                    d.spawn_vm(&myself, spec, status)
                        .await
                        .map_err(|e| ApiError::Internal(e.to_string())),
                );
            }
            HostMsg::Vm(id, reply) => {
                let _ = reply.send(d.vms.get(&id).map(|(_, a)| a.clone()));
            }
            HostMsg::Vms(reply) => {
                let _ = reply.send(d.vms.values().map(|(_, a)| a.clone()).collect());
            }
            HostMsg::Domains(reply) => {
                let libvirt = d.libvirt.clone();
                tokio::spawn(async move {
                    let _ = reply.send(
                        libvirt
                            .domains()
                            .await
                            .map_err(|e| ApiError::Unavailable(e.to_string())),
                    );
                });
            }
            HostMsg::Fault(Fault::DriverCrash, _, reply) => {
                let _ = reply.send(Ok(()));
                return Err(format!("host {} driver crashed (injected fault)", d.spec.name).into());
            }
            HostMsg::Fault(fault, domain, reply) => {
                let _ = reply.send(d.inject(fault, domain).await);
            }
            HostMsg::Evacuated => d.evacuating = false,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<HostMsg>,
        evt: SupervisionEvent,
        d: &mut Driver,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorTerminated(who, _, _) => {
                d.vms.retain(|_, (_, a)| a.get_id() != who.get_id());
            }
            SupervisionEvent::ActorFailed(who, e) => {
                let Some(vm) = d
                    .vms
                    .iter()
                    .find(|(_, (_, a))| a.get_id() == who.get_id())
                    .map(|(id, _)| id.clone())
                else {
                    return Ok(());
                };
                d.vms.remove(&vm);
                tracing::error!(%vm, host = %d.spec.name, error = %e, "VM actor failed; restarting it");
                let found = read_vm(&d.fleet.store, &vm).await?;
                if let Some((spec, status)) = found {
                    d.spawn_vm(&myself, spec, status).await?;
                    let event = NewEvent::new("VM_ACTOR_RESTARTED", Some(vm), json!({ "error": e.to_string() }));
                    d.fleet.store.write(Batch::new().event(event)).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl Driver {
    async fn spawn_vm(
        &mut self,
        myself: &ActorRef<HostMsg>,
        spec: VmSpec,
        status: VmStatus,
    ) -> Result<ActorRef<VmMsg>, ActorProcessingErr> {
        if let Some((_, actor)) = self.vms.get(&spec.id) {
            return Ok(actor.clone());
        }
        let (id, domain) = (spec.id.clone(), spec.domain.clone());
        let args = VmArgs {
            spec,
            status,
            host: self.id.clone(),
            libvirt: self.libvirt.clone(),
            fleet: self.fleet.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, VmActor, args, myself.get_cell()).await?;
        self.vms.insert(id, (domain, actor.clone()));
        Ok(actor)
    }

    /// Checks the connection; on success learns the capacity, sweeps, and is UP.
    async fn connect(&mut self) -> bool {
        let result = probe_connect(&self.libvirt).await;
        self.connected(result).await
    }

    async fn connected(&mut self, result: Result<(bool, NodeCapacity, Vec<DomainObs>), LibvirtError>) -> bool {
        match result {
            Ok((fresh, capacity, domains)) => {
                if fresh {
                    tracing::info!(host = %self.spec.name, uri = %self.spec.uri, "connected");
                }
                // Stale copies go before the host takes new VMs again.
                self.sweep(domains).await;
                self.backoff = RECONNECT_BASE;
                let _ = self.fleet.set_link(&self.id, Link::Up, Some(capacity), None).await;
                true
            }
            Err(e) => {
                self.next_attempt = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(RECONNECT_MAX);
                match self.fleet.link(&self.id) {
                    Some(Link::Up) => {
                        let since = troupe_runtime::clock::now();
                        let _ = self
                            .fleet
                            .set_link(&self.id, Link::Unreachable { since }, None, Some(e.to_string()))
                            .await;
                    }
                    _ => self.fleet.note_error(&self.id, e.to_string()),
                }
                false
            }
        }
    }

    /// An UP host's sweep failed (or did not answer in time): the host is UNREACHABLE.
    async fn lost(&mut self, e: LibvirtError) {
        if self.fleet.link(&self.id) != Some(Link::Up) {
            return;
        }
        tracing::warn!(host = %self.spec.name, error = %e, "host unreachable");
        let since = troupe_runtime::clock::now();
        let _ = self
            .fleet
            .set_link(&self.id, Link::Unreachable { since }, None, Some(e.to_string()))
            .await;
        self.tell_all(Observation::Unreachable);
        self.next_attempt = Instant::now() + self.backoff;
    }

    /// Starts a look at the host in a task of its own; its answer comes back as
    /// [`HostMsg::Probed`]. Every libvirt call is bounded, so the task ends.
    fn probe(&mut self, myself: &ActorRef<HostMsg>, connect: bool) {
        self.probing = true;
        let (libvirt, me) = (self.libvirt.clone(), myself.clone());
        tokio::spawn(async move {
            let probe = if connect {
                Probe::Connect(probe_connect(&libvirt).await)
            } else {
                Probe::Sweep(libvirt.domains().await)
            };
            let _ = me.cast(HostMsg::Probed(probe));
        });
    }

    async fn tick(&mut self, myself: &ActorRef<HostMsg>) {
        if self.probing {
            return;
        }
        match self.fleet.link(&self.id) {
            Some(Link::Up) => self.probe(myself, false),
            Some(Link::Unreachable { since }) => {
                let gone_for = (troupe_runtime::clock::now() - since).to_std().unwrap_or_default();
                if gone_for >= self.fleet.settings.down_after {
                    let _ = self.fleet.set_link(&self.id, Link::Down { since }, None, None).await;
                    self.evacuate(myself);
                } else if Instant::now() >= self.next_attempt {
                    self.probe(myself, true);
                }
            }
            Some(Link::Down { .. }) => {
                // VMs that found no host last time are tried again.
                self.evacuate(myself);
                if Instant::now() >= self.next_attempt {
                    self.probe(myself, true);
                }
            }
            None => {}
        }
    }

    fn tell_all(&self, obs: Observation) {
        for (_, actor) in self.vms.values() {
            let _ = actor.cast(VmMsg::Observed(obs.clone()));
        }
    }

    /// Hands each VM actor what libvirt reports of its domain, and destroys Troupe domains
    /// no VM here (or migrating here) claims: stale copies of VMs that live elsewhere now.
    async fn sweep(&mut self, domains: Vec<DomainObs>) {
        let mut by_name: HashMap<String, DomainObs> = domains.into_iter().map(|d| (d.name.clone(), d)).collect();
        for (domain, actor) in self.vms.values() {
            let _ = actor.cast(VmMsg::Observed(Observation::Seen(by_name.remove(domain))));
        }
        let ours: HashSet<&str> = self.vms.values().map(|(d, _)| d.as_str()).collect();
        for (name, obs) in by_name {
            if !name.starts_with("troupe-") || ours.contains(name.as_str()) || self.fleet.expects(&self.id, &name) {
                continue;
            }
            match self.libvirt.remove(&name).await {
                Ok(()) => {
                    tracing::warn!(host = %self.spec.name, domain = %name, "destroyed a stale copy of a VM that lives elsewhere");
                    let event = NewEvent::new(
                        "VM_STALE_COPY_DESTROYED",
                        Some(self.id.clone()),
                        json!({ "host": self.spec.name, "domain": name, "state": format!("{:?}", obs.state) }),
                    );
                    let _ = self.fleet.store.write(Batch::new().event(event)).await;
                }
                Err(e) => {
                    tracing::warn!(host = %self.spec.name, domain = %name, error = %e, "cannot remove a stale domain")
                }
            }
        }
    }

    fn evacuate(&mut self, myself: &ActorRef<HostMsg>) {
        if self.evacuating || self.vms.is_empty() {
            return;
        }
        self.evacuating = true;
        let (fleet, host, me) = (self.fleet.clone(), self.id.clone(), myself.clone());
        let actors: Vec<ActorRef<VmMsg>> = self.vms.values().map(|(_, a)| a.clone()).collect();
        tokio::spawn(async move {
            super::moves::evacuate(&fleet, &host, actors).await;
            let _ = me.cast(HostMsg::Evacuated);
        });
    }

    async fn inject(&mut self, fault: Fault, vm: Option<String>) -> Result<(), ApiError> {
        let lost = |e: LibvirtError| ApiError::Unavailable(e.to_string());
        match fault {
            Fault::HostDisconnect => self
                .libvirt
                .set_broken(Some("connection lost (injected fault)".into()))
                .await
                .map_err(lost)?,
            Fault::HostHang => self.libvirt.set_hang(true),
            Fault::HostReconnect => {
                self.libvirt.set_hang(false);
                self.libvirt.set_broken(None).await.map_err(lost)?
            }
            Fault::DriverCrash => {}
            Fault::DomainDestroy | Fault::DomainUndefine => {
                let vm = vm.ok_or_else(|| ApiError::invalid("this fault needs a VM as its target"))?;
                let (domain, _) = self
                    .vms
                    .get(&vm)
                    .ok_or_else(|| ApiError::NotFound(format!("no VM {vm} on host {}", self.spec.name)))?;
                if fault == Fault::DomainDestroy {
                    self.libvirt.on_domain(domain, |d| d.destroy()).await.map_err(lost)?;
                } else {
                    self.libvirt.remove(domain).await.map_err(lost)?;
                }
            }
        }
        // Reset the reconnect backoff so a healed link is noticed at the next tick.
        self.next_attempt = Instant::now();
        self.backoff = RECONNECT_BASE;
        tracing::warn!(host = %self.spec.name, ?fault, "fault injected");
        Ok(())
    }
}

/// Reconnects if need be, then learns the host's capacity and domains.
async fn probe_connect(libvirt: &Libvirt) -> Result<(bool, NodeCapacity, Vec<DomainObs>), LibvirtError> {
    let fresh = libvirt.reconnect().await?;
    let capacity = libvirt.capacity().await?;
    let domains = libvirt.domains().await?;
    Ok((fresh, capacity, domains))
}

/// The VMs whose status names this host.
async fn owned_vms(store: &Store, host: &str) -> Result<Vec<(VmSpec, VmStatus)>, ApiError> {
    let host = host.to_owned();
    Ok(store
        .view(move |v| {
            let mut out = Vec::new();
            v.scan(VM_STATUS, None, |id, bytes| {
                let status: VmStatus = troupe_runtime::codec::decode(bytes)?;
                if status.host.as_deref() == Some(host.as_str()) {
                    if let Some(spec) = v.get(VMS, id)? {
                        out.push((troupe_runtime::codec::decode(&spec)?, status));
                    }
                }
                Ok(true)
            })?;
            Ok(out)
        })
        .await?)
}

pub(crate) async fn read_vm(store: &Store, id: &str) -> Result<Option<(VmSpec, VmStatus)>, ApiError> {
    let id = id.to_owned();
    Ok(store
        .view(move |v| {
            let Some(spec) = v.get(VMS, &id)? else {
                return Ok(None);
            };
            let status = match v.get(VM_STATUS, &id)? {
                Some(b) => troupe_runtime::codec::decode(&b)?,
                None => VmStatus::new(None),
            };
            Ok(Some((troupe_runtime::codec::decode(&spec)?, status)))
        })
        .await?)
}

/// Asks a VM actor to act, and waits for its answer.
pub(crate) async fn act(
    actor: &ActorRef<VmMsg>,
    command: VmCommand,
    wait: Duration,
) -> Result<crate::vm::VmView, ApiError> {
    match actor.call(|r| VmMsg::Act(command, r), Some(wait)).await {
        Ok(ractor::rpc::CallResult::Success(answer)) => answer,
        Ok(ractor::rpc::CallResult::Timeout) => Err(ApiError::Unavailable("the VM did not answer in time".into())),
        _ => Err(ApiError::Unavailable("the VM's actor is not running".into())),
    }
}

#[cfg(test)]
mod tests;

//! The host driver: one actor per host, under the node's `hosts` supervisor. It keeps the
//! host's libvirt connection (when to probe, reconnect and evacuate is the link machine's
//! decision, `link.rs`), runs the reconcile sweep, destroys stale copies of VMs that now live
//! elsewhere, and supervises one VM actor per VM placed on the host.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde_json::json;
use tokio::task::JoinHandle;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::Batch;
use troupe_runtime::supervision::UNRESPONSIVE;

use super::link::{At, Effect, Input, Link, LinkMachine};
use super::{DomainObs, Fault, Fleet, HostSpec, Libvirt, LibvirtError, Listed, NodeCapacity};
use crate::error::ApiError;
use crate::vm::{owned_vms, read_vm, Observation, VmActor, VmArgs, VmMsg, VmSpec, VmStatus};

/// What a probe found of the host, for the effects that use it.
struct Found {
    domains: Vec<DomainObs>,
    capacity: Option<NodeCapacity>,
    /// When the look began: a VM that acted on its domain or read it since knows better.
    taken: Instant,
}

impl Default for Found {
    fn default() -> Self {
        Self::domains(Vec::new(), Instant::now())
    }
}

impl Found {
    fn domains(domains: Vec<DomainObs>, taken: Instant) -> Self {
        Self {
            domains,
            capacity: None,
            taken,
        }
    }
}

pub enum HostMsg {
    Tick,
    /// The watchdog's ping: answered at once unless the loop is stuck.
    Ping(ractor::RpcReplyPort<()>),
    /// Holds the loop until released (fault injection: HANG).
    Hold(
        tokio::sync::watch::Receiver<bool>,
        tokio::sync::mpsc::UnboundedSender<()>,
    ),
    /// What a tick's look at the host found (asked off the driver's mailbox, so a host that
    /// does not answer holds up none of the driver's other calls).
    /// What a probe found, and when it began to look.
    Probed(Probe, Instant),
    /// Starts the actor of a VM placed on this host.
    AddVm(Box<(VmSpec, VmStatus)>, RpcReplyPort<Result<ActorRef<VmMsg>, ApiError>>),
    Vm(String, RpcReplyPort<Option<ActorRef<VmMsg>>>),
    /// The VMs' actors, by VM id.
    Vms(RpcReplyPort<Vec<(String, ActorRef<VmMsg>)>>),
    /// Kills a VM's actor that stopped answering (the watchdog); it is started again, as a
    /// failed one is.
    KillVm(String),
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

pub struct HostDriver;

pub struct Driver {
    id: String,
    spec: HostSpec,
    fleet: Arc<Fleet>,
    libvirt: Libvirt,
    /// VM actors by VM id, with their domain names.
    vms: HashMap<String, (String, ActorRef<VmMsg>)>,
    link: LinkMachine,
    /// The first connect attempt has reported.
    looked: bool,
    ticker: Option<JoinHandle<()>>,
    /// VM actors killed for not answering: their exit is a failure.
    killed: HashSet<ActorId>,
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
        // The session outlives a driver restart: a simulated host's domains live in it. The
        // start asks nothing of the host: one that does not answer holds up neither this
        // start nor the `hosts` supervisor; the first probe connects.
        let libvirt = match fleet.libvirt(&id) {
            Some(lv) => lv,
            None => {
                let lv = Libvirt::new(&spec.uri, fleet.settings.libvirt_timeout);
                fleet.set_libvirt(&id, lv.clone());
                lv
            }
        };
        // The fleet keeps the link across driver restarts.
        let link = fleet.link(&id).unwrap_or(Link::Unreachable {
            since: troupe_runtime::clock::now(),
        });
        let mut driver = Driver {
            id: id.clone(),
            spec,
            fleet: fleet.clone(),
            libvirt,
            vms: HashMap::new(),
            link: LinkMachine::new(link, fleet.settings.down_after, Instant::now()),
            looked: false,
            ticker: None,
            killed: HashSet::new(),
        };
        for (spec, status) in owned_vms(&fleet.store, &id).await? {
            driver.spawn_vm(&myself, spec, status).await?;
        }
        driver.step(&myself, Input::Start, Found::default()).await;
        driver.ticker = Some(myself.send_interval(fleet.settings.reconcile, || HostMsg::Tick));
        Ok(driver)
    }

    async fn handle(&self, myself: ActorRef<HostMsg>, msg: HostMsg, d: &mut Driver) -> Result<(), ActorProcessingErr> {
        match msg {
            HostMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            HostMsg::Hold(release, held) => crate::liveness::held(&d.id, release, held).await,
            HostMsg::Tick => {
                let has_vms = !d.vms.is_empty();
                d.step(&myself, Input::Tick { has_vms }, Found::default()).await
            }
            HostMsg::Probed(probe, taken) => d.probed(&myself, probe, taken).await,
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
                let _ = reply.send(d.vms.iter().map(|(id, (_, a))| (id.clone(), a.clone())).collect());
            }
            HostMsg::KillVm(vm) => {
                if let Some((_, actor)) = d.vms.get(&vm) {
                    tracing::warn!(%vm, host = %d.spec.name, "killing an unresponsive VM actor");
                    d.killed.insert(actor.get_id());
                    actor.kill();
                }
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
            HostMsg::Evacuated => d.step(&myself, Input::Evacuated, Found::default()).await,
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
            SupervisionEvent::ActorTerminated(who, _, _) if d.killed.remove(&who.get_id()) => {
                d.restart_vm(&myself, who.get_id(), UNRESPONSIVE.to_owned()).await?;
            }
            SupervisionEvent::ActorTerminated(who, _, _) => {
                d.vms.retain(|_, (_, a)| a.get_id() != who.get_id());
            }
            SupervisionEvent::ActorFailed(who, e) => d.restart_vm(&myself, who.get_id(), e.to_string()).await?,
            _ => {}
        }
        Ok(())
    }
}

impl Driver {
    /// Starts again the actor of a VM whose actor failed (or was killed for not answering),
    /// from the VM's record.
    async fn restart_vm(
        &mut self,
        myself: &ActorRef<HostMsg>,
        gone: ActorId,
        error: String,
    ) -> Result<(), ActorProcessingErr> {
        let Some(vm) = self
            .vms
            .iter()
            .find(|(_, (_, a))| a.get_id() == gone)
            .map(|(id, _)| id.clone())
        else {
            return Ok(());
        };
        self.vms.remove(&vm);
        tracing::error!(%vm, host = %self.spec.name, %error, "VM actor failed; restarting it");
        if let Some((spec, status)) = read_vm(&self.fleet.store, &vm).await? {
            self.spawn_vm(myself, spec, status).await?;
            let event = NewEvent::new("VM_ACTOR_RESTARTED", Some(vm), json!({ "error": error }));
            self.fleet.store.write(Batch::new().event(event)).await?;
        }
        Ok(())
    }

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

    /// Hands the link machine what a probe found, and carries out what it decides.
    async fn probed(&mut self, myself: &ActorRef<HostMsg>, probe: Probe, taken: Instant) {
        let (input, found) = match probe {
            Probe::Sweep(Ok(domains)) => (Input::Swept(Ok(())), Found::domains(domains, taken)),
            Probe::Sweep(Err(e)) => {
                if self.link.link() == Link::Up {
                    tracing::warn!(host = %self.spec.name, error = %e, "host unreachable");
                }
                (Input::Swept(Err(e.to_string())), Found::default())
            }
            Probe::Connect(Ok((fresh, capacity, domains))) => {
                if fresh {
                    tracing::info!(host = %self.spec.name, uri = %self.spec.uri, "connected");
                }
                let found = Found {
                    capacity: Some(capacity),
                    ..Found::domains(domains, taken)
                };
                (Input::Connected(Ok(())), found)
            }
            Probe::Connect(Err(e)) => {
                if !self.looked {
                    tracing::warn!(host = %self.spec.name, uri = %self.spec.uri, error = %e, "host unreachable at start");
                }
                (Input::Connected(Err(e.to_string())), Found::default())
            }
        };
        if matches!(input, Input::Swept(Ok(())) | Input::Connected(Ok(()))) {
            let ago = chrono::Duration::from_std(taken.elapsed()).unwrap_or_default();
            let listed = Listed {
                at: troupe_runtime::clock::now() - ago,
                domains: found.domains.clone(),
            };
            self.fleet.listed(&self.id, listed);
        }
        let connect = matches!(input, Input::Connected(_));
        self.step(myself, input, found).await;
        if connect && !self.looked {
            self.looked = true;
            self.fleet.looked(&self.id);
        }
    }

    /// Steps the link machine and carries out its effects, in order.
    async fn step(&mut self, myself: &ActorRef<HostMsg>, input: Input, mut found: Found) {
        for effect in self.link.step(input, At::now()) {
            match effect {
                Effect::Sweep => self.sweep(std::mem::take(&mut found.domains), found.taken).await,
                Effect::Record { link, error } => {
                    let capacity = found.capacity.filter(|_| link == Link::Up);
                    let _ = self.fleet.set_link(&self.id, link, capacity, error).await;
                }
                Effect::NoteError(error) => self.fleet.note_error(&self.id, error),
                Effect::TellUnreachable => self.tell_all(Observation::Unreachable, found.taken),
                Effect::Probe { connect } => self.probe(myself, connect),
                Effect::Evacuate => self.evacuate(myself),
            }
        }
    }

    /// Starts a look at the host in a task of its own; its answer comes back as
    /// [`HostMsg::Probed`]. Every libvirt call is bounded, so the task ends.
    fn probe(&self, myself: &ActorRef<HostMsg>, connect: bool) {
        let (libvirt, me) = (self.libvirt.clone(), myself.clone());
        tokio::spawn(async move {
            let taken = Instant::now();
            let probe = if connect {
                Probe::Connect(probe_connect(&libvirt).await)
            } else {
                Probe::Sweep(libvirt.domains().await)
            };
            let _ = me.cast(HostMsg::Probed(probe, taken));
        });
    }

    fn tell_all(&self, obs: Observation, taken: Instant) {
        for (_, actor) in self.vms.values() {
            let _ = actor.cast(VmMsg::Observed(obs.clone(), taken));
        }
    }

    /// Hands each VM actor what libvirt reports of its domain, and destroys Troupe domains
    /// no VM here (or migrating here) claims: stale copies of VMs that live elsewhere now.
    async fn sweep(&mut self, domains: Vec<DomainObs>, taken: Instant) {
        let mut by_name: HashMap<String, DomainObs> = domains.into_iter().map(|d| (d.name.clone(), d)).collect();
        for (domain, actor) in self.vms.values() {
            let _ = actor.cast(VmMsg::Observed(Observation::Seen(by_name.remove(domain)), taken));
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

    /// Evacuates the host's VMs in a task of its own, which reports [`HostMsg::Evacuated`].
    fn evacuate(&self, myself: &ActorRef<HostMsg>) {
        let (fleet, host, me) = (self.fleet.clone(), self.id.clone(), myself.clone());
        let actors: Vec<ActorRef<VmMsg>> = self.vms.values().map(|(_, a)| a.clone()).collect();
        tokio::spawn(async move {
            super::evacuate::evacuate(&fleet, &host, actors).await;
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
        // A healed link is noticed at the next tick.
        self.link.step(Input::Reset, At::now());
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

#[cfg(test)]
mod tests;

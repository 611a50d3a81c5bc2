//! The VM actor: one per VM, a child of its host's driver. It acts on its domain through the
//! host's libvirt thread, and at each of the driver's sweeps compares what libvirt reports
//! with what the VM is meant to be, acting by the run policy. Every state it records is one
//! libvirt reported; when the host cannot be asked, the state is UNKNOWN.

use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::Batch;

mod act;

use super::{decide, Migration, Observation, Step, VmCommand, VmMsg, VmSpec, VmState, VmStatus, VmView, Want};
use crate::error::ApiError;
use crate::host::{DomainObs, Fleet, Libvirt, LibvirtError};
use crate::tables::{VMS, VM_STATUS};

pub struct VmActor;

pub struct VmArgs {
    pub spec: VmSpec,
    pub status: VmStatus,
    pub host: String,
    pub libvirt: Libvirt,
    pub fleet: Arc<Fleet>,
}

pub struct Vm {
    spec: VmSpec,
    status: VmStatus,
    host: String,
    libvirt: Libvirt,
    fleet: Arc<Fleet>,
    migrating: bool,
    /// Handing the VM over to another host's actor: nothing is acted on or written.
    leaving: bool,
    /// Nothing observed yet by this incarnation (the first sighting adopts or re-creates).
    fresh: bool,
    /// Seen running at least once: a later start by policy is a restart.
    ran: bool,
    /// When this actor's last successful read of its domain began (it reads after each of
    /// its actions): a sweep whose look began before that may show the domain as it was
    /// before the action.
    read_at: Option<Instant>,
    last_sample: Option<(u64, Instant)>,
}

impl Actor for VmActor {
    type Msg = VmMsg;
    type State = Vm;
    type Arguments = VmArgs;

    async fn pre_start(&self, _myself: ActorRef<VmMsg>, args: VmArgs) -> Result<Vm, ActorProcessingErr> {
        Ok(Vm {
            ran: matches!(args.status.state, VmState::Running | VmState::Paused),
            migrating: args.status.migration.as_ref().is_some_and(|m| !m.phase.is_over()),
            leaving: false,
            spec: args.spec,
            status: args.status,
            host: args.host,
            libvirt: args.libvirt,
            fleet: args.fleet,
            fresh: true,
            read_at: None,
            last_sample: None,
        })
    }

    async fn handle(&self, myself: ActorRef<VmMsg>, msg: VmMsg, vm: &mut Vm) -> Result<(), ActorProcessingErr> {
        match msg {
            VmMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            VmMsg::Hold(release, held) => crate::liveness::held(&vm.spec.id, release, held).await,
            VmMsg::Observed(..) if vm.leaving => {}
            // Older than what the actor read itself: the next sweep tells what is true now.
            VmMsg::Observed(_, taken) if vm.read_at.is_some_and(|read| taken < read) => {}
            VmMsg::Observed(obs, _) => {
                if let Err(e) = vm.reconcile(obs).await {
                    vm.note_error(e).await;
                }
            }
            VmMsg::Act(command, reply) if vm.leaving => {
                let _ = reply.send(Err(ApiError::Conflict(format!(
                    "VM {} is moving to another host; {} waits until it is there",
                    vm.spec.id,
                    command.name()
                ))));
            }
            VmMsg::Act(command, reply) => {
                let delete = command == VmCommand::Delete;
                let answer = vm.act(command).await;
                let deleted = delete && answer.is_ok();
                let _ = reply.send(answer);
                if deleted {
                    myself.stop(Some("deleted".into()));
                }
            }
            VmMsg::Get(reply) => {
                let _ = reply.send(vm.view());
            }
            VmMsg::Migrating(migration, reply) => {
                vm.migrating = !migration.phase.is_over();
                if migration.phase.is_over() {
                    vm.leaving = false;
                }
                let event = vm.event(
                    &format!("VM_MIGRATION_{}", migration.phase.name()),
                    migration_data(&migration),
                );
                vm.status.migration = Some(migration);
                let _ = reply.send(vm.save(Some(event)).await);
            }
            VmMsg::Leave { host, migration, reply } => {
                vm.leaving = true;
                let mut view = vm.view();
                view.status.host = Some(host);
                view.status.migration = Some(migration);
                let _ = reply.send(view);
            }
            VmMsg::Stay => vm.leaving = false,
            VmMsg::Arrive(reply) => {
                let event = vm.status.migration.as_ref().map(|m| {
                    let kind = if m.reason == "evacuation" {
                        "VM_EVACUATED".to_owned()
                    } else {
                        format!("VM_MIGRATION_{}", m.phase.name())
                    };
                    let mut data = migration_data(m);
                    data["from"] = json!(m.source);
                    vm.event(&kind, data)
                });
                let answer = vm.save(event).await.map(|_| vm.view());
                if answer.is_ok() {
                    tracing::info!(vm = %vm.spec.id, to = %vm.host, "VM taken over from another host");
                }
                let _ = reply.send(answer);
            }
        }
        Ok(())
    }
}

impl Vm {
    fn view(&self) -> VmView {
        VmView {
            spec: self.spec.clone(),
            status: self.status.clone(),
        }
    }

    async fn note_error(&mut self, e: LibvirtError) {
        let text = e.to_string();
        if self.status.last_error.as_deref() != Some(text.as_str()) {
            tracing::warn!(vm = %self.spec.id, error = %text, "VM reconcile failed");
            self.status.last_error = Some(text);
            let _ = self.save(None).await;
        }
    }

    /// Keeps spec and status, with an event when there is one.
    async fn save(&self, event: Option<NewEvent>) -> Result<(), ApiError> {
        let mut batch = Batch::new()
            .put(VMS, self.spec.id.clone(), troupe_runtime::codec::encode(&self.spec)?)
            .put(
                VM_STATUS,
                self.spec.id.clone(),
                troupe_runtime::codec::encode(&self.status)?,
            );
        if let Some(event) = event {
            batch = batch.event(event);
        }
        self.fleet.store.write(batch).await?;
        Ok(())
    }

    fn event(&self, kind: &str, mut data: serde_json::Value) -> NewEvent {
        if let Some(map) = data.as_object_mut() {
            map.insert("name".into(), json!(self.spec.name));
            map.insert("host".into(), json!(self.host));
        }
        NewEvent::new(kind, Some(self.spec.id.clone()), data)
    }

    /// Records what libvirt reported (state and reason), with a `VM_<STATE>` event when the
    /// state changed.
    async fn record(&mut self, state: VmState, reason: Option<String>, cause: &str) -> Result<(), ApiError> {
        let now = troupe_runtime::clock::now();
        let before = self.status.state;
        self.status.observed_at = Some(now);
        if state == VmState::Running {
            self.ran = true;
        }
        if before == state && self.status.reason == reason {
            return Ok(());
        }
        self.status.state = state;
        self.status.reason = reason.clone();
        if state != VmState::Unknown {
            self.status.last_error = None;
        }
        let event = (before != state).then(|| {
            self.event(
                &format!("VM_{}", state.name()),
                json!({ "from": before.name(), "to": state.name(), "reason": reason, "cause": cause }),
            )
        });
        self.save(event).await
    }

    async fn observe(&mut self, cause: &str) -> Result<Option<DomainObs>, ApiError> {
        let began = Instant::now();
        let obs = self.libvirt.observe(&self.spec.domain).await.map_err(unavailable)?;
        self.read_at = Some(began);
        match &obs {
            Some(o) => {
                self.sample(o);
                self.record(VmState::of(o.state), Some(o.reason.clone()), cause).await?;
            }
            None => self.record(VmState::Missing, None, cause).await?,
        }
        Ok(obs)
    }

    fn sample(&mut self, o: &DomainObs) {
        let now = Instant::now();
        if let Some((cpu, at)) = self.last_sample {
            let secs = now.duration_since(at).as_secs_f64();
            if secs > 0.0 {
                self.status.stats.cpu_cores = o.cpu_time_ns.saturating_sub(cpu) as f64 / 1e9 / secs;
            }
        }
        self.last_sample = Some((o.cpu_time_ns, now));
        self.status.stats.cpu_time_ns = o.cpu_time_ns;
        self.status.stats.memory_kib = o.memory_kib;
        self.status.stats.sampled_at = Some(troupe_runtime::clock::now());
        self.fleet.sampled(&self.spec.id, self.status.stats);
    }

    async fn define(&self) -> Result<(), LibvirtError> {
        let xml = crate::host::domain_xml(
            self.libvirt.uri(),
            &self.spec.domain,
            &self.spec.uuid,
            self.spec.vcpus,
            self.spec.memory_mib,
        );
        self.libvirt.define(xml).await
    }

    async fn reconcile(&mut self, obs: Observation) -> Result<(), LibvirtError> {
        let fresh = std::mem::replace(&mut self.fresh, false);
        let obs = match obs {
            Observation::Unreachable => {
                let _ = self
                    .record(VmState::Unknown, Some("host unreachable".into()), "reconcile")
                    .await;
                return Ok(());
            }
            Observation::Seen(obs) => obs,
        };
        if self.migrating {
            // The migration owns the domains until it ends; only the state is recorded.
            if let Some(o) = &obs {
                self.sample(o);
                let _ = self
                    .record(VmState::of(o.state), Some(o.reason.clone()), "reconcile")
                    .await;
            }
            return Ok(());
        }
        let obs = match obs {
            Some(o) => {
                if fresh && self.status.state != VmState::Pending {
                    let _ = self
                        .save(Some(
                            self.event("VM_ADOPTED", json!({ "state": VmState::of(o.state).name() })),
                        ))
                        .await;
                }
                o
            }
            None => {
                // Undefined behind Troupe's back, or a host rebuilt empty (a simulated host
                // after a restart): define it again from the spec. A VM never observed yet
                // is being created: its domain is simply defined.
                if self.status.state != VmState::Pending {
                    let kind = if fresh { "VM_RECREATED" } else { "VM_DOMAIN_MISSING" };
                    let _ = self.record(VmState::Missing, None, "reconcile").await;
                    let event = self.event(kind, json!({ "action": "defined again from its spec" }));
                    let _ = self.save(Some(event)).await;
                }
                self.define().await?;
                let began = Instant::now();
                let seen = self.libvirt.observe(&self.spec.domain).await?;
                self.read_at = Some(began);
                match seen {
                    Some(o) => o,
                    None => return Ok(()),
                }
            }
        };
        self.sample(&obs);
        let _ = self
            .record(VmState::of(obs.state), Some(obs.reason.clone()), "reconcile")
            .await;
        self.apply(
            decide(self.spec.run_policy, self.spec.want, obs.state, &obs.reason),
            &obs,
        )
        .await
    }

    async fn apply(&mut self, step: Step, obs: &DomainObs) -> Result<(), LibvirtError> {
        match step {
            Step::Nothing => Ok(()),
            Step::Start => {
                let restart = self.ran;
                self.libvirt
                    .on_domain(&self.spec.domain, |d| d.create().map(|_| ()))
                    .await?;
                if restart {
                    self.status.restarts += 1;
                }
                let event = self.event(
                    if restart { "VM_RESTARTED" } else { "VM_STARTED" },
                    json!({ "policy": format!("{:?}", self.spec.run_policy), "was": obs.reason, "restarts": self.status.restarts }),
                );
                let _ = self.save(Some(event)).await;
                let _ = self.observe("runPolicy").await;
                Ok(())
            }
            Step::Destroy => {
                self.libvirt.on_domain(&self.spec.domain, |d| d.destroy()).await?;
                let _ = self.observe("runPolicy").await;
                Ok(())
            }
            Step::KeepStopped => {
                self.spec.want = Want::Stopped;
                let _ = self
                    .save(Some(self.event(
                        "VM_LEFT_STOPPED",
                        json!({ "policy": format!("{:?}", self.spec.run_policy), "reason": obs.reason }),
                    )))
                    .await;
                Ok(())
            }
            Step::KeepRunning => {
                self.spec.want = Want::Running;
                let _ = self.save(None).await;
                Ok(())
            }
        }
    }
}

pub(crate) fn migration_data(m: &Migration) -> serde_json::Value {
    json!({
        "migration": m.id,
        "phase": m.phase.name(),
        "source": m.source,
        "target": m.target,
        "kind": m.kind.map(|k| format!("{k:?}").to_uppercase()),
        "reason": m.reason,
        "error": m.error,
    })
}

fn unavailable(e: LibvirtError) -> ApiError {
    match e {
        LibvirtError::Lost(m) => ApiError::Unavailable(format!("the VM's host is unreachable: {m}")),
        LibvirtError::Call { message, .. } => ApiError::Conflict(format!("libvirt refused: {message}")),
    }
}

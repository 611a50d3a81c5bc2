//! The commands a VM's actor carries out on its domain (start, stop, reboot, pause, resume,
//! delete, and createVm's first reconcile).

use std::time::Duration;

use serde_json::json;
use troupe_runtime::store::Batch;

use super::{unavailable, Vm};
use crate::error::ApiError;
use crate::tables::{VMS, VM_STATUS};
use crate::vm::{decide, RunPolicy, Step, VmCommand, VmState, VmView, Want};

impl Vm {
    pub(super) async fn act(&mut self, command: VmCommand) -> Result<VmView, ApiError> {
        if self.migrating && command != VmCommand::Ensure {
            return Err(ApiError::Conflict(format!(
                "VM {} is migrating; {} waits until it ends",
                self.spec.id,
                command.name()
            )));
        }
        let current = self.libvirt.observe(&self.spec.domain).await.map_err(unavailable)?;
        let active = current.as_ref().is_some_and(|o| o.state.is_active());
        let state = current.as_ref().map(|o| VmState::of(o.state));
        let cause = command.name();
        match command {
            VmCommand::Ensure => {
                let obs = if current.is_none() {
                    self.define().await.map_err(unavailable)?;
                    // Just defined, the domain is shut off until its run policy starts it:
                    // that passing state is not told (the VM goes from PENDING to what the
                    // policy makes of it, not through a VM_STOPPED first).
                    let seen = self.libvirt.observe(&self.spec.domain).await.map_err(unavailable)?;
                    let starts = seen.as_ref().is_some_and(|o| {
                        decide(self.spec.run_policy, self.spec.want, o.state, &o.reason) == Step::Start
                    });
                    match starts {
                        true => seen,
                        false => self.observe(cause).await?,
                    }
                } else {
                    self.observe(cause).await?
                };
                self.fresh = false;
                if let Some(o) = obs {
                    let step = decide(self.spec.run_policy, self.spec.want, o.state, &o.reason);
                    self.apply(step, &o).await.map_err(unavailable)?;
                }
            }
            VmCommand::Start => {
                if self.spec.run_policy == RunPolicy::Halted {
                    self.spec.run_policy = RunPolicy::Always;
                }
                self.spec.want = Want::Running;
                if current.is_none() {
                    self.define().await.map_err(unavailable)?;
                }
                if state == Some(VmState::Paused) {
                    self.libvirt
                        .on_domain(&self.spec.domain, |d| d.resume())
                        .await
                        .map_err(unavailable)?;
                } else if !active {
                    self.libvirt
                        .on_domain(&self.spec.domain, |d| d.create().map(|_| ()))
                        .await
                        .map_err(unavailable)?;
                }
                self.save(None).await?;
                self.observe(cause).await?;
            }
            VmCommand::Stop { timeout } => {
                if matches!(self.spec.run_policy, RunPolicy::Always | RunPolicy::RerunOnFailure) {
                    self.spec.run_policy = RunPolicy::Halted;
                }
                self.spec.want = Want::Stopped;
                self.save(None).await?;
                if active {
                    self.stop_gracefully(timeout).await?;
                }
                self.observe(cause).await?;
            }
            VmCommand::Reboot => {
                if state != Some(VmState::Running) {
                    return Err(self.not_in("RUNNING", state));
                }
                self.libvirt
                    .on_domain(&self.spec.domain, |d| d.reboot(0))
                    .await
                    .map_err(unavailable)?;
                self.save(Some(self.event("VM_REBOOTED", json!({})))).await?;
                self.observe(cause).await?;
            }
            VmCommand::Pause => {
                if state != Some(VmState::Running) {
                    return Err(self.not_in("RUNNING", state));
                }
                self.libvirt
                    .on_domain(&self.spec.domain, |d| d.suspend())
                    .await
                    .map_err(unavailable)?;
                self.observe(cause).await?;
            }
            VmCommand::Resume => {
                if state != Some(VmState::Paused) {
                    return Err(self.not_in("PAUSED", state));
                }
                self.libvirt
                    .on_domain(&self.spec.domain, |d| d.resume())
                    .await
                    .map_err(unavailable)?;
                self.observe(cause).await?;
            }
            VmCommand::Delete => {
                self.libvirt.remove(&self.spec.domain).await.map_err(unavailable)?;
                let event = self.event("VM_DELETED", json!({}));
                self.fleet
                    .store
                    .write(
                        Batch::new()
                            .delete(VMS, self.spec.id.clone())
                            .delete(VM_STATUS, self.spec.id.clone())
                            .event(event),
                    )
                    .await?;
                self.fleet.release(&self.spec.id, &self.host);
            }
        }
        Ok(self.view())
    }

    /// Asks the guest to shut down, waits up to `timeout`, then destroys the domain.
    async fn stop_gracefully(&mut self, timeout: Duration) -> Result<(), ApiError> {
        self.libvirt
            .on_domain(&self.spec.domain, |d| d.shutdown())
            .await
            .map_err(unavailable)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let o = self.libvirt.observe(&self.spec.domain).await.map_err(unavailable)?;
            if !o.is_some_and(|o| o.state.is_active()) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(vm = %self.spec.id, "guest did not shut down in time; destroying it");
                return self
                    .libvirt
                    .on_domain(&self.spec.domain, |d| d.destroy())
                    .await
                    .map_err(unavailable);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn not_in(&self, wanted: &str, state: Option<VmState>) -> ApiError {
        ApiError::Conflict(format!(
            "VM {} is {}, not {wanted}",
            self.spec.id,
            state.map_or("MISSING", VmState::name)
        ))
    }
}

//! Virtual machines: spec and status, the VM actor that reconciles the two, and the pure rule
//! it follows ([`decide`]); creating VMs, acting on them through their actors, and migrating
//! them between this node's hosts.

mod actor;
mod command;
mod create;
mod gauge;
mod handle;
mod migrate;
mod spec;

pub(crate) use actor::migration_data;
pub use actor::{VmActor, VmArgs};
pub use command::{Observation, VmCommand, VmMsg};
pub(crate) use create::create;
pub(crate) use gauge::VmGauge;
pub(crate) use handle::{act_on, get, locate, owned_vms, read_vm, view_of, vm_actor};
pub(crate) use migrate::{count as count_migration, hand_over, migrate, request as request_migration};
pub use spec::{
    CreateVmRequest, Migration, MigrationKind, MigrationPhase, RunPolicy, VmFilter, VmSpec, VmState, VmStats, VmStatus,
    VmView, Want,
};

use crate::host::DomainStateName;

/// What the reconcile loop does about a domain it has just observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// Start the stopped domain (the run policy wants it running).
    Start,
    /// Stop the running domain (the VM is meant to be stopped).
    Destroy,
    /// The guest stopped and the policy does not restart it: the VM is now meant to be stopped.
    KeepStopped,
    /// Someone started a MANUAL VM: it is now meant to be running.
    KeepRunning,
}

/// The rule, as KubeVirt's run strategies define it (docs/vms.md has the table).
pub fn decide(policy: RunPolicy, want: Want, state: DomainStateName, reason: &str) -> Step {
    let active = state.is_active();
    match (want, active) {
        (Want::Running, true) | (Want::Stopped, false) => Step::Nothing,
        (Want::Running, false) => match policy {
            RunPolicy::Always => Step::Start,
            // A guest that shut itself down succeeded; anything else (destroyed, crashed,
            // failed, a fresh definition) is started again.
            RunPolicy::RerunOnFailure if reason == "shutdown" => Step::KeepStopped,
            RunPolicy::RerunOnFailure => Step::Start,
            RunPolicy::Manual => Step::KeepStopped,
            RunPolicy::Halted => Step::KeepStopped,
        },
        (Want::Stopped, true) => match policy {
            RunPolicy::Manual => Step::KeepRunning,
            _ => Step::Destroy,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DomainStateName::{Crashed, Paused, Running, Shutoff};

    #[test]
    fn run_policies_follow_kubevirt() {
        use RunPolicy::*;
        // A domain destroyed behind Troupe's back.
        assert_eq!(decide(Always, Want::Running, Shutoff, "destroyed"), Step::Start);
        assert_eq!(decide(RerunOnFailure, Want::Running, Shutoff, "destroyed"), Step::Start);
        assert_eq!(decide(RerunOnFailure, Want::Running, Crashed, "panicked"), Step::Start);
        assert_eq!(decide(Manual, Want::Running, Shutoff, "destroyed"), Step::KeepStopped);
        // A clean guest shutdown.
        assert_eq!(decide(Always, Want::Running, Shutoff, "shutdown"), Step::Start);
        assert_eq!(
            decide(RerunOnFailure, Want::Running, Shutoff, "shutdown"),
            Step::KeepStopped
        );
        // Started outside Troupe.
        assert_eq!(decide(Halted, Want::Stopped, Running, "booted"), Step::Destroy);
        assert_eq!(decide(Always, Want::Stopped, Paused, "user"), Step::Destroy);
        assert_eq!(decide(Manual, Want::Stopped, Running, "booted"), Step::KeepRunning);
        // Settled.
        assert_eq!(decide(Always, Want::Running, Paused, "user"), Step::Nothing);
        assert_eq!(decide(Halted, Want::Stopped, Shutoff, "unknown"), Step::Nothing);
    }
}

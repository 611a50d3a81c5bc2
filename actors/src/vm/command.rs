//! What a VM's actor is told: what its host's sweep saw, the commands it carries out, and
//! the steps of a migration or hand-over.

use std::time::Duration;

use ractor::RpcReplyPort;

use super::{Migration, VmView};
use crate::error::ApiError;
use crate::host::DomainObs;

/// What the driver's sweep saw of the VM's domain.
#[derive(Debug, Clone)]
pub enum Observation {
    /// The host could not be asked.
    Unreachable,
    Seen(Option<DomainObs>),
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum VmCommand {
    /// Define and start per the run policy now (createVm).
    Ensure,
    Start,
    Stop {
        timeout: Duration,
    },
    Reboot,
    Pause,
    Resume,
    Delete,
}

impl VmCommand {
    /// How long the VM's actor may take over the command: a stop waits for the guest.
    pub fn wait(&self) -> Duration {
        match self {
            Self::Stop { timeout } => *timeout + Duration::from_secs(30),
            _ => Duration::from_secs(30),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Ensure => "createVm",
            Self::Start => "startVm",
            Self::Stop { .. } => "stopVm",
            Self::Reboot => "rebootVm",
            Self::Pause => "pauseVm",
            Self::Resume => "resumeVm",
            Self::Delete => "deleteVm",
        }
    }
}

pub enum VmMsg {
    /// What a sweep saw, and when its look began.
    Observed(Observation, std::time::Instant),
    Act(VmCommand, RpcReplyPort<Result<VmView, ApiError>>),
    Get(RpcReplyPort<VmView>),
    /// A migration's progress; while one runs the VM takes no reconcile action.
    Migrating(Migration, RpcReplyPort<Result<(), ApiError>>),
    /// The VM is moving to `host` (migrated or evacuated): this actor stops acting and
    /// writing, and answers the VM as it will be there. Its record changes only when the
    /// target's new actor has taken the VM ([`VmMsg::Arrive`]); until then it can [`VmMsg::Stay`].
    Leave {
        host: String,
        migration: Migration,
        reply: RpcReplyPort<VmView>,
    },
    /// The hand-over did not happen: this actor owns the VM again.
    Stay,
    /// Sent to the target's new actor: records the VM on its host, with the move's event.
    Arrive(RpcReplyPort<Result<VmView, ApiError>>),
    /// The watchdog's ping: answered at once unless the loop is stuck.
    Ping(RpcReplyPort<()>),
    /// Holds the loop until released (fault injection: HANG).
    Hold(
        tokio::sync::watch::Receiver<bool>,
        tokio::sync::mpsc::UnboundedSender<()>,
    ),
}

impl ractor::Message for VmMsg {}

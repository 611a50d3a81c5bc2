//! What a supervisor needs to know about a child: how to start it, how to stop it, when to
//! restart it, and what to record when its life changes (OTP's child spec).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{ActorCell, ActorProcessingErr};
use serde_json::json;

use super::decision::{Intensity, Restart};
use crate::store::Batch;

/// What happened to a child, told to its spec so domain code can keep its own records.
#[derive(Debug, Clone)]
pub enum ChildEvent {
    Started,
    /// The child exited abnormally (or failed to start). `restarting` says whether the
    /// supervisor will start it again; when false the child is given up on.
    Failed {
        reason: String,
        restarting: bool,
    },
    Restarted {
        restarts: u32,
    },
    /// The child was stopped on purpose (terminated, or its supervisor stopped).
    Stopped,
}

/// How a child is stopped (OTP's shutdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Killed at once; its `post_stop` does not run.
    BrutalKill,
    /// Asked to stop, killed if it has not stopped within the time.
    Timeout(Duration),
    /// Asked to stop and waited for, however long it takes (for supervisors: their own
    /// children's shutdowns bound it).
    Infinity,
}

impl Shutdown {
    pub fn describe(self) -> String {
        match self {
            Shutdown::BrutalKill => "brutal_kill".into(),
            Shutdown::Timeout(d) => format!("{} ms", d.as_millis()),
            Shutdown::Infinity => "infinity".into(),
        }
    }
}

/// How to (re)create one child. Specs are kept for the child's life and used again on every
/// restart, so a child restarts from its arguments, not from a snapshot of its state.
pub trait ChildSpec: Send + Sync + 'static {
    fn id(&self) -> &str;
    /// Prefix of this child's events: `AGENT` gives `AGENT_FAILED`, `AGENT_RESTARTED`, ...
    fn kind(&self) -> &str;
    fn restart(&self) -> Restart {
        Restart::Permanent
    }
    /// How long a start may take before it counts as failed.
    fn start_timeout(&self) -> Duration {
        Duration::from_secs(10)
    }
    fn shutdown(&self) -> Shutdown {
        Shutdown::Timeout(Duration::from_secs(10))
    }
    /// The child's own restart intensity. Past it the child alone is given up on (FAILED)
    /// instead of counting against its supervisor's intensity, which escalates.
    fn intensity(&self) -> Option<Intensity> {
        None
    }
    /// Whether a start someone asked for (and waits on) that fails is then retried like a
    /// crash, by the child's restart policy; the one waiting gets the error at once either
    /// way. When false the child is given up on at once (a wrong spec is not retried).
    fn retries_a_failed_start(&self) -> bool {
        false
    }
    /// Whether the child is itself a [`super::Supervisor`] (its subtree is described too).
    fn is_supervisor(&self) -> bool {
        false
    }
    /// Spawns the child linked to `supervisor`.
    fn start(self: Arc<Self>, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>>;
    /// Called after each lifecycle change, before its event is written. The batch is
    /// committed with the event, so the spec can record state atomically with it.
    /// Asked when the child has used up its own restart intensity: `true` restarts it once
    /// more with its history cleared (the spec changed how it will start, e.g. from a
    /// checkpoint); `false` gives up on it.
    fn one_more_chance(&self) -> bool {
        false
    }
    fn lifecycle(&self, _event: &ChildEvent, _batch: &mut Batch) {}
    /// Asks the running child a question its loop answers at once unless it is stuck (the
    /// watchdog's ping): resolves to whether it answered. `None`: its kind has no ping.
    fn ping(&self, _child: &ActorCell) -> Option<BoxFuture<'static, bool>> {
        None
    }
    /// Holds the running child's loop until `release` turns true (a HANG), telling `held`
    /// once it is held; whether its kind can be held.
    fn hold(
        &self,
        _child: &ActorCell,
        _release: tokio::sync::watch::Receiver<bool>,
        _held: tokio::sync::mpsc::UnboundedSender<()>,
    ) -> bool {
        false
    }
    /// Extra fields for this child's events.
    fn event_data(&self) -> serde_json::Value {
        json!({})
    }
}

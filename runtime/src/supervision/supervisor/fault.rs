//! Injected crashes (fault experiments): a crash is asked of the root and routed down to the
//! supervisor that owns the child; that supervisor predicts from its own restart ladder what
//! the failure will make it do (the expected effects), refuses one that would push it past
//! its intensity unless told otherwise, and stops the child with a reason it then treats as
//! a failure, exactly as if the child had panicked.

use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};

use super::reach::Owned;
use super::{Slot, State, SupervisorMsg};
use crate::supervision::decision::{ChildView, Decision, Exit, Strategy};

/// The reason an injected crash stops a child with; its supervisor sees a failure.
pub const INJECTED_CRASH: &str = "fault injection: CRASH";

/// The reason a child killed for not answering (the watchdog) is failed with.
pub const UNRESPONSIVE: &str = "unresponsive: killed by the watchdog";

/// A crash to inject (or, with `dry_run`, only to predict).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrashRequest {
    /// The supervisor that owns the child (`ChildInfo::owner`); empty: whichever holds it.
    pub owner: String,
    pub child: String,
    pub dry_run: bool,
    /// Crash it even when its supervisor would escalate or give up.
    pub allow_escalation: bool,
    /// Kill it (its loop is stuck, so a stop would never be taken) instead of stopping it;
    /// its exit is then the failure [`UNRESPONSIVE`].
    pub kill: bool,
}

/// What the child's supervisor will do when the child fails now, as its ladder decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrashPlan {
    pub supervisor: String,
    pub strategy: Strategy,
    /// The children restarted (the crashed one with the siblings its strategy takes along),
    /// in the order they are started again.
    pub restart: Vec<String>,
    /// The supervisor is past its intensity: it stops its children and fails in turn.
    pub escalate: bool,
    /// The child has an intensity of its own and is past it: it is given up (FAILED).
    pub give_up: bool,
}

/// `Ok(None)`: no such owner under this supervisor.
pub type CrashReply = RpcReplyPort<Result<Option<CrashPlan>, String>>;

impl State {
    pub(super) fn crash(&mut self, request: CrashRequest, reply: CrashReply) {
        let (child, cell) = match self.owned(&request.owner, &request.child) {
            Owned::Elsewhere => return self.route_crash(request, reply),
            Owned::NotRunning(why) => {
                let _ = reply.send(Err(why));
                return;
            }
            Owned::Running(child, cell) => (child, cell.clone()),
        };
        let view = |c: &super::Child| ChildView {
            id: c.spec.id().to_owned(),
            restart: c.spec.restart(),
            running: matches!(c.slot, Slot::Running(_)),
            intensity: c.spec.intensity(),
        };
        let listing: Vec<ChildView> = match self.ladder.strategy {
            Strategy::OneForOne => vec![view(child)],
            _ => self.children.values().map(view).collect(),
        };
        let decision = self
            .ladder
            .clone()
            .decide(&listing, &request.child, Exit::Failed, tokio::time::Instant::now());
        let mut plan = CrashPlan {
            supervisor: self.name.clone(),
            strategy: self.ladder.strategy,
            restart: Vec::new(),
            escalate: false,
            give_up: false,
        };
        match decision {
            Decision::Restart { start, .. } => plan.restart = start,
            Decision::Escalate { .. } => plan.escalate = true,
            Decision::GiveUp { .. } => plan.give_up = true,
            Decision::Remove => {}
        }
        if (plan.escalate || plan.give_up) && !request.allow_escalation {
            let what = if plan.escalate {
                format!(
                    "push supervisor {} past its restart intensity (it would escalate)",
                    self.name
                )
            } else {
                format!(
                    "exhaust the restart intensity of {} (it would be given up)",
                    request.child
                )
            };
            let _ = reply.send(Err(format!(
                "refused: a crash of {} now would {what}; pass allowEscalation to inject it anyway",
                request.child
            )));
            return;
        }
        if request.kill {
            tracing::warn!(supervisor = %self.name, child = %request.child, "killing an unresponsive child");
            self.killed.insert(cell.get_id());
            cell.kill();
        } else if !request.dry_run {
            tracing::warn!(supervisor = %self.name, child = %request.child, "injecting a crash");
            cell.stop(Some(INJECTED_CRASH.to_owned()));
        }
        let _ = reply.send(Ok(Some(plan)));
    }

    /// Asks the running child supervisors, from a task so that a slow subtree never blocks
    /// this mailbox; the first that owns the child answers.
    fn route_crash(&self, request: CrashRequest, reply: CrashReply) {
        let nested = self.running_supervisors();
        tokio::spawn(async move {
            let within = super::tree::DESCRIBE_TIMEOUT;
            let answer =
                super::reach::first_owner(nested, within, move |r| SupervisorMsg::Crash(request.clone(), r)).await;
            let _ = reply.send(answer);
        });
    }
}

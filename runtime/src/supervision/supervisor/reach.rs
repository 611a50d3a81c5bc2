//! Reaching one running child anywhere under a supervisor, for the watchdog and for fault
//! experiments: a request names the child and its owner, and is routed down the tree (as an
//! injected crash is) to the supervisor that holds the child, which asks the child's spec to
//! ping it (a question its loop answers at once unless it is stuck) or to hold its loop (a
//! HANG, until released).

use std::time::Duration;

use ractor::{ActorRef, RpcReplyPort};
use tokio::sync::{mpsc, watch};

use super::{Slot, State, SupervisorMsg};

/// What to do to the child.
#[derive(Debug, Clone)]
pub enum Reach {
    /// Ping it; answered whether it answered within the time (none when it stopped before).
    Ping(Duration),
    /// Hold its loop until `release` turns true; `held` is told once the loop is held.
    Hold {
        release: watch::Receiver<bool>,
        held: mpsc::UnboundedSender<()>,
    },
}

#[derive(Debug, Clone)]
pub struct ReachRequest {
    /// The supervisor that owns the child (`ChildInfo::owner`); empty: whichever holds it.
    pub owner: String,
    pub child: String,
    pub reach: Reach,
}

/// `Ok(None)`: no such owner under this supervisor. `Ok(Some(false))`: the child did not
/// answer a ping in time. `Err`: it is not running, or its kind cannot be pinged or held.
pub type ReachReply = RpcReplyPort<Result<Option<bool>, String>>;

/// Where a request about a child lands on a supervisor.
pub(super) enum Owned<'a> {
    /// Another supervisor owns it: route the request down.
    Elsewhere,
    /// This one owns it, but it is not running (or not there): why.
    NotRunning(String),
    Running(&'a super::Child, &'a ractor::ActorCell),
}

impl State {
    /// Whether this supervisor owns `child` (named with its `owner`, or by id alone when
    /// `owner` is empty), and whether it runs.
    pub(super) fn owned(&self, owner: &str, child: &str) -> Owned<'_> {
        let mine = if owner.is_empty() {
            self.children.contains_key(child)
        } else {
            owner == self.name
        };
        if !mine {
            return Owned::Elsewhere;
        }
        let Some(c) = self.children.get(child) else {
            return Owned::NotRunning(format!("supervisor {} has no child {child}", self.name));
        };
        match &c.slot {
            Slot::Running(cell) => Owned::Running(c, cell),
            other => Owned::NotRunning(format!(
                "child {child} of {} is {}, not running",
                self.name,
                other.as_str()
            )),
        }
    }

    pub(super) fn reach(&mut self, request: ReachRequest, reply: ReachReply) {
        let (child, cell) = match self.owned(&request.owner, &request.child) {
            Owned::Elsewhere => {
                let nested = self.running_supervisors();
                tokio::spawn(route(nested, request, reply));
                return;
            }
            Owned::NotRunning(why) => {
                let _ = reply.send(Err(why));
                return;
            }
            Owned::Running(child, cell) => (child, cell),
        };
        match request.reach {
            Reach::Ping(within) => match child.spec.ping(cell) {
                None => {
                    let _ = reply.send(Err(format!("{} {} has no ping", child.spec.kind(), request.child)));
                }
                // Waited for outside the mailbox: a stuck child never blocks its supervisor.
                Some(answer) => {
                    tokio::spawn(async move {
                        let answered = match tokio::time::timeout(within, answer).await {
                            Ok(true) => Some(true),
                            // Ended before its time with no answer: the child stopped (a node
                            // that lost its lease stops its work), which is no miss (a thaw
                            // reported a node's supervisors unresponsive as they stopped).
                            Ok(false) => None,
                            Err(_) => Some(false),
                        };
                        let _ = reply.send(Ok(answered));
                    });
                }
            },
            Reach::Hold { release, held } => {
                let answer = match child.spec.hold(cell, release, held) {
                    true => Ok(Some(true)),
                    false => Err(format!("{} {} cannot be held", child.spec.kind(), request.child)),
                };
                let _ = reply.send(answer);
            }
        }
    }

    /// The child supervisors running now.
    pub(super) fn running_supervisors(&self) -> Vec<ActorRef<SupervisorMsg>> {
        self.children
            .values()
            .filter(|c| c.spec.is_supervisor())
            .filter_map(|c| match &c.slot {
                Slot::Running(cell) => Some(ActorRef::from(cell.clone())),
                _ => None,
            })
            .collect()
    }
}

/// Routes the request to whichever child supervisor owns the child.
async fn route(nested: Vec<ActorRef<SupervisorMsg>>, request: ReachRequest, reply: ReachReply) {
    let within = match &request.reach {
        Reach::Ping(d) => *d + super::super::tree::DESCRIBE_TIMEOUT,
        Reach::Hold { .. } => super::super::tree::DESCRIBE_TIMEOUT,
    };
    let answer = first_owner(nested, within, move |r| SupervisorMsg::Reach(request.clone(), r)).await;
    let _ = reply.send(answer);
}

/// Asks every child supervisor at once (a stuck one delays only its own answer); the first
/// that owns the child answers, `Ok(None)` when none does.
pub(super) async fn first_owner<T: Send + 'static>(
    nested: Vec<ActorRef<SupervisorMsg>>,
    within: Duration,
    ask: impl Fn(RpcReplyPort<Result<Option<T>, String>>) -> SupervisorMsg + Clone + Send + 'static,
) -> Result<Option<T>, String> {
    use futures::stream::{FuturesUnordered, StreamExt};
    let mut asked: FuturesUnordered<_> = nested
        .into_iter()
        .map(|sup| {
            let ask = ask.clone();
            async move { sup.call(ask, Some(within)).await }
        })
        .collect();
    while let Some(answer) = asked.next().await {
        match answer {
            Ok(ractor::rpc::CallResult::Success(Ok(None))) => continue,
            Ok(ractor::rpc::CallResult::Success(answer)) => return answer,
            _ => continue,
        }
    }
    Ok(None)
}

//! The live supervision tree, as the supervisors themselves know it: each supervisor
//! describes its children and asks its child supervisors for their subtrees.

use std::time::Duration;

use ractor::{ActorRef, RpcReplyPort};

use super::decision::{Intensity, Strategy};
use super::supervisor::{Slot, State, SupervisorMsg};

/// How long a child supervisor may take to describe itself before it is shown without its
/// children.
pub(crate) const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A supervisor's subtree; serialisable, so a node can describe its tree to a peer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SupervisorInfo {
    pub name: String,
    pub strategy: Strategy,
    pub intensity: Option<Intensity>,
    pub children: Vec<ChildInfo>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChildInfo {
    pub id: String,
    /// The child's event prefix: AGENT, SERVICE, SUPERVISOR ...
    pub kind: String,
    /// STARTING, RUNNING, RESTARTING or STOPPING.
    pub state: String,
    pub restarts: u32,
    /// The supervisor that owns (starts and restarts) the child.
    pub owner: String,
    /// The child's own intensity, when it has one.
    pub intensity: Option<Intensity>,
    /// The subtree, when the child is a supervisor that answered in time.
    pub supervisor: Option<SupervisorInfo>,
}

/// Answers a Describe: this supervisor's own part at once, its child supervisors' parts from
/// a task, so a slow subtree never blocks this mailbox. The child supervisors are asked at
/// once, each with half of `within`, so one that is stuck costs its parent only its own part
/// and every level above still answers in time.
pub(super) fn describe(state: &State, within: Duration, reply: RpcReplyPort<SupervisorInfo>) {
    let mut info = SupervisorInfo {
        name: state.name.clone(),
        strategy: state.ladder.strategy,
        intensity: state.ladder.intensity,
        children: Vec::with_capacity(state.children.len()),
    };
    let mut nested = Vec::new();
    for child in state.children.values() {
        if let (true, Slot::Running(cell)) = (child.spec.is_supervisor(), &child.slot) {
            nested.push((info.children.len(), ActorRef::<SupervisorMsg>::from(cell.clone())));
        }
        info.children.push(ChildInfo {
            id: child.spec.id().to_owned(),
            kind: child.spec.kind().to_owned(),
            state: child.slot.as_str().to_owned(),
            restarts: child.restarts,
            owner: state.name.clone(),
            intensity: child.spec.intensity(),
            supervisor: None,
        });
    }
    let half = within / 2;
    tokio::spawn(async move {
        let asked = nested.into_iter().map(|(index, sup)| async move {
            let answer = sup.call(|r| SupervisorMsg::DescribeWithin(half, r), Some(half)).await;
            (index, answer)
        });
        for (index, answer) in futures::future::join_all(asked).await {
            if let Ok(ractor::rpc::CallResult::Success(sub)) = answer {
                info.children[index].supervisor = Some(sub);
            }
        }
        let _ = reply.send(info);
    });
}

//! What the node carries for its agents: an agent's errands (a process agent's `send`,
//! `publish`, `memory` and `team_task` lines) turned from the agent protocol's wire shapes
//! into the messaging and swarm rooms' own terms, and queued for the node's courier.
//!
//! ```text
//!  agent ── Errand (protocol shapes) ──▶ carrier ── Outgoing (swarm/messaging terms) ──▶ courier
//! ```

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

use crate::agent::{Errand, ErrandKind, Outbox};
use crate::swarm::memory::Op;
use crate::swarm::SwarmTaskMode;
use crate::task::Priority;

/// An agent's errand as the courier carries it.
#[derive(Debug)]
pub struct Outgoing {
    /// The agent it is for.
    pub from: String,
    pub what: OutgoingKind,
    /// The reply (send) or how many agents it was queued for (publish), or why not.
    pub answer: oneshot::Sender<Result<Value, String>>,
}

#[derive(Debug, Clone)]
pub enum OutgoingKind {
    Send {
        to: String,
        payload: Value,
        priority: Priority,
        timeout_ms: u64,
    },
    Publish {
        topic: String,
        payload: Value,
        priority: Priority,
    },
    /// Reads or writes its swarm's memory.
    Memory(Op),
    /// Gives the sub-team it leads a swarm task and waits for its result.
    TeamTask { mode: SwarmTaskMode, timeout_ms: u64 },
    /// Submits a task to a capability under an idempotency key and waits for its result.
    Submit {
        capability: String,
        payload: Value,
        key: String,
        timeout_ms: u64,
    },
}

/// An [`Outbox`] that queues each errand for the courier behind `courier`.
pub fn carrier(courier: UnboundedSender<Outgoing>) -> Outbox {
    Arc::new(move |from, Errand { what, answer }| {
        let what = match what {
            ErrandKind::Send(s) => OutgoingKind::Send {
                timeout_ms: s.timeout_ms(),
                to: s.to,
                payload: s.payload,
                priority: s.priority.into(),
            },
            ErrandKind::Publish(p) => OutgoingKind::Publish {
                topic: p.topic,
                payload: p.payload,
                priority: p.priority.into(),
            },
            ErrandKind::Memory(op) => OutgoingKind::Memory(op.into()),
            ErrandKind::Submit {
                capability,
                payload,
                key,
                timeout_ms,
            } => OutgoingKind::Submit {
                capability,
                payload,
                key,
                timeout_ms,
            },
            ErrandKind::TeamTask(task) => {
                let timeout_ms = task.timeout_ms();
                match SwarmTaskMode::try_from(task.mode) {
                    Ok(mode) => OutgoingKind::TeamTask { mode, timeout_ms },
                    Err(e) => {
                        let _ = answer.send(Err(format!("INVALID_INPUT: {e}")));
                        return;
                    }
                }
            }
        };
        if let Err(e) = courier.send(Outgoing { from, what, answer }) {
            let _ = e.0.answer.send(Err("the node is not taking messages".into()));
        }
    })
}

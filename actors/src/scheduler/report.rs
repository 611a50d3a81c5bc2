//! What an agent reports to its node's scheduler: the contract the agent and scheduler rooms
//! share. An agent says it is up (with what it can do), open or closed to new tasks, down
//! (and why), that an attempt finished, or that it handed a start back unbegun.
//!
//! ```text
//!  agent actor ── Report ──▶ Reports (the scheduler, seen as a taker of reports)
//!  agent handle ─ Report::Down (a crash its supervisor saw) ─┘
//! ```
//!
//! The agent holds a [`Reports`] handle and never names the scheduler's own messages; the
//! scheduler takes each report as the message of the same name.

use ractor::{ActorRef, DerivedActorRef};

use super::SchedulerMsg;
use crate::agent::{AgentMsg, Skills};
use crate::task::Outcome;

/// Where an agent's reports go.
pub type Reports = DerivedActorRef<Report>;

/// Why an agent left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Down {
    /// Stopped on purpose: its tasks go back to the queue without losing an attempt.
    Stopped,
    /// Crashed or lost: each running task's attempt failed.
    Failed(String),
}

#[derive(Debug)]
pub enum Report {
    /// The agent's actor started and takes tasks (unless `open` is false: a paused agent
    /// starts closed).
    Up {
        id: String,
        /// Its name, for the texts people read.
        name: String,
        capabilities: Vec<String>,
        skills: Skills,
        max_concurrent: u32,
        open: bool,
        actor: ActorRef<AgentMsg>,
    },
    /// The agent's incarnation takes tasks again (true) or takes none for now (false:
    /// paused, unhealthy, stopping).
    Open { id: String, incarnation: u64, open: bool },
    /// The agent's incarnation serves these capabilities now (its backend found others).
    Capabilities {
        id: String,
        incarnation: u64,
        capabilities: Vec<String>,
    },
    /// The agent's actor `incarnation` (its pid) is gone; ignored if a newer one registered.
    Down { id: String, incarnation: u64, down: Down },
    /// An attempt ended with `outcome`.
    Finished {
        task_id: String,
        attempt: u32,
        agent_id: String,
        outcome: Outcome,
    },
    /// The agent did not begin an attempt it was handed (paused or stopping when it came).
    Declined {
        task_id: String,
        attempt: u32,
        agent_id: String,
        why: String,
    },
    /// How far a running attempt got (a process agent's `progress` line); `held` while it
    /// waits for an approval.
    Progress {
        task_id: String,
        attempt: u32,
        agent_id: String,
        fraction: Option<f64>,
        note: Option<String>,
        held: bool,
    },
}

/// A taker of reports may be an actor of its own (a stand-in for the scheduler in tests).
impl ractor::Message for Report {}

impl From<Report> for SchedulerMsg {
    fn from(report: Report) -> Self {
        match report {
            Report::Up {
                id,
                name,
                capabilities,
                skills,
                max_concurrent,
                open,
                actor,
            } => SchedulerMsg::AgentUp {
                id,
                name,
                capabilities,
                skills,
                max_concurrent,
                open,
                actor,
            },
            Report::Open { id, incarnation, open } => SchedulerMsg::AgentOpen { id, incarnation, open },
            Report::Down { id, incarnation, down } => SchedulerMsg::AgentDown { id, incarnation, down },
            Report::Capabilities {
                id,
                incarnation,
                capabilities,
            } => SchedulerMsg::AgentCapabilities {
                id,
                incarnation,
                capabilities,
            },
            Report::Finished {
                task_id,
                attempt,
                agent_id,
                outcome,
            } => SchedulerMsg::Finished {
                task_id,
                attempt,
                agent_id,
                outcome,
            },
            Report::Declined {
                task_id,
                attempt,
                agent_id,
                why,
            } => SchedulerMsg::Declined {
                task_id,
                attempt,
                agent_id,
                why,
            },
            Report::Progress {
                task_id,
                attempt,
                agent_id,
                fraction,
                note,
                held,
            } => SchedulerMsg::Progress {
                task_id,
                attempt,
                agent_id,
                fraction,
                note,
                held,
            },
        }
    }
}

/// Gives back a report the scheduler could not take (its mailbox closed), as ractor's
/// derived handles ask.
impl TryFrom<SchedulerMsg> for Report {
    type Error = SchedulerMsg;

    fn try_from(msg: SchedulerMsg) -> Result<Self, SchedulerMsg> {
        Ok(match msg {
            SchedulerMsg::AgentUp {
                id,
                name,
                capabilities,
                skills,
                max_concurrent,
                open,
                actor,
            } => Report::Up {
                id,
                name,
                capabilities,
                skills,
                max_concurrent,
                open,
                actor,
            },
            SchedulerMsg::AgentOpen { id, incarnation, open } => Report::Open { id, incarnation, open },
            SchedulerMsg::AgentDown { id, incarnation, down } => Report::Down { id, incarnation, down },
            SchedulerMsg::AgentCapabilities {
                id,
                incarnation,
                capabilities,
            } => Report::Capabilities {
                id,
                incarnation,
                capabilities,
            },
            SchedulerMsg::Finished {
                task_id,
                attempt,
                agent_id,
                outcome,
            } => Report::Finished {
                task_id,
                attempt,
                agent_id,
                outcome,
            },
            SchedulerMsg::Declined {
                task_id,
                attempt,
                agent_id,
                why,
            } => Report::Declined {
                task_id,
                attempt,
                agent_id,
                why,
            },
            SchedulerMsg::Progress {
                task_id,
                attempt,
                agent_id,
                fraction,
                note,
                held,
            } => Report::Progress {
                task_id,
                attempt,
                agent_id,
                fraction,
                note,
                held,
            },
            other => return Err(other),
        })
    }
}

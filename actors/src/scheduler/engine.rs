//! The scheduler's decisions as plain code: every input (a task queued, an attempt finished,
//! an agent up or down, a cancel, a timer) changes the engine's state and returns the
//! effects to carry out. The actor only applies them; the engine never touches an actor, a
//! clock or a disk, so it is tested with plain values.
//!
//! ```text
//!  QUEUED ──start──▶ RUNNING ──ok──────────────────────────────▶ SUCCEEDED
//!    ▲  ▲              │ ├──failed, failures < max ─▶ (backoff) ─┐
//!    │  │              │ └──failed, no failures left ───────────▶ FAILED
//!    │  └──────────────┼── agent stopped / node shut down (not a failure): TASK_REQUEUED
//!    └─────────────────┘◀────────────────────────────────────────┘ TASK_RETRYING
//!   cancel (QUEUED or RUNNING) ──────────────────────────────────▶ CANCELLED
//! ```
//!
//! Invariant after every input: no agent with a free slot has a runnable task in its own
//! queue or in the queue of one of its capabilities. So a new task only needs the least
//! loaded capable agent with room, and a freed slot only needs its agent's queue heads.
//!
//! The rooms: `tasks` and `agents` (the inputs), `transitions` (the moves they make),
//! `index` (queues and free agents), `choice` (ranking), `requirements` (multi-capability
//! sets), `breaker`, `progress`, `waiting` (why a queued task waits), `graph` (ordering a
//! submitted graph), `policy` (what the engine is told).

pub mod graph;
pub mod index;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::time::Instant;

pub use index::Place;
use index::{Free, QueueKey, Queues};

use crate::agent::{BreakerView, Skills};
use crate::task::TaskStatus;

pub use super::report::Down;

/// The time of an input: monotonic for timers, wall clock for records.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub at: Instant,
    pub wall: DateTime<Utc>,
}

/// A task's new status and the event that records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub task: String,
    pub status: TaskStatus,
    pub kind: &'static str,
    pub data: Value,
    /// Set when the task ended: the agent whose counters it adds to, and whether it succeeded.
    pub ended: Option<(Option<String>, Option<bool>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Hand the attempt to the agent; record the transition only once it was handed over.
    Start {
        agent: String,
        task: String,
        attempt: u32,
        /// The results of the tasks it depends on, by id (empty without dependencies).
        inputs: BTreeMap<String, Value>,
        transition: Transition,
    },
    Record(Transition),
    /// Stop an attempt that is no longer wanted.
    Cancel {
        agent: String,
        task: String,
        attempt: u32,
    },
    /// Call [`Engine::wake`] at this instant.
    Wake(Instant),
    /// Record an event about an agent (its breaker changed).
    AgentEvent {
        agent: String,
        kind: &'static str,
        data: Value,
    },
}

struct Entry {
    limits: Limits,
    status: TaskStatus,
    queued: Option<QueueKey>,
    /// Dependencies not yet succeeded.
    waiting_on: usize,
    /// Results of the dependencies that succeeded.
    inputs: BTreeMap<String, Value>,
    not_before: Option<Instant>,
    /// When its last TASK_PROGRESS went out, and whether a later report is held back.
    progress_sent: Option<Instant>,
    progress_held: bool,
}

struct Slot {
    capabilities: Vec<String>,
    /// What it serves: its capabilities, and the requirement sets it meets.
    keys: Vec<String>,
    skills: Skills,
    max: u32,
    running: HashSet<String>,
    incarnation: u64,
    /// Where it is filed in `free` under each key, while it has room.
    filed: Vec<(String, Place)>,
    /// Whether it takes new tasks (not paused, not unhealthy, not stopping).
    open: bool,
    /// Tasks started on it (for WEIGHTED).
    served: u64,
}

pub use crate::task::Room;

pub struct Engine {
    retry: RetryPolicy,
    tasks: HashMap<String, Entry>,
    queues: Queues,
    free: Free,
    delayed: BTreeSet<(Instant, String)>,
    /// Deadlines of open tasks (an entry of a task that ended otherwise is skipped when due).
    deadlines: BTreeSet<(Instant, String)>,
    /// Tasks waiting for each open task to succeed.
    dependents: HashMap<String, Vec<String>>,
    /// Requirement sets of open tasks, by key; a set no open task needs is dropped.
    requirements: HashMap<String, Needed>,
    /// Each agent's last attempts, newest last (for its recent success rate).
    outcomes: HashMap<String, VecDeque<bool>>,
    /// The agent round robin picked last, per key.
    rr_last: HashMap<String, String>,
    breaker: BreakerPolicy,
    breakers: HashMap<String, Breaker>,
    /// When open breakers half-open.
    breaker_wakes: BTreeSet<(Instant, String)>,
    /// When held progress reports are due.
    progress_wakes: BTreeSet<(Instant, String)>,
    armed: Option<Instant>,
    agents: BTreeMap<String, Slot>,
    /// Agents' names, for the texts people read ("agent reviewer is busy").
    names: HashMap<String, String>,
    draining: bool,
    out: Vec<Effect>,
}

/// How many of an agent's last attempts its recent success rate counts.
const RECENT_ATTEMPTS: usize = 20;

mod agents;
mod breaker;
mod choice;
mod handoff;
mod policy;
mod progress;
mod requirements;
mod tasks;
mod transitions;
mod waiting;

pub use handoff::Unserved;
use policy::Breaker;
pub use policy::{BreakerPolicy, Limits, Requirement, RetryPolicy, Settled};
pub use progress::{Reported, PROGRESS_INTERVAL};
use requirements::Needed;

impl Engine {
    pub fn new(retry: RetryPolicy) -> Self {
        Self {
            retry,
            tasks: HashMap::new(),
            queues: Queues::default(),
            free: Free::default(),
            delayed: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            dependents: HashMap::new(),
            requirements: HashMap::new(),
            outcomes: HashMap::new(),
            rr_last: HashMap::new(),
            breaker: BreakerPolicy::default(),
            breakers: HashMap::new(),
            breaker_wakes: BTreeSet::new(),
            progress_wakes: BTreeSet::new(),
            armed: None,
            agents: BTreeMap::new(),
            names: HashMap::new(),
            draining: false,
            out: Vec::new(),
        }
    }

    pub fn with_breaker(mut self, policy: BreakerPolicy) -> Self {
        self.breaker = policy;
        self
    }

    /// The agent's breaker as the API shows it.
    pub fn breaker_of(&self, agent: &str) -> BreakerView {
        let b = self.breakers.get(agent).copied().unwrap_or_default();
        BreakerView {
            state: b.state,
            consecutive_failures: b.consecutive,
            opened_at: b.opened_at,
        }
    }

    fn take(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.out)
    }

    pub fn running(&self) -> usize {
        self.agents.values().map(|s| s.running.len()).sum()
    }

    /// The running tasks (of `agent`, or of every agent here) that work now: not those held
    /// for an operator's approval, which a stop need not wait for (their approval is
    /// committed; they wait for it again when they run next).
    pub fn working(&self, agent: Option<&str>) -> usize {
        let held = |task: &String| {
            self.tasks
                .get(task)
                .is_some_and(|e| e.status.state == crate::task::TaskState::AwaitingApproval)
        };
        self.agents
            .iter()
            .filter(|(id, _)| agent.is_none_or(|a| a == id.as_str()))
            .flat_map(|(_, s)| s.running.iter())
            .filter(|task| !held(task))
            .count()
    }

    /// How many open agents here serve `capability`, and their free task slots.
    pub fn room(&self, capability: &str) -> Room {
        let mut room = Room::default();
        for slot in self.agents.values() {
            if slot.open && slot.capabilities.iter().any(|c| c == capability) {
                room.agents += 1;
                room.free += slot.max.saturating_sub(slot.running.len() as u32);
            }
        }
        room.best = self.free.best(capability);
        room
    }

    /// [`Self::room`] of every capability an open agent here serves.
    pub fn rooms(&self) -> BTreeMap<String, Room> {
        self.served()
            .into_iter()
            .map(|c| (c.to_owned(), self.room(c)))
            .collect()
    }

    /// The capabilities the open agents here serve.
    fn served(&self) -> BTreeSet<&str> {
        self.agents
            .values()
            .filter(|slot| slot.open)
            .flat_map(|slot| slot.capabilities.iter().map(String::as_str))
            .collect()
    }

    pub fn running_on(&self, agent: &str) -> u32 {
        self.agents.get(agent).map_or(0, |s| s.running.len() as u32)
    }

    /// Tasks waiting to start (runnable or waiting for a retry).
    pub fn queued(&self) -> usize {
        self.queues.len() + self.delayed.len()
    }

    /// Tasks not ended: queued, delayed, waiting on dependencies or running.
    pub fn open(&self) -> usize {
        self.tasks.len()
    }

    pub fn status(&self, task: &str) -> Option<&TaskStatus> {
        self.tasks.get(task).map(|e| &e.status)
    }
}

#[cfg(test)]
mod tests;

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

pub mod graph;
pub mod index;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::time::Instant;

use index::{Free, Place, QueueKey, Queues};

use crate::agent::{BreakerView, Skills};
use crate::task::{Outcome, TaskState, TaskStatus};

/// The time of an input: monotonic for timers, wall clock for records.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub at: Instant,
    pub wall: DateTime<Utc>,
}

/// Why an agent left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Down {
    /// Stopped on purpose: its tasks go back to the queue without losing an attempt.
    Stopped,
    /// Crashed or lost: each running task's attempt failed.
    Failed(String),
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
    draining: bool,
    out: Vec<Effect>,
}

/// How many of an agent's last attempts its recent success rate counts.
const RECENT_ATTEMPTS: usize = 20;

mod breaker;
mod choice;
mod policy;
mod progress;
mod requirements;
mod transitions;
mod waiting;

use requirements::Needed;
use policy::Breaker;
pub use policy::{BreakerPolicy, Limits, Requirement, RetryPolicy, Settled};
pub use progress::PROGRESS_INTERVAL;

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

    /// A task to run whose dependencies (if any) are all open here.
    pub fn enqueue(&mut self, limits: Limits, status: TaskStatus, now: Now) -> Vec<Effect> {
        self.enqueue_with(limits, status, Vec::new(), now)
    }

    /// A task to run (new, or recovered at start); a task already held is ignored. Each of
    /// its dependencies is either open here or in `settled` (ended before it was queued); one
    /// that is neither is unknown and counts as failed.
    pub fn enqueue_with(&mut self, limits: Limits, status: TaskStatus, settled: Vec<Settled>, now: Now) -> Vec<Effect> {
        if self.tasks.contains_key(&limits.id) || status.state.is_terminal() {
            return Vec::new();
        }
        let id = limits.id.clone();
        if let Some(r) = &limits.requires {
            self.require(r);
        }
        let mut status = status;
        status.state = TaskState::Queued;
        let at = |wall: DateTime<Utc>| {
            let ahead = (wall - now.wall).to_std().unwrap_or_default();
            now.at + ahead
        };
        let deadline = limits.deadline.map(at);
        let not_before = limits.not_before.map(at);
        let settled: HashMap<String, Option<Value>> = settled.into_iter().collect();
        let mut waiting_on = 0;
        let mut inputs = BTreeMap::new();
        let mut broken = None;
        for dep in &limits.depends_on {
            match settled.get(dep) {
                Some(Some(result)) => {
                    inputs.insert(dep.clone(), result.clone());
                }
                Some(None) => broken = Some(format!("dependency {dep} did not succeed")),
                None if self.tasks.contains_key(dep) => {
                    waiting_on += 1;
                    self.dependents.entry(dep.clone()).or_default().push(id.clone());
                }
                None => broken = Some(format!("dependency {dep} is unknown")),
            }
        }
        self.tasks.insert(
            id.clone(),
            Entry {
                limits,
                status,
                queued: None,
                waiting_on,
                inputs,
                not_before,
                progress_sent: None,
                progress_held: false,
            },
        );
        if let Some(reason) = broken {
            self.dependency_failed(&id, reason, now);
            return self.take();
        }
        if let Some(deadline) = deadline {
            if deadline <= now.at {
                self.expire(&id, now);
                return self.take();
            }
            self.deadlines.insert((deadline, id.clone()));
            self.arm();
        }
        if waiting_on == 0 {
            self.ready(&id, now);
        }
        self.take()
    }

    /// Whether `attempt` on `agent` is the task's running attempt (not cancelled, re-queued
    /// or superseded since).
    fn is_current(&self, task: &str, attempt: u32, agent: &str) -> bool {
        self.tasks.get(task).is_some_and(|e| {
            e.status.state == TaskState::Running
                && e.status.attempts == attempt
                && e.status.agent_id.as_deref() == Some(agent)
        })
    }

    /// An attempt ended. Results of attempts no longer current (cancelled, re-queued, late)
    /// are ignored.
    pub fn finished(&mut self, task: &str, attempt: u32, agent: &str, outcome: Outcome, now: Now) -> Vec<Effect> {
        if !self.is_current(task, attempt, agent) {
            return Vec::new();
        }
        self.release(agent, task);
        let last = self.outcomes.entry(agent.to_owned()).or_default();
        last.push_back(outcome.is_ok());
        if last.len() > RECENT_ATTEMPTS {
            last.pop_front();
        }
        match outcome {
            Ok(result) => {
                self.breaker_success(agent);
                self.succeeded(task, result, now);
            }
            Err(error) => {
                self.breaker_failure(agent, now);
                self.attempt_failed(task, error, now);
            }
        }
        self.refile(agent);
        self.fill(agent, now);
        self.take()
    }

    /// The agent would not begin an attempt it was handed: it was paused or stopping when the
    /// start reached it (the start crossed its closing). The attempt never began, so it is
    /// undone and the task goes back to the queue, not charged.
    pub fn declined(&mut self, task: &str, attempt: u32, agent: &str, why: &str, now: Now) -> Vec<Effect> {
        if !self.is_current(task, attempt, agent) {
            return Vec::new();
        }
        self.release(agent, task);
        if let Some(e) = self.tasks.get_mut(task) {
            e.status.attempts = e.status.attempts.saturating_sub(1);
        }
        self.requeue(task, why, now);
        self.refile(agent);
        self.take()
    }

    /// An agent (this incarnation of it) can take tasks. A different incarnation still on
    /// record died without saying so: what it held is settled first.
    pub fn agent_up(
        &mut self,
        id: &str,
        capabilities: Vec<String>,
        max: u32,
        incarnation: u64,
        now: Now,
    ) -> Vec<Effect> {
        self.agent_up_with(id, capabilities, Skills::default(), max, incarnation, now)
    }

    /// [`Engine::agent_up`] with the agent's proficiencies and weight.
    pub fn agent_up_with(
        &mut self,
        id: &str,
        capabilities: Vec<String>,
        skills: Skills,
        max: u32,
        incarnation: u64,
        now: Now,
    ) -> Vec<Effect> {
        if let Some(old) = self.agents.get(id) {
            if old.incarnation == incarnation {
                return Vec::new();
            }
            let old = old.incarnation;
            self.agent_gone(
                id,
                old,
                Down::Failed("the agent was restarted while running it".into()),
                now,
            );
        }
        self.agents.insert(
            id.to_owned(),
            Slot {
                keys: self.keys_of(&capabilities, &skills),
                capabilities,
                skills,
                max: max.max(1),
                running: HashSet::new(),
                incarnation,
                filed: Vec::new(),
                open: true,
                served: 0,
            },
        );
        self.refile(id);
        self.fill(id, now);
        self.take()
    }

    /// Opens or closes the agent (this incarnation of it) to new tasks; what it runs goes on.
    pub fn set_open(&mut self, id: &str, incarnation: u64, open: bool, now: Now) -> Vec<Effect> {
        let Some(slot) = self.agents.get_mut(id).filter(|s| s.incarnation == incarnation) else {
            return Vec::new();
        };
        if slot.open != open {
            slot.open = open;
            self.refile(id);
            self.fill(id, now);
        }
        self.take()
    }

    /// The agent's incarnation is gone; an older or unknown incarnation is ignored.
    pub fn agent_down(&mut self, id: &str, incarnation: u64, down: Down, now: Now) -> Vec<Effect> {
        self.agent_gone(id, incarnation, down, now);
        self.take()
    }

    /// Some starts could not be handed to `agent` (its mailbox is closed): those attempts
    /// never began and are undone; the agent is treated as lost.
    pub fn undeliverable(&mut self, agent: &str, tasks: &[String], now: Now) -> Vec<Effect> {
        let Some(incarnation) = self.agents.get(agent).map(|s| s.incarnation) else {
            return Vec::new();
        };
        for task in tasks {
            self.release(agent, task);
            if let Some(e) = self.tasks.get_mut(task) {
                e.status.attempts = e.status.attempts.saturating_sub(1);
                e.status.state = TaskState::Queued;
            }
        }
        // The agent goes first, so the undone tasks are not offered to it again.
        self.agent_gone(agent, incarnation, Down::Failed("unreachable".into()), now);
        for task in tasks {
            self.make_runnable(task, now);
        }
        self.take()
    }

    /// Cancels an open task; `None` if this engine does not hold it (finished or unknown).
    pub fn cancel(&mut self, task: &str, now: Now) -> Option<(TaskStatus, Vec<Effect>)> {
        let mut status = self.take_out(task, now)?;
        self.delayed.retain(|(_, id)| id != task);
        status.state = TaskState::Cancelled;
        status.finished_at = Some(now.wall);
        self.record(task, &status, "TASK_CANCELLED", json!({}), Some((None, None)));
        self.ended(task, None, TaskState::Cancelled, now);
        Some((status, self.take()))
    }

    /// Timers due: delayed retries and starts become runnable; tasks past their deadline
    /// expire.
    pub fn wake(&mut self, now: Now) -> Vec<Effect> {
        self.armed = None;
        while let Some((at, agent)) = self.breaker_wakes.first().cloned() {
            if at > now.at {
                break;
            }
            self.breaker_wakes.pop_first();
            self.half_open(&agent, at, now);
        }
        self.held_progress_due(now);
        while let Some((at, id)) = self.deadlines.first().cloned() {
            if at > now.at {
                break;
            }
            self.deadlines.pop_first();
            if self.tasks.contains_key(&id) {
                self.expire(&id, now);
            }
        }
        while let Some((at, id)) = self.delayed.first().cloned() {
            if at > now.at {
                break;
            }
            self.delayed.pop_first();
            if self
                .tasks
                .get(&id)
                .is_some_and(|e| e.status.state == TaskState::Queued && e.waiting_on == 0)
            {
                self.make_runnable(&id, now);
            }
        }
        self.arm();
        self.take()
    }

    /// Stops starting tasks (the node is shutting down).
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// Puts every running task back in the queue without charging it an attempt (the node
    /// is stopping them, they did not fail).
    pub fn requeue_running(&mut self, reason: &str, now: Now) -> Vec<Effect> {
        let running: Vec<(String, String)> = self
            .agents
            .iter()
            .flat_map(|(a, s)| s.running.iter().map(move |t| (a.clone(), t.clone())))
            .collect();
        for (agent, task) in running {
            self.release(&agent, &task);
            if let Some(e) = self.tasks.get(&task) {
                self.out.push(Effect::Cancel {
                    agent,
                    task: task.clone(),
                    attempt: e.status.attempts,
                });
            }
            self.requeue(&task, reason, now);
        }
        self.take()
    }

    pub fn running(&self) -> usize {
        self.agents.values().map(|s| s.running.len()).sum()
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

//! The engine's task inputs: a task queued (or recovered), an attempt finished or declined,
//! a cancel, timers due, and the node's shutdown (drain, give running tasks back).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{Effect, Engine, Entry, Now, RECENT_ATTEMPTS};
use super::{Limits, Settled};
use crate::task::{Outcome, TaskState, TaskStatus};

impl Engine {
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
    pub(super) fn is_current(&self, task: &str, attempt: u32, agent: &str) -> bool {
        self.tasks.get(task).is_some_and(|e| {
            e.status.state.is_running() && e.status.attempts == attempt && e.status.agent_id.as_deref() == Some(agent)
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

    /// Whether it drains: it starts nothing more.
    pub fn draining(&self) -> bool {
        self.draining
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
}

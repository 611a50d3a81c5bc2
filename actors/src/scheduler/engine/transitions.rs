//! The engine's moves: queueing, starting, releasing a slot, and each way an attempt ends.

use serde_json::{json, Value};

use super::index::Want;
use super::{Down, Effect, Engine, Now, RetryPolicy, Transition};
use crate::task::Strategy;
use crate::task::{AttemptError, TaskState, TaskStatus};

impl Engine {
    /// A task whose dependencies have all succeeded: runnable now, or at its `notBefore`.
    pub(super) fn ready(&mut self, id: &str, now: Now) {
        let Some(entry) = self.tasks.get(id) else { return };
        match entry.not_before {
            Some(at) if at > now.at => {
                self.delayed.insert((at, id.to_owned()));
                self.arm();
            }
            _ => self.make_runnable(id, now),
        }
    }

    /// A task ended: its dependents get its result, or end DEPENDENCY_FAILED if it did not
    /// succeed.
    pub(super) fn ended(&mut self, task: &str, result: Option<Value>, state: TaskState, now: Now) {
        let Some(waiting) = self.dependents.remove(task) else {
            return;
        };
        for dependent in waiting {
            match &result {
                Some(r) => {
                    let Some(entry) = self.tasks.get_mut(&dependent) else {
                        continue;
                    };
                    entry.inputs.insert(task.to_owned(), r.clone());
                    entry.waiting_on = entry.waiting_on.saturating_sub(1);
                    if entry.waiting_on == 0 {
                        self.ready(&dependent, now);
                    }
                }
                None => {
                    let reason = format!("dependency {task} ended {}", state.as_str());
                    self.dependency_failed(&dependent, reason, now);
                }
            }
        }
    }

    /// Ends a task that will never run because a dependency did not succeed.
    pub(super) fn dependency_failed(&mut self, task: &str, reason: String, now: Now) {
        let Some(entry) = self.forget(task) else { return };
        if let Some(key) = &entry.queued {
            self.queues.remove(&entry.limits.want, key);
        }
        let mut status = entry.status;
        status.state = TaskState::DependencyFailed;
        status.error = Some(reason.clone());
        status.finished_at = Some(now.wall);
        self.record(
            task,
            &status,
            "TASK_DEPENDENCY_FAILED",
            json!({ "error": reason }),
            Some((None, None)),
        );
        self.ended(task, None, TaskState::DependencyFailed, now);
    }

    /// Takes an open task out of the engine: out of its queue, and a running attempt stopped
    /// (its agent's slot filled again). Its status, for the caller to end it with.
    pub(super) fn take_out(&mut self, task: &str, now: Now) -> Option<TaskStatus> {
        let entry = self.forget(task)?;
        if let Some(key) = &entry.queued {
            self.queues.remove(&entry.limits.want, key);
        }
        let status = entry.status;
        if status.state.is_running() {
            if let Some(agent) = status.agent_id.clone() {
                self.release(&agent, task);
                self.out.push(Effect::Cancel {
                    agent: agent.clone(),
                    task: task.to_owned(),
                    attempt: status.attempts,
                });
                self.fill(&agent, now);
            }
        }
        Some(status)
    }

    /// Ends a task past its deadline; a running attempt is cancelled.
    pub(super) fn expire(&mut self, task: &str, now: Now) {
        let Some(mut status) = self.take_out(task, now) else {
            return;
        };
        status.state = TaskState::Expired;
        status.error = Some("the deadline passed".into());
        status.finished_at = Some(now.wall);
        self.record(task, &status, "TASK_EXPIRED", json!({}), Some((None, None)));
        self.ended(task, None, TaskState::Expired, now);
    }

    /// Puts a queued task in its queue and offers it to an agent that can take it now.
    pub(super) fn make_runnable(&mut self, id: &str, now: Now) {
        let Some(entry) = self.tasks.get_mut(id) else { return };
        if entry.queued.is_none() {
            entry.queued = Some(self.queues.push(&entry.limits.want, id, entry.limits.priority));
        }
        let want = entry.limits.want.clone();
        let agent = match &want {
            Want::Agent(a) => self
                .agents
                .get(a)
                .is_some_and(|s| (s.running.len() as u32) < self.capacity(a, s.max))
                .then(|| a.clone()),
            Want::Capability(key) => {
                let strategy = self.tasks.get(id).map_or(Strategy::Score, |e| e.limits.strategy);
                let chosen = self
                    .free
                    .choose(key, strategy, self.rr_last.get(key).map(String::as_str))
                    .map(str::to_owned);
                if let (Some(agent), Strategy::RoundRobin) = (&chosen, strategy) {
                    self.rr_last.insert(key.clone(), agent.clone());
                }
                chosen
            }
        };
        if let Some(agent) = agent {
            self.fill(&agent, now);
        }
    }

    /// Starts queued work on `agent` until it is full or nothing it can run is queued.
    pub(super) fn fill(&mut self, agent: &str, now: Now) {
        while !self.draining {
            let Some(slot) = self.agents.get(agent) else { return };
            if !slot.open || slot.running.len() as u32 >= self.capacity(agent, slot.max) {
                return;
            }
            let Some((want, key)) = self.queues.best_for(agent, &slot.keys) else {
                return;
            };
            self.queues.remove(&want, &key);
            self.start(agent, &key.2, now);
        }
    }

    fn start(&mut self, agent: &str, task: &str, now: Now) {
        let why = self.why(agent, task);
        let Some(entry) = self.tasks.get_mut(task) else { return };
        entry.queued = None;
        let status = &mut entry.status;
        status.state = TaskState::Running;
        status.attempts += 1;
        status.agent_id = Some(agent.to_owned());
        status.started_at = Some(now.wall);
        status.error = None;
        // Progress is the running attempt's: a new one starts with none.
        status.progress = None;
        let (attempt, status) = (status.attempts, status.clone());
        let inputs = entry.inputs.clone();
        if let Some(slot) = self.agents.get_mut(agent) {
            slot.running.insert(task.to_owned());
            slot.served += 1;
        }
        self.refile(agent);
        self.out.push(Effect::Start {
            agent: agent.to_owned(),
            task: task.to_owned(),
            attempt,
            inputs,
            transition: Transition {
                task: task.to_owned(),
                status,
                kind: "TASK_STARTED",
                data: why,
                ended: None,
            },
        });
    }

    /// Frees the task's slot on `agent`.
    pub(super) fn release(&mut self, agent: &str, task: &str) {
        if let Some(slot) = self.agents.get_mut(agent) {
            slot.running.remove(task);
        }
        self.refile(agent);
    }

    /// Files the agent under each key it serves, in every strategy's order, while it has
    /// room (or takes it out).
    pub(super) fn refile(&mut self, agent: &str) {
        let Some(slot) = self.agents.get_mut(agent) else { return };
        for (key, place) in std::mem::take(&mut slot.filed) {
            self.free.remove(&key, agent, place);
        }
        let Some(slot) = self.agents.get(agent) else { return };
        let running = slot.running.len() as u32;
        if !slot.open || running >= self.capacity(agent, slot.max) {
            return;
        }
        let keys = slot.keys.clone();
        let mut filed = Vec::with_capacity(keys.len());
        for key in keys {
            let place = self.place(agent, &key);
            self.free.insert(&key, agent, place);
            filed.push((key, place));
        }
        if let Some(slot) = self.agents.get_mut(agent) {
            slot.filed = filed;
        }
    }

    pub(super) fn succeeded(&mut self, task: &str, result: Value, now: Now) {
        let Some(entry) = self.forget(task) else { return };
        let mut status = entry.status;
        status.state = TaskState::Succeeded;
        status.result = Some(result);
        status.finished_at = Some(now.wall);
        let agent = status.agent_id.clone();
        let result = status.result.clone();
        self.record(task, &status, "TASK_SUCCEEDED", json!({}), Some((agent, Some(true))));
        self.ended(task, result, TaskState::Succeeded, now);
    }

    /// An attempt failed: retried after a backoff while failures remain, else DEAD (the
    /// dead-letter queue), with every attempt's error kept.
    pub(super) fn attempt_failed(&mut self, task: &str, error: String, now: Now) {
        let Some(entry) = self.tasks.get_mut(task) else { return };
        entry.status.failures += 1;
        entry.status.error = Some(error.clone());
        entry.status.attempt_errors.push(AttemptError {
            attempt: entry.status.attempts,
            agent_id: entry.status.agent_id.clone(),
            error: error.clone(),
            at: now.wall,
        });
        if crate::task::is_final(&error) {
            let Some(entry) = self.forget(task) else { return };
            let mut status = entry.status;
            status.state = TaskState::Failed;
            status.finished_at = Some(now.wall);
            let agent = status.agent_id.clone();
            let data = json!({ "error": error, "attempts": status.attempts });
            self.record(task, &status, "TASK_FAILED", data, Some((agent, Some(false))));
            self.ended(task, None, TaskState::Failed, now);
        } else if entry.status.failures < entry.limits.max_attempts {
            entry.status.state = TaskState::Queued;
            let delay = match &entry.limits.retry {
                Some(own) => RetryPolicy::of_task(own, task, entry.status.failures),
                None => self.retry.delay(entry.status.failures),
            };
            let status = entry.status.clone();
            self.delayed.insert((now.at + delay, task.to_owned()));
            let data = json!({ "error": error, "retryInMs": delay.as_millis() as u64 });
            self.record(task, &status, "TASK_RETRYING", data, None);
            self.arm();
        } else {
            let Some(entry) = self.forget(task) else { return };
            let mut status = entry.status;
            status.state = TaskState::Dead;
            status.finished_at = Some(now.wall);
            let agent = status.agent_id.clone();
            let data = json!({ "error": error, "attempts": status.attempts });
            self.record(task, &status, "TASK_DEAD", data, Some((agent, Some(false))));
            self.ended(task, None, TaskState::Dead, now);
        }
    }

    /// Back to the queue at once, without charging an attempt.
    pub(super) fn requeue(&mut self, task: &str, reason: &str, now: Now) {
        let Some(entry) = self.tasks.get_mut(task) else { return };
        entry.status.state = TaskState::Queued;
        let status = entry.status.clone();
        self.record(task, &status, "TASK_REQUEUED", json!({ "reason": reason }), None);
        self.make_runnable(task, now);
    }

    /// Settles what an agent incarnation held, if it is the one on record.
    pub(super) fn agent_gone(&mut self, id: &str, incarnation: u64, down: Down, now: Now) {
        if self.agents.get(id).is_none_or(|s| s.incarnation != incarnation) {
            return;
        }
        let Some(mut slot) = self.agents.remove(id) else { return };
        for (key, place) in std::mem::take(&mut slot.filed) {
            self.free.remove(&key, id, place);
        }
        let mut running: Vec<String> = slot.running.drain().collect();
        running.sort();
        for task in running {
            match &down {
                Down::Stopped => self.requeue(&task, &format!("{} was stopped", self.agent_phrase(id)), now),
                Down::Failed(reason) => {
                    self.attempt_failed(&task, format!("{} went down: {reason}", self.agent_phrase(id)), now);
                }
            }
        }
    }

    pub(super) fn record(
        &mut self,
        task: &str,
        status: &TaskStatus,
        kind: &'static str,
        data: Value,
        ended: Option<(Option<String>, Option<bool>)>,
    ) {
        self.out.push(Effect::Record(Transition {
            task: task.to_owned(),
            status: status.clone(),
            kind,
            data,
            ended,
        }));
    }

    /// Asks for a wake-up at the earliest pending retry, delayed start or deadline, unless
    /// one at or before it is set.
    pub(super) fn arm(&mut self) {
        let first = [
            self.delayed.first(),
            self.deadlines.first(),
            self.breaker_wakes.first(),
            self.progress_wakes.first(),
        ]
        .into_iter()
        .flatten()
        .map(|(at, _)| *at)
        .min();
        let Some(at) = first else { return };
        if self.armed.is_none_or(|armed| at < armed) {
            self.armed = Some(at);
            self.out.push(Effect::Wake(at));
        }
    }
}

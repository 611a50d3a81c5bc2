//! The scheduler actor. Its writes are handed to the store without waiting (the writer keeps
//! their order); only replies that acknowledge a client wait for durability.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::json;
use tokio::time::Instant;
use troupe_runtime::store::{Store, Table};
use troupe_runtime::supervision::Backoff;

use super::assign::{pick, Candidate, Want};
use super::queue::TaskQueue;
use crate::agent::AgentMsg;
use crate::error::ApiError;
use crate::task::{Assignment, Outcome, TaskRecord, TaskState};

mod record;
mod recover;

use record::observe;

/// Most queued tasks one dispatch pass looks at, so a long queue of tasks no agent can take
/// does not stall the actor.
const SCAN_LIMIT: usize = 4096;

pub enum SchedulerMsg {
    /// A task already durable as QUEUED.
    Enqueue(TaskRecord),
    Cancel(String, RpcReplyPort<Result<TaskRecord, ApiError>>),
    Finished {
        task_id: String,
        attempt: u32,
        agent_id: String,
        outcome: Outcome,
    },
    AgentUp {
        id: String,
        capabilities: Vec<String>,
        max_concurrent: u32,
        actor: ActorRef<AgentMsg>,
    },
    /// The agent actor `actor` is gone; ignored if the agent has since registered anew.
    AgentDown {
        id: String,
        actor: ractor::ActorId,
        reason: String,
    },
    RetryDue,
    Counters(Vec<String>, RpcReplyPort<HashMap<String, AgentCounters>>),
    /// Stops starting tasks (shutdown); replies with how many run.
    Drain(RpcReplyPort<usize>),
    Running(RpcReplyPort<usize>),
}

impl ractor::Message for SchedulerMsg {}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentCounters {
    pub running: u32,
    pub succeeded: u64,
    pub failed: u64,
}

pub struct SchedulerArgs {
    pub store: Store,
    pub retry: Backoff,
}

struct Slot {
    capabilities: Vec<String>,
    max: u32,
    running: HashSet<String>,
    actor: ActorRef<AgentMsg>,
}

pub struct State {
    store: Store,
    retry: Backoff,
    /// Every task not yet in a terminal state.
    tasks: HashMap<String, TaskRecord>,
    queue: TaskQueue,
    delayed: BinaryHeap<Reverse<(Instant, String)>>,
    timer_at: Option<Instant>,
    agents: BTreeMap<String, Slot>,
    done: HashMap<String, AgentCounters>,
    draining: bool,
}

#[derive(Debug, Default)]
pub struct Scheduler;

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = State;
    type Arguments = SchedulerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SchedulerMsg>,
        args: SchedulerArgs,
    ) -> Result<State, ActorProcessingErr> {
        // Whatever an earlier incarnation handed the writer lands before we read.
        args.store.flush().await?;
        let mut state = State {
            store: args.store,
            retry: args.retry,
            tasks: HashMap::new(),
            queue: TaskQueue::default(),
            delayed: BinaryHeap::new(),
            timer_at: None,
            agents: BTreeMap::new(),
            done: HashMap::new(),
            draining: false,
        };
        state.recover().await?;
        tracing::info!(queued = state.queue.len(), "scheduler started");
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<SchedulerMsg>,
        msg: SchedulerMsg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            // A restarted scheduler may already have found the task in the store (it was
            // committed before this message was sent); the copy it holds may be running.
            SchedulerMsg::Enqueue(task) if state.tasks.contains_key(&task.id) => {}
            SchedulerMsg::Enqueue(task) => {
                state.queue.push(&task.id, task.priority);
                state.tasks.insert(task.id.clone(), task);
            }
            SchedulerMsg::Cancel(id, reply) => state.cancel(id, reply),
            SchedulerMsg::Finished {
                task_id,
                attempt,
                agent_id,
                outcome,
            } => {
                state.finished(&myself, &task_id, attempt, &agent_id, outcome);
            }
            SchedulerMsg::AgentUp {
                id,
                capabilities,
                max_concurrent,
                actor,
            } => {
                tracing::debug!(agent = %id, "agent registered");
                state.agents.insert(
                    id,
                    Slot {
                        capabilities,
                        max: max_concurrent,
                        running: HashSet::new(),
                        actor,
                    },
                );
            }
            SchedulerMsg::AgentDown { id, actor, reason } => {
                if state.agents.get(&id).is_some_and(|s| s.actor.get_id() == actor) {
                    state.agent_gone(&myself, &id, &reason);
                }
            }
            SchedulerMsg::RetryDue => state.retry_due(&myself),
            SchedulerMsg::Counters(ids, reply) => {
                let out = ids
                    .into_iter()
                    .map(|id| {
                        let mut c = state.done.get(&id).copied().unwrap_or_default();
                        c.running = state.agents.get(&id).map_or(0, |s| s.running.len() as u32);
                        (id, c)
                    })
                    .collect();
                let _ = reply.send(out);
            }
            SchedulerMsg::Drain(reply) => {
                state.draining = true;
                let _ = reply.send(state.running());
            }
            SchedulerMsg::Running(reply) => {
                let _ = reply.send(state.running());
            }
        }
        state.dispatch(&myself);
        Ok(())
    }
}

impl State {
    fn running(&self) -> usize {
        self.agents.values().map(|s| s.running.len()).sum()
    }

    /// Starts every queued task some agent can take now, in queue order.
    fn dispatch(&mut self, myself: &ActorRef<SchedulerMsg>) {
        if self.draining || self.queue.is_empty() {
            return;
        }
        let mut free: u64 = self
            .agents
            .values()
            .map(|s| u64::from(s.max.saturating_sub(s.running.len() as u32)))
            .sum();
        let mut cursor = None;
        let mut scanned = 0;
        while free > 0 && scanned < SCAN_LIMIT {
            let Some(key) = self.queue.first_after(cursor.as_ref()) else {
                break;
            };
            scanned += 1;
            let task_id = key.2.clone();
            cursor = Some(key);
            let Some(task) = self.tasks.get(&task_id) else {
                self.queue.remove(&task_id);
                continue;
            };
            let want = match (&task.target_agent, &task.capability) {
                (Some(a), _) => Want::Agent(a),
                (None, Some(c)) => Want::Capability(c),
                (None, None) => continue,
            };
            let candidates = self.agents.iter().map(|(id, s)| Candidate {
                id,
                capabilities: &s.capabilities,
                running: s.running.len() as u32,
                max: s.max,
            });
            let Some(agent) = pick(want, candidates).map(str::to_owned) else {
                continue;
            };
            if !self.start(&task_id, &agent) {
                // The agent died since it last spoke: forget it and give its work back.
                self.agent_gone(myself, &agent, "unreachable at dispatch");
                free = self
                    .agents
                    .values()
                    .map(|s| u64::from(s.max.saturating_sub(s.running.len() as u32)))
                    .sum();
                continue;
            }
            free -= 1;
        }
    }

    fn agent_gone(&mut self, myself: &ActorRef<SchedulerMsg>, id: &str, reason: &str) {
        if let Some(slot) = self.agents.remove(id) {
            tracing::info!(agent = %id, %reason, running = slot.running.len(), "agent left the scheduler");
            for task_id in slot.running {
                self.attempt_failed(myself, &task_id, format!("agent {id} went down: {reason}"));
            }
        }
    }

    /// Starts an attempt and takes the task off the queue; false (and nothing changed) if the
    /// agent could not be reached.
    fn start(&mut self, task_id: &str, agent_id: &str) -> bool {
        let (Some(task), Some(slot)) = (self.tasks.get_mut(task_id), self.agents.get_mut(agent_id)) else {
            return true;
        };
        let assignment = Assignment {
            task_id: task_id.to_owned(),
            attempt: task.attempts + 1,
            payload: task.payload.clone(),
            timeout_ms: task.timeout_ms,
        };
        if slot.actor.cast(AgentMsg::Run(assignment)).is_err() {
            // Nothing started: the task keeps its state and its place in the queue.
            return false;
        }
        self.queue.remove(task_id);
        task.state = TaskState::Running;
        task.attempts += 1;
        task.agent_id = Some(agent_id.to_owned());
        task.started_at = Some(troupe_runtime::clock::now());
        task.error = None;
        slot.running.insert(task_id.to_owned());
        let _ = self.record(task_id, "TASK_STARTED", json!({}));
        true
    }

    fn finished(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        task_id: &str,
        attempt: u32,
        agent_id: &str,
        outcome: Outcome,
    ) {
        let current = self.tasks.get(task_id).is_some_and(|t| {
            t.state == TaskState::Running && t.attempts == attempt && t.agent_id.as_deref() == Some(agent_id)
        });
        if !current {
            return; // a late result of an attempt that was cancelled or re-queued
        }
        if let Some(slot) = self.agents.get_mut(agent_id) {
            slot.running.remove(task_id);
        }
        match outcome {
            Ok(result) => {
                let Some(mut task) = self.tasks.remove(task_id) else {
                    return;
                };
                task.state = TaskState::Succeeded;
                task.result = Some(result);
                task.finished_at = Some(troupe_runtime::clock::now());
                self.done.entry(agent_id.to_owned()).or_default().succeeded += 1;
                observe(&task, "succeeded");
                let _ = self.record_owned(&task, "TASK_SUCCEEDED", json!({}));
            }
            Err(error) => self.attempt_failed(myself, task_id, error),
        }
    }

    /// An attempt failed: retry after a backoff while attempts remain, else fail the task.
    fn attempt_failed(&mut self, myself: &ActorRef<SchedulerMsg>, task_id: &str, error: String) {
        let Some(task) = self.tasks.get_mut(task_id) else {
            return;
        };
        task.error = Some(error.clone());
        if task.attempts < task.max_attempts {
            task.state = TaskState::Queued;
            let delay = self.retry.delay(task.attempts);
            self.delayed.push(Reverse((Instant::now() + delay, task_id.to_owned())));
            metrics::counter!("troupe_tasks_total", "outcome" => "retried").increment(1);
            let _ = self.record(
                task_id,
                "TASK_RETRYING",
                json!({ "error": error, "retryInMs": delay.as_millis() as u64 }),
            );
            self.arm_timer(myself);
        } else {
            let Some(mut task) = self.tasks.remove(task_id) else {
                return;
            };
            task.state = TaskState::Failed;
            task.finished_at = Some(troupe_runtime::clock::now());
            if let Some(agent) = &task.agent_id {
                self.done.entry(agent.clone()).or_default().failed += 1;
            }
            observe(&task, "failed");
            let _ = self.record_owned(&task, "TASK_FAILED", json!({ "error": error }));
        }
    }

    fn arm_timer(&mut self, myself: &ActorRef<SchedulerMsg>) {
        let Some(Reverse((due, _))) = self.delayed.peek() else {
            return;
        };
        if self.timer_at.is_some_and(|t| t <= *due) {
            return;
        }
        self.timer_at = Some(*due);
        myself.send_after(due.saturating_duration_since(Instant::now()), || SchedulerMsg::RetryDue);
    }

    fn retry_due(&mut self, myself: &ActorRef<SchedulerMsg>) {
        self.timer_at = None;
        let now = Instant::now();
        while self.delayed.peek().is_some_and(|Reverse((due, _))| *due <= now) {
            let Some(Reverse((_, id))) = self.delayed.pop() else {
                break;
            };
            if let Some(task) = self.tasks.get(&id) {
                if task.state == TaskState::Queued {
                    self.queue.push(&id, task.priority);
                }
            }
        }
        self.arm_timer(myself);
    }

    fn cancel(&mut self, id: String, reply: RpcReplyPort<Result<TaskRecord, ApiError>>) {
        let Some(mut task) = self.tasks.remove(&id) else {
            let store = self.store.clone();
            tokio::spawn(async move {
                let answer = match store.get(Table::Tasks, &id).await {
                    Ok(Some(bytes)) => match troupe_runtime::codec::decode::<TaskRecord>(&bytes) {
                        Ok(t) => Err(ApiError::Conflict(format!("task {id} is already {}", t.state.as_str()))),
                        Err(e) => Err(e.into()),
                    },
                    Ok(None) => Err(ApiError::NotFound(format!("no task {id}"))),
                    Err(e) => Err(e.into()),
                };
                let _ = reply.send(answer);
            });
            return;
        };
        self.queue.remove(&id);
        if task.state == TaskState::Running {
            if let Some(slot) = task.agent_id.as_ref().and_then(|a| self.agents.get_mut(a)) {
                slot.running.remove(&id);
                let _ = slot.actor.cast(AgentMsg::Cancel(id.clone()));
            }
        }
        task.state = TaskState::Cancelled;
        task.finished_at = Some(troupe_runtime::clock::now());
        observe(&task, "cancelled");
        let ticket = self.record_owned(&task, "TASK_CANCELLED", json!({}));
        tokio::spawn(async move {
            let answer = match ticket {
                Ok(t) => t.durable().await.map(|_| task).map_err(ApiError::from),
                Err(e) => Err(e),
            };
            let _ = reply.send(answer);
        });
    }
}

//! This node's tasks as the tasks service hands them over: submitted (through admission),
//! requeued, cancelled and read, with why a queued one waits. The scheduler actor runs them;
//! [`TaskQueue`] is the rest of the node's way in.
//!
//! ```text
//!  submit ─▶ admission ─▶ write QUEUED ─▶ Enqueue ─▶ scheduler
//!  requeue (DEAD, one at a time) ─▶ write QUEUED ─▶ Enqueue
//!  cancel ─▶ Cancel ─▶ scheduler (it writes CANCELLED)
//!  get / list / count ─▶ store, explained by the scheduler's WaitingFor
//! ```

mod cancel;
pub(super) mod elsewhere;
mod read;
mod requeue;
mod submit;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use ractor::ActorRef;
use serde::Serialize;
use troupe_runtime::idempotency::{Guard, Idempotency};
use troupe_runtime::store::Store;

pub use read::TaskFilter;
pub use submit::no_agent_has;

use super::admission::Admission;
use super::SchedulerMsg;
use crate::call::{ask, split};
use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::inflight::InFlight;
use crate::serving::Serving;
use crate::slots::Slot;
use crate::task::{Priority, Strategy, SubmitTaskRequest, TaskRecord, TaskSpec, TaskState};

/// Failed attempts a task gets when its submission does not say.
const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// The handles and state this node's tasks are worked with.
#[derive(Clone)]
pub struct TaskQueue {
    /// This node's name: the ids of the tasks it makes name it.
    pub(crate) node: String,
    pub(crate) store: Store,
    pub(crate) idempotency: Idempotency,
    /// Which node holds an id (dependencies and a graph's agents must be this node's).
    pub(crate) cluster: Cluster,
    pub(crate) serving: Serving,
    pub(crate) scheduler: Slot<SchedulerMsg>,
    /// Tasks open on this node: what `max_open` bounds.
    pub(crate) open: Arc<AtomicUsize>,
    pub(crate) max_open: usize,
    /// How a task that does not say is matched to an agent.
    pub(crate) default_strategy: Strategy,
    /// DEAD tasks being requeued now.
    pub(crate) requeueing: InFlight,
}

/// Whether the test gate `lose-enqueue` is set (a build with the `fault-injection`
/// feature): a submit is acknowledged without its task handed to the scheduler, as a submit
/// whose write committed while its answer was lost is (the first answer to its key, given
/// again, must then make sure the task is queued).
pub(crate) fn enqueue_lost() -> bool {
    troupe_runtime::store::gate_is_set("lose-enqueue")
}

/// Hands a task just written QUEUED to this node's scheduler. While the scheduler is being
/// restarted the cast is lost (the slot still names the stopped one), and its successor
/// finds the task at its start only if it read the store after the task landed: so once a
/// scheduler runs again it is asked to make sure of the task (`EnsureQueued` checks the
/// store and the queue, and queues it at most once). Bounded at two minutes.
pub(crate) fn hand_over(slot: &Slot<SchedulerMsg>, spec: TaskSpec, status: crate::task::TaskStatus) {
    let id = spec.id.clone();
    if slot
        .get()
        .is_some_and(|s| s.cast(SchedulerMsg::Enqueue(Box::new((spec, status)))).is_ok())
    {
        return;
    }
    let slot = slot.clone();
    tokio::spawn(async move {
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
        while tokio::time::Instant::now() < until {
            let running = slot.get().filter(|s| s.get_status() == ractor::ActorStatus::Running);
            if running.is_some_and(|s| s.cast(SchedulerMsg::EnsureQueued(id.clone())).is_ok()) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        tracing::warn!(task = %id, "no scheduler ran for two minutes after the task was queued: it waits for the next start");
    });
}

impl TaskQueue {
    fn scheduler(&self) -> Result<ActorRef<SchedulerMsg>, ApiError> {
        self.scheduler.running("the scheduler")
    }

    /// What this node's agents can take of `capability` now.
    pub(crate) async fn room(&self, capability: &str) -> Result<crate::scheduler::Room, ApiError> {
        let capability = capability.to_owned();
        crate::call::ask(
            &self.scheduler()?,
            |reply| SchedulerMsg::Room(capability, reply),
            "the scheduler",
        )
        .await
    }

    fn holds(&self, id: &str) -> bool {
        self.cluster.holds(id)
    }

    /// Claims the key of a request that answers one task (when the caller gave one): the
    /// guard its answer is kept with, or (`Err`) the task the key's first request answered.
    async fn claim_one(
        &self,
        scope: &str,
        key: Option<&str>,
        request: &impl Serialize,
    ) -> Result<Result<Option<Guard>, TaskRecord>, ApiError> {
        Ok(
            match split(crate::call::claim(&self.idempotency, scope, key, request).await?) {
                Ok(guard) => Ok(guard),
                Err(id) => Err(self.found(&id).await?),
            },
        )
    }

    /// A task of this node, or NOT_FOUND.
    async fn found(&self, id: &str) -> Result<TaskRecord, ApiError> {
        self.get(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no task {id}")))
    }

    /// Admission's handles on this node.
    pub(super) fn admission(&self) -> Admission<'_> {
        Admission {
            store: &self.store,
            open: &self.open,
            max_open: self.max_open,
            node: &self.node,
        }
    }

    pub(super) async fn known_dependencies(&self, deps: &[String]) -> Result<Vec<String>, ApiError> {
        self.admission().known_dependencies(deps, |id| self.holds(id)).await
    }

    pub(super) fn spec_of(&self, id: String, req: SubmitTaskRequest, depends_on: Vec<String>) -> TaskSpec {
        TaskSpec {
            id,
            target_agent: req.agent_id,
            capability: req.capability,
            priority: req.priority.unwrap_or(Priority::Normal),
            max_attempts: req.max_attempts.map_or(DEFAULT_MAX_ATTEMPTS, |m| m as u32),
            timeout_ms: req.timeout_ms.map(|t| t as u64),
            payload: req.payload,
            created_at: troupe_runtime::clock::now(),
            depends_on,
            deadline: req.deadline,
            not_before: req.not_before,
            retry: req.retry,
            capabilities: req.capabilities,
            min_proficiency: req.min_proficiency,
            strategy: req.strategy.unwrap_or(self.default_strategy),
            budget: req.budget,
            session: req.session,
        }
    }

    /// The task with why it waits, if it is queued.
    pub(super) async fn explained(&self, task: TaskRecord) -> TaskRecord {
        self.explain(vec![task]).await.remove(0)
    }

    /// The tasks with why each queued one waits, as the scheduler sees it now (asked once
    /// for them all), told of the other nodes' agents (see `elsewhere`). Without an answer
    /// (the scheduler restarting) they say nothing.
    pub(super) async fn explain(&self, mut tasks: Vec<TaskRecord>) -> Vec<TaskRecord> {
        let queued: Vec<String> = tasks
            .iter()
            .filter(|t| t.status.state == TaskState::Queued)
            .map(|t| t.spec.id.clone())
            .collect();
        if queued.is_empty() {
            return tasks;
        }
        let Ok(scheduler) = self.scheduler() else {
            return tasks;
        };
        let Ok(mut why) = ask(&scheduler, |r| SchedulerMsg::WaitingFor(queued, r), "the scheduler").await else {
            return tasks;
        };
        let mut held_elsewhere = Vec::new();
        for (t, task) in tasks.iter_mut().enumerate() {
            task.waiting_for = why.remove(&task.spec.id);
            if task.waiting_for.is_none() && task.status.state == TaskState::Queued {
                if let Some(holder) = self.cluster.holder(&task.spec.id).filter(|h| *h != self.node) {
                    held_elsewhere.push((t, holder));
                }
            }
        }
        let tasks = self.said_by_their_holders(tasks, held_elsewhere).await;
        self.told_of_the_cluster(tasks).await
    }
}

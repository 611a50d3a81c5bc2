//! Every task transition is written with its event. The transitions of one message go out
//! as one batch (the agents' counters they touch written once), handed to the store writer
//! without waiting, and watched.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{Batch, Op, Store};

use super::{SchedulerMsg, State};
use crate::error::ApiError;
use crate::scheduler::engine::Transition;
use crate::tables::{AGENT_STATS, OPEN_TASKS, TASK_STATUS};
use crate::task::{TaskState, TaskStatus};

impl State {
    /// Adds a transition to the batch of the message being handled.
    pub(super) fn persist(&mut self, t: Transition) {
        let mut batch = std::mem::take(&mut self.pending);
        if let Err(e) = self.append(&mut batch, &t) {
            tracing::error!(task = %t.task, error = %e, "cannot encode a task transition");
            let _ = self.myself.cast(SchedulerMsg::WriteFailed(e.to_string()));
        }
        self.pending = batch;
    }

    /// Hands the message's transitions to the store.
    pub(super) fn write_pending(&mut self) {
        let mut batch = std::mem::take(&mut self.pending);
        if let Err(e) = self.append_stats(&mut batch) {
            tracing::error!(error = %e, "cannot encode agent counters");
        }
        if batch.is_empty() {
            return;
        }
        let myself = self.myself.clone();
        self.store.submit_watched(batch, move |e| {
            let _ = myself.cast(SchedulerMsg::WriteFailed(e.to_string()));
        });
        self.confirm_ends();
    }

    /// The counters of the agents whose tasks ended since the last write.
    pub(super) fn append_stats(&mut self, batch: &mut Batch) -> Result<(), ApiError> {
        for agent in std::mem::take(&mut self.dirty_stats) {
            let stats = self.stats.get(&agent).copied().unwrap_or_default();
            batch.push(Op::Put {
                table: AGENT_STATS,
                key: agent,
                value: troupe_runtime::codec::encode(&stats)?,
            });
        }
        Ok(())
    }

    /// Adds a transition to a batch: the status, its event and, when the task ended, the
    /// agent's counters and the open-task index.
    pub(super) fn append(&mut self, batch: &mut Batch, t: &Transition) -> Result<(), ApiError> {
        let mut data: Value = t.data.clone();
        data["agentId"] = json!(t.status.agent_id);
        data["attempt"] = json!(t.status.attempts);
        data["state"] = json!(t.status.state.as_str());
        batch.push(Op::Put {
            table: TASK_STATUS,
            key: t.task.clone(),
            value: troupe_runtime::codec::encode(&without_stale_progress(&t.status))?,
        });
        if let Some((agent, succeeded)) = &t.ended {
            self.work.remove(&t.task);
            self.ended.note(&t.task);
            self.uncache(&t.task);
            // One open task fewer (the tasks service counted it in when it was admitted).
            let _ = self
                .open
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| Some(v.saturating_sub(1)));
            batch.push(Op::Delete {
                table: OPEN_TASKS,
                key: t.task.clone(),
            });
            if let (Some(agent), Some(succeeded)) = (agent, succeeded) {
                let stats = self.stats.entry(agent.clone()).or_default();
                if *succeeded {
                    stats.succeeded += 1;
                } else {
                    stats.failed += 1;
                }
                self.dirty_stats.insert(agent.clone());
            }
            observe(&t.status, t.kind);
        } else if t.kind == "TASK_RETRYING" {
            metrics::counter!("troupe_tasks_total", "outcome" => "retried").increment(1);
        }
        batch.push(Op::Event(NewEvent::new(t.kind, Some(t.task.clone()), data)));
        Ok(())
    }
}

/// A task's stored status, if it has one.
pub(super) async fn stored_status(store: &Store, id: &str) -> Result<Option<TaskStatus>, ApiError> {
    match store.get(TASK_STATUS, id).await? {
        Some(bytes) => Ok(Some(troupe_runtime::codec::decode(&bytes)?)),
        None => Ok(None),
    }
}

fn observe(status: &TaskStatus, kind: &str) {
    let outcome = match kind {
        "TASK_SUCCEEDED" => "succeeded",
        "TASK_FAILED" => "failed",
        "TASK_DEAD" => "dead",
        "TASK_EXPIRED" => "expired",
        "TASK_DEPENDENCY_FAILED" => "dependency_failed",
        _ => "cancelled",
    };
    metrics::counter!("troupe_tasks_total", "outcome" => outcome).increment(1);
    if let (Some(s), Some(f)) = (status.started_at, status.finished_at) {
        let secs = (f - s).num_microseconds().unwrap_or(0) as f64 / 1e6;
        metrics::histogram!("troupe_task_duration_seconds").record(secs);
    }
}

/// The status as it is written: a task back in the queue shows no progress, which was its
/// last attempt's ("AWAITING_APPROVAL: …" would read as if it still waited for a person).
fn without_stale_progress(status: &TaskStatus) -> std::borrow::Cow<'_, TaskStatus> {
    if status.state == TaskState::Queued && status.progress.is_some() {
        let mut status = status.clone();
        status.progress = None;
        std::borrow::Cow::Owned(status)
    } else {
        std::borrow::Cow::Borrowed(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskProgress;

    #[test]
    fn a_task_back_in_the_queue_is_written_without_its_last_attempts_progress() {
        let mut status = TaskStatus::queued();
        status.state = TaskState::Running;
        status.progress = Some(TaskProgress {
            fraction: None,
            note: Some("AWAITING_APPROVAL: troupe_submit_task".into()),
            at: chrono::Utc::now(),
        });
        assert!(
            without_stale_progress(&status).progress.is_some(),
            "a running one keeps it"
        );
        status.state = TaskState::Queued;
        assert_eq!(without_stale_progress(&status).progress, None);
    }
}

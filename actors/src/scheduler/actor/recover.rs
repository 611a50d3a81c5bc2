//! Start-up: the scheduler rebuilds its queue from the open tasks in the store and its
//! per-agent counters from theirs.

use ractor::ActorProcessingErr;
use serde_json::json;
use troupe_runtime::store::Batch;

use super::{now, State};
use crate::agent::AgentStats;
use crate::scheduler::engine::{Limits, Transition};
use crate::tables::{AGENT_STATS, OPEN_TASKS, TASKS, TASK_STATUS};
use crate::task::{TaskSpec, TaskState, TaskStatus};

impl State {
    /// Loads the open tasks. One stored as RUNNING lost its attempt when the node died (a
    /// graceful shutdown puts running tasks back first): that attempt failed, and the task
    /// is retried if it has failures left. Execution is at-least-once.
    pub(super) async fn recover(&mut self) -> Result<(), ActorProcessingErr> {
        let (open, stats) = self
            .store
            .view(|v| {
                let mut ids = Vec::new();
                v.scan(OPEN_TASKS, None, |k, _| {
                    ids.push(k.to_owned());
                    Ok(true)
                })?;
                let mut open = Vec::with_capacity(ids.len());
                for id in ids {
                    let (Some(spec), Some(status)) = (v.get(TASKS, &id)?, v.get(TASK_STATUS, &id)?) else {
                        continue;
                    };
                    let spec: TaskSpec = troupe_runtime::codec::decode(&spec)?;
                    let status: TaskStatus = troupe_runtime::codec::decode(&status)?;
                    open.push((spec, status));
                }
                let mut stats = Vec::new();
                v.scan(AGENT_STATS, None, |k, bytes| {
                    stats.push((k.to_owned(), troupe_runtime::codec::decode::<AgentStats>(bytes)?));
                    Ok(true)
                })?;
                Ok((open, stats))
            })
            .await?;
        self.stats = stats.into_iter().collect();
        let now = now();
        let mut batch = Batch::new();
        let mut runnable = Vec::new();
        for (spec, mut status) in open {
            if status.state == TaskState::Running {
                let error = "the node stopped while the task was running".to_string();
                status.failures += 1;
                status.error = Some(error.clone());
                let (kind, data, ended) = if status.failures >= spec.max_attempts {
                    status.state = TaskState::Failed;
                    status.finished_at = Some(now.wall);
                    let agent = status.agent_id.clone();
                    ("TASK_FAILED", json!({ "error": error }), Some((agent, Some(false))))
                } else {
                    status.state = TaskState::Queued;
                    ("TASK_RETRYING", json!({ "error": error, "retryInMs": 0 }), None)
                };
                let transition = Transition {
                    task: spec.id.clone(),
                    status: status.clone(),
                    kind,
                    data,
                    ended,
                };
                self.append(&mut batch, &transition)?;
            }
            if !status.state.is_terminal() {
                runnable.push((spec, status));
            }
        }
        self.append_stats(&mut batch)?;
        if !batch.is_empty() {
            self.store.write(batch).await?;
        }
        for (spec, status) in runnable {
            self.work
                .insert(spec.id.clone(), (spec.payload.clone(), spec.timeout_ms));
            let effects = self.engine.enqueue(Limits::from(&spec), status, now);
            // No agent is registered yet, so nothing starts; effects would be records only.
            self.apply(effects, now);
        }
        Ok(())
    }
}

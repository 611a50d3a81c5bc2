//! Start-up: the scheduler rebuilds its queue and counters from the store.

use ractor::ActorProcessingErr;
use serde_json::json;
use troupe_runtime::store::{Batch, Table};

use super::record::append;
use super::State;
use crate::task::{TaskRecord, TaskState};

impl State {
    /// Loads unfinished tasks and the agents' counters from the store. Tasks that were running
    /// when the node stopped are retried: execution is at-least-once.
    pub(super) async fn recover(&mut self) -> Result<(), ActorProcessingErr> {
        let mut after = None;
        let mut batch = Batch::new();
        loop {
            let page = self.store.scan(Table::Tasks, after.clone(), 10_000, |_| true).await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (_, bytes) in page {
                let mut task: TaskRecord = troupe_runtime::codec::decode(&bytes)?;
                match task.state {
                    TaskState::Succeeded | TaskState::Failed => {
                        if let Some(agent) = &task.agent_id {
                            let c = self.done.entry(agent.clone()).or_default();
                            if task.state == TaskState::Succeeded {
                                c.succeeded += 1;
                            } else {
                                c.failed += 1;
                            }
                        }
                    }
                    TaskState::Cancelled => {}
                    TaskState::Queued => {
                        self.queue.push(&task.id, task.priority);
                        self.tasks.insert(task.id.clone(), task);
                    }
                    TaskState::Running => {
                        let error = "the node stopped while the task was running".to_string();
                        if task.attempts >= task.max_attempts {
                            task.state = TaskState::Failed;
                            task.finished_at = Some(troupe_runtime::clock::now());
                            task.error = Some(format!("{error}; no attempts left"));
                            append(&mut batch, &task, "TASK_FAILED", json!({ "error": task.error }))?;
                            continue;
                        }
                        task.state = TaskState::Queued;
                        task.error = Some(error.clone());
                        append(
                            &mut batch,
                            &task,
                            "TASK_RETRYING",
                            json!({ "error": error, "retryInMs": 0 }),
                        )?;
                        self.queue.push(&task.id, task.priority);
                        self.tasks.insert(task.id.clone(), task);
                    }
                }
            }
        }
        if !batch.is_empty() {
            self.store.write(batch).await?;
        }
        Ok(())
    }
}

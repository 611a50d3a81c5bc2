//! Every task transition is written with its event in one batch, handed to the store writer
//! without waiting; the ticket says when it is durable.

use serde_json::{json, Value};
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{Batch, Table, Ticket};

use super::State;
use crate::error::ApiError;
use crate::task::TaskRecord;

impl State {
    pub(super) fn record(&self, task_id: &str, kind: &str, extra: Value) -> Result<Ticket, ApiError> {
        match self.tasks.get(task_id) {
            Some(task) => self.record_owned(task, kind, extra),
            None => Err(ApiError::NotFound(format!("no task {task_id}"))),
        }
    }

    /// Persists the task with its event; the returned ticket tells when both are durable.
    pub(super) fn record_owned(&self, task: &TaskRecord, kind: &str, extra: Value) -> Result<Ticket, ApiError> {
        let mut batch = Batch::new();
        append(&mut batch, task, kind, extra)?;
        Ok(self.store.submit(batch))
    }
}

pub(super) fn append(batch: &mut Batch, task: &TaskRecord, kind: &str, mut data: Value) -> Result<(), ApiError> {
    data["agentId"] = json!(task.shown_agent());
    data["attempt"] = json!(task.attempts);
    data["state"] = json!(task.state.as_str());
    let bytes = troupe_runtime::codec::encode(task)?;
    batch.push(troupe_runtime::store::Op::Put {
        table: Table::Tasks,
        key: task.id.clone(),
        value: bytes,
    });
    batch.push(troupe_runtime::store::Op::Event(NewEvent::new(
        kind,
        Some(task.id.clone()),
        data,
    )));
    Ok(())
}

pub(super) fn observe(task: &TaskRecord, outcome: &'static str) {
    metrics::counter!("troupe_tasks_total", "outcome" => outcome).increment(1);
    if let (Some(s), Some(f)) = (task.started_at, task.finished_at) {
        let secs = (f - s).num_microseconds().unwrap_or(0) as f64 / 1e6;
        metrics::histogram!("troupe_task_duration_seconds").record(secs);
    }
}

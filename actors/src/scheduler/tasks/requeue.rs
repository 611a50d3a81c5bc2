//! Requeueing a DEAD task: its attempts renewed, admitted again, one requeue of a task at a
//! time.

use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::Batch;

use super::TaskQueue;

use crate::error::ApiError;
use crate::tables::{OPEN_TASKS, TASK_STATUS};
use crate::task::{TaskRecord, TaskState};

impl TaskQueue {
    /// Queues a DEAD task again, with its attempts renewed.
    pub(crate) async fn requeue(&self, id: &str, key: Option<&str>) -> Result<TaskRecord, ApiError> {
        self.serving.ensure()?;
        let guard = match self.claim_one("requeueTask", key, &id).await? {
            Ok(guard) => guard,
            Err(answered) => return Ok(answered),
        };
        // Reading DEAD and writing QUEUED must not interleave with another requeue: both
        // would admit the task and the later write could overwrite its RUNNING record.
        let _busy = self
            .requeueing
            .begin(id)
            .ok_or_else(|| ApiError::Conflict(format!("task {id} is being requeued already")))?;
        let record = self.found(id).await?;
        if record.status.state != TaskState::Dead {
            return Err(ApiError::Conflict(format!(
                "task {id} is {}; only a DEAD task can be requeued",
                record.status.state.as_str()
            )));
        }
        let admitted = self.admission().admit(1)?;
        let mut status = record.status;
        status.state = TaskState::Queued;
        status.failures = 0;
        status.finished_at = None;
        let data = json!({ "reason": "requeueTask", "attempt": status.attempts, "state": "QUEUED" });
        let mut batch = Batch::new()
            .put(TASK_STATUS, id, troupe_runtime::codec::encode(&status)?)
            .put(OPEN_TASKS, id, Vec::new())
            .event(NewEvent::new("TASK_REQUEUED", Some(id.to_owned()), data));
        if let Some(guard) = &guard {
            guard.record(&mut batch, &id.to_owned())?;
        }
        if let Err(e) = self.store.write(batch).await {
            admitted.refuse();
            return Err(e.into());
        }
        let spec = record.spec;
        super::hand_over(&self.scheduler, spec.clone(), status.clone());
        Ok(self.explained(TaskRecord::new(spec, status)).await)
    }
}

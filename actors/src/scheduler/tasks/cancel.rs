//! Cancelling a queued or running task: the scheduler decides and writes it.

use super::TaskQueue;
use crate::call::{ask, keep};
use crate::error::ApiError;
use crate::scheduler::SchedulerMsg;
use crate::tables::TASKS;
use crate::task::TaskRecord;

impl TaskQueue {
    /// Cancels a queued or running task of this node.
    pub(crate) async fn cancel(&self, id: &str, key: Option<&str>) -> Result<TaskRecord, ApiError> {
        let guard = match self.claim_one("cancelTask", key, &id).await? {
            Ok(guard) => guard,
            Err(answered) => return Ok(answered),
        };
        let scheduler = self.scheduler()?;
        let status = ask(&scheduler, |r| SchedulerMsg::Cancel(id.to_owned(), r), "the scheduler").await??;
        let spec = self
            .store
            .get(TASKS, id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no task {id}")))?;
        keep(&self.store, guard, id).await?;
        Ok(TaskRecord::new(troupe_runtime::codec::decode(&spec)?, status))
    }
}

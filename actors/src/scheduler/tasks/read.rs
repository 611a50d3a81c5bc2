//! Reading the cluster's tasks from this node's replica: one, a page, a count, each queued
//! one this node holds with why it waits.

use serde::{Deserialize, Serialize};
use troupe_runtime::store::{StoreError, View};

use super::TaskQueue;
use crate::error::ApiError;
use crate::tables::{TASKS, TASK_STATUS};
use crate::task::{TaskRecord, TaskSpec, TaskState, TaskStatus};

/// Which tasks a list or count wants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFilter {
    pub state: Option<TaskState>,
    pub agent: Option<String>,
}

impl TaskQueue {
    /// The task with this id, wherever it runs. One this replica does not hold yet may have
    /// been made elsewhere a moment ago: before saying there is none, this node catches up
    /// with what the cluster committed (a linearizable read).
    pub(crate) async fn get(&self, id: &str) -> Result<Option<TaskRecord>, ApiError> {
        let read = |id: String| async move { self.store.view(move |v| read_one(v, &id)).await };
        let found = match read(id.to_owned()).await? {
            Some(task) => Some(task),
            None => {
                self.store.linearize().await?;
                read(id.to_owned()).await?
            }
        };
        match found {
            Some(task) => Ok(Some(self.explained(task).await)),
            None => Ok(None),
        }
    }

    /// The cluster's tasks in id (creation) order after the cursor, filtered; the flag says
    /// whether more follow.
    pub(crate) async fn list(
        &self,
        filter: &TaskFilter,
        after: Option<String>,
        first: usize,
    ) -> Result<(Vec<TaskRecord>, bool), ApiError> {
        let filter = filter.clone();
        let (page, more) = crate::tables::page(&self.store, TASKS, after, first, move |v, _, bytes| {
            let spec: TaskSpec = troupe_runtime::codec::decode(bytes)?;
            let Some(status) = v.get(TASK_STATUS, &spec.id)? else {
                return Ok(None);
            };
            let task = TaskRecord::new(spec, troupe_runtime::codec::decode(&status)?);
            Ok(matches(&filter, &task).then_some(task))
        })
        .await?;
        Ok((self.explain(page).await, more))
    }

    pub(crate) async fn count(&self, filter: &TaskFilter) -> Result<u64, ApiError> {
        let filter = filter.clone();
        Ok(self
            .store
            .view(move |v| {
                let mut n = 0;
                v.scan(TASK_STATUS, None, |id, bytes| {
                    let status: TaskStatus = troupe_runtime::codec::decode(bytes)?;
                    if filter.state.is_some_and(|s| s != status.state) {
                        return Ok(true);
                    }
                    if filter.agent.is_some() {
                        let Some(spec) = v.get(TASKS, id)? else { return Ok(true) };
                        let task = TaskRecord::new(troupe_runtime::codec::decode(&spec)?, status);
                        if !matches(&filter, &task) {
                            return Ok(true);
                        }
                    }
                    n += 1;
                    Ok(true)
                })?;
                Ok(n)
            })
            .await?)
    }
}

fn matches(filter: &TaskFilter, task: &TaskRecord) -> bool {
    filter.state.is_none_or(|s| task.status.state == s)
        && filter.agent.as_deref().is_none_or(|a| task.shown_agent() == Some(a))
}

fn read_one(v: &View<'_>, id: &str) -> Result<Option<TaskRecord>, StoreError> {
    let (Some(spec), Some(status)) = (v.get(TASKS, id)?, v.get(TASK_STATUS, id)?) else {
        return Ok(None);
    };
    Ok(Some(TaskRecord::new(
        troupe_runtime::codec::decode(&spec)?,
        troupe_runtime::codec::decode(&status)?,
    )))
}

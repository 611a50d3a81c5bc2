//! Reading the cluster's tasks from this node's replica: one, a page, a count, each queued
//! one this node holds with why it waits.

use serde::{Deserialize, Serialize};
use troupe_runtime::store::{StoreError, View};

use super::TaskQueue;
use crate::error::ApiError;
use crate::tables::{TASKS, TASK_STATUS};
use crate::task::{TaskRecord, TaskSpec, TaskState};

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
        let (page, more) = crate::tables::page(&self.store, TASKS, after, first, move |v, id, bytes| {
            let Some(status) = v.get(TASK_STATUS, id)? else {
                return Ok(None);
            };
            // Told apart by the status's first fields before either is decoded whole (with
            // their payload and result: seconds a page among big tasks).
            if !might_match(&filter, &status)? {
                return Ok(None);
            }
            let task = TaskRecord::new(
                troupe_runtime::codec::decode(bytes)?,
                troupe_runtime::codec::decode(&status)?,
            );
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
                    if !might_match(&filter, bytes)? {
                        return Ok(true);
                    }
                    // An agent named by the status says it (see `might_match`); else the
                    // task's target does (`TaskRecord::shown_agent`).
                    if filter.agent.is_some() && leading(bytes)?.1.is_none() {
                        let Some(spec) = v.get(TASKS, id)? else { return Ok(true) };
                        let spec: TaskSpec = troupe_runtime::codec::decode(&spec)?;
                        if spec.target_agent != filter.agent {
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

/// A status's state and agent, its first fields, read without the rest (its result).
fn leading(status: &[u8]) -> Result<(TaskState, Option<String>), StoreError> {
    let mut fields = troupe_runtime::codec::Fields::of(status)?;
    let state = fields
        .read()?
        .ok_or_else(|| StoreError::Encoding("a task status without its state".into()))?;
    Ok((state, fields.read()?.flatten()))
}

/// Whether a task whose status is `status` may be one `filter` wants, from the status's
/// first fields: no when its state is another, or it names another agent (a status naming
/// none leaves it to the task's target).
fn might_match(filter: &TaskFilter, status: &[u8]) -> Result<bool, StoreError> {
    if filter.state.is_none() && filter.agent.is_none() {
        return Ok(true);
    }
    let (state, agent) = leading(status)?;
    Ok(filter.state.is_none_or(|s| s == state)
        && match (&filter.agent, agent) {
            (Some(wanted), Some(agent)) => *wanted == agent,
            _ => true,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskStatus;

    #[test]
    fn a_filter_reads_a_status_s_state_and_agent_without_its_result() {
        let mut status = TaskStatus::queued();
        status.state = TaskState::Succeeded;
        status.agent_id = Some("a1".into());
        status.result = Some(serde_json::json!({ "big": "x".repeat(100_000) }));
        let mut bytes = troupe_runtime::codec::encode(&status).unwrap();
        // Its result cut short: decoding the whole status fails; the filter never reads it.
        bytes.truncate(bytes.len() - 1_000);
        assert!(troupe_runtime::codec::decode::<TaskStatus>(&bytes).is_err());
        let filter = |state: Option<TaskState>, agent: Option<&str>| TaskFilter {
            state,
            agent: agent.map(str::to_owned),
        };
        assert!(might_match(&filter(Some(TaskState::Succeeded), None), &bytes).unwrap());
        assert!(!might_match(&filter(Some(TaskState::Queued), None), &bytes).unwrap());
        assert!(might_match(&filter(None, Some("a1")), &bytes).unwrap());
        assert!(!might_match(&filter(Some(TaskState::Succeeded), Some("a2")), &bytes).unwrap());
    }
}

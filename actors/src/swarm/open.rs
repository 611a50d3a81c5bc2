//! The index of each swarm's open (RUNNING) tasks, so a coordinator that looks at its work
//! every tick reads those and not every swarm task ever kept: a key per open task,
//! `<swarm id>/<task id>` in [`SWARM_OPEN_TASKS`], put with the task's first record and
//! deleted in the batch that records its end.

use troupe_runtime::store::{Batch, Store, StoreError, View};

use super::task::{SwarmTask, SwarmTaskState};
use crate::error::ApiError;
use crate::tables::{SWARM_OPEN_TASKS, SWARM_TASKS, TASK_STATUS};
use crate::task::{TaskState, TaskStatus};

fn key(swarm: &str, task: &str) -> String {
    format!("{swarm}/{task}")
}

/// Keeps the index in step with the task's record written in `batch`.
pub(crate) fn index(batch: Batch, task: &SwarmTask) -> Batch {
    match task.state {
        SwarmTaskState::Running => batch.put(SWARM_OPEN_TASKS, key(&task.swarm, &task.id), Vec::new()),
        _ => forget(batch, &task.swarm, &task.id),
    }
}

/// Takes a task out of the index (it ended, or its swarm is destroyed).
pub(crate) fn forget(batch: Batch, swarm: &str, task: &str) -> Batch {
    batch.delete(SWARM_OPEN_TASKS, key(swarm, task))
}

/// The ids of the swarm's open tasks, from the index, in id order.
fn open_in(v: &View<'_>, swarm: &str) -> Result<Vec<String>, StoreError> {
    let prefix = format!("{swarm}/");
    let mut out = Vec::new();
    v.scan_prefix(SWARM_OPEN_TASKS, &prefix, |key, _| {
        out.push(key[prefix.len()..].to_owned());
        Ok(true)
    })?;
    Ok(out)
}

/// How many subtasks of the swarm's open tasks wait in the queue now.
pub(crate) async fn waiting(store: &Store, swarm: &str) -> Result<usize, ApiError> {
    let swarm = swarm.to_owned();
    Ok(store
        .view(move |v| {
            let mut n = 0;
            for id in open_in(v, &swarm)? {
                let Some(bytes) = v.get(SWARM_TASKS, &id)? else {
                    continue;
                };
                let task: SwarmTask = troupe_runtime::codec::decode(&bytes)?;
                for sub in &task.subtasks {
                    if let Some(b) = v.get(TASK_STATUS, sub)? {
                        let s: TaskStatus = troupe_runtime::codec::decode(&b)?;
                        n += usize::from(s.state == TaskState::Queued);
                    }
                }
            }
            Ok(n)
        })
        .await?)
}

/// The ids of the swarm's open tasks, read from every swarm task kept, and the index made
/// to hold them: at a coordinator's start only, so tasks recorded before the index existed
/// are taken up too.
pub(crate) async fn open_tasks(store: &Store, swarm: &str) -> Result<Vec<String>, ApiError> {
    let wanted = swarm.to_owned();
    let open: Vec<SwarmTask> = store
        .view(move |v| {
            let mut out = Vec::new();
            v.scan(SWARM_TASKS, None, |_, bytes| {
                let t: SwarmTask = troupe_runtime::codec::decode(bytes)?;
                if t.swarm == wanted && t.state == SwarmTaskState::Running {
                    out.push(t);
                }
                Ok(true)
            })?;
            Ok(out)
        })
        .await?;
    if !open.is_empty() {
        let batch = open.iter().fold(Batch::new(), index);
        store.write(batch).await?;
    }
    Ok(open.into_iter().map(|t| t.id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskStatus;

    fn task(swarm: &str, id: &str, state: SwarmTaskState, subtasks: &[&str]) -> SwarmTask {
        SwarmTask {
            id: id.into(),
            swarm: swarm.into(),
            state,
            topology: None,
            subtasks: subtasks.iter().map(|s| s.to_string()).collect(),
            result: None,
            error: None,
            created_at: troupe_runtime::clock::now(),
            finished_at: None,
            mode: crate::swarm::SwarmTaskMode::Single {
                capabilities: Vec::new(),
                payload: serde_json::Value::Null,
            },
            handouts: Default::default(),
        }
    }

    fn put(batch: Batch, t: &SwarmTask) -> Batch {
        index(batch, t).put(SWARM_TASKS, t.id.clone(), troupe_runtime::codec::encode(t).unwrap())
    }

    #[tokio::test]
    async fn the_waiting_count_reads_the_open_tasks_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let queued = TaskStatus::queued();
        let open = task("s1", "t2", SwarmTaskState::Running, &["sub-a", "sub-b"]);
        let mut finished = task("s1", "t1", SwarmTaskState::Running, &["sub-c"]);
        let other = task("s2", "t3", SwarmTaskState::Running, &["sub-c"]);
        let mut batch = put(put(put(Batch::new(), &finished), &open), &other);
        for sub in ["sub-a", "sub-b", "sub-c"] {
            batch = batch.put(
                TASK_STATUS,
                sub.to_owned(),
                troupe_runtime::codec::encode(&queued).unwrap(),
            );
        }
        store.write(batch).await.unwrap();
        assert_eq!(waiting(&store, "s1").await.unwrap(), 3);
        // The task ends; its record is then not even read (these bytes would not decode).
        finished.state = SwarmTaskState::Succeeded;
        let ended = index(Batch::new(), &finished).put(SWARM_TASKS, "t1".to_owned(), b"not a swarm task".to_vec());
        store.write(ended).await.unwrap();
        assert_eq!(waiting(&store, "s1").await.unwrap(), 2, "only t2's subtasks wait");
        assert_eq!(waiting(&store, "s2").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_coordinator_start_indexes_open_tasks_kept_before_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let old = task("s1", "t1", SwarmTaskState::Running, &[]);
        let done = task("s1", "t0", SwarmTaskState::Failed, &[]);
        let batch = Batch::new()
            .put(
                SWARM_TASKS,
                old.id.clone(),
                troupe_runtime::codec::encode(&old).unwrap(),
            )
            .put(
                SWARM_TASKS,
                done.id.clone(),
                troupe_runtime::codec::encode(&done).unwrap(),
            );
        store.write(batch).await.unwrap();
        assert_eq!(open_tasks(&store, "s1").await.unwrap(), ["t1"]);
        let indexed = store.view(|v| open_in(v, "s1")).await.unwrap();
        assert_eq!(indexed, ["t1"]);
    }
}

//! How long LLM records are kept (`llm_retention_days`, 30 by default):
//!
//! - a task's transcript (its steps in `llm_steps`, its approvals in `llm_approvals`) goes
//!   once the task ended that long ago; a task that has not ended keeps all of it;
//! - usage rows (`llm_usage`, one per owner, UTC day and task) of days older than that are
//!   folded into one row per owner, `{owner}/0000-00-00/earlier`, so the totals of an agent,
//!   a swarm and a project, and the budgets checked against them, still count them: only
//!   the split by day and task goes;
//! - sessions (`llm_sessions`) are bounded by their token window and kept.
//!
//! Every node may prune (the leader does, by the node's chore): a fold is conditional on the
//! rows it read, so two pruners never count a row twice; deletions are idempotent.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use troupe_runtime::store::{Batch, Store, StoreError};

use super::approvals::Approval;
use super::journal::{day, Usage};

use crate::tables::{LLM_APPROVALS, LLM_STEPS, LLM_USAGE, TASK_STATUS};
use crate::task::TaskStatus;

/// The day of the row each owner's pruned usage is folded into: before any real day.
pub const EARLIER: &str = "0000-00-00";
/// Changes per write: a few hundred keys, far below the log's entry bound.
const PER_BATCH: usize = 500;

/// What one pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub steps: usize,
    pub approvals: usize,
    /// Usage rows folded into their owner's earlier row.
    pub usage_rows: usize,
}

/// Removes what `keep` no longer covers at `now`.
pub async fn prune(store: &Store, now: DateTime<Utc>, keep: Duration) -> Result<Pruned, StoreError> {
    // A window reaching past the calendar's start keeps everything.
    let Some(cutoff) = chrono::Duration::from_std(keep)
        .ok()
        .and_then(|keep| now.checked_sub_signed(keep))
    else {
        return Ok(Pruned::default());
    };
    let (steps, approvals) = transcripts(store, cutoff).await?;
    let mut pruned = Pruned {
        steps: steps.len(),
        approvals: approvals.len(),
        ..Pruned::default()
    };
    for chunk in steps.chunks(PER_BATCH).chain(approvals.chunks(PER_BATCH)) {
        let batch = chunk
            .iter()
            .fold(Batch::new(), |b, (table, key)| b.delete(*table, key.clone()));
        store.write(batch).await?;
    }
    pruned.usage_rows = fold_usage(store, &day(cutoff)).await?;
    Ok(pruned)
}

/// The steps and approvals of the tasks that ended before `cutoff`.
async fn transcripts(
    store: &Store,
    cutoff: DateTime<Utc>,
) -> Result<
    (
        Vec<(troupe_runtime::store::Table, String)>,
        Vec<(troupe_runtime::store::Table, String)>,
    ),
    StoreError,
> {
    store
        .view(move |v| {
            let mut ended: BTreeMap<String, bool> = BTreeMap::new();
            let mut ended_before = |task: &str| -> Result<bool, StoreError> {
                if let Some(known) = ended.get(task) {
                    return Ok(*known);
                }
                let status = v
                    .get(TASK_STATUS, task)?
                    .map(|b| troupe_runtime::codec::decode::<TaskStatus>(&b))
                    .transpose()?;
                let gone = status.is_some_and(|s| s.state.is_terminal() && s.finished_at.is_some_and(|f| f < cutoff));
                ended.insert(task.to_owned(), gone);
                Ok(gone)
            };
            let mut steps = Vec::new();
            v.scan(LLM_STEPS, None, |k, _| {
                // `{task}/{index:06}`
                if let Some((task, _)) = k.rsplit_once('/') {
                    if ended_before(task)? {
                        steps.push((LLM_STEPS, k.to_owned()));
                    }
                }
                Ok(true)
            })?;
            let mut approvals = Vec::new();
            v.scan(LLM_APPROVALS, None, |k, bytes| {
                let approval: Approval = troupe_runtime::codec::decode(bytes)?;
                if ended_before(&approval.task)? {
                    approvals.push((LLM_APPROVALS, k.to_owned()));
                }
                Ok(true)
            })?;
            Ok((steps, approvals))
        })
        .await
}

/// Per owner: its earlier row as read, and its rows to fold with their bytes.
type Old = BTreeMap<String, (Option<Vec<u8>>, Vec<(String, Vec<u8>)>)>;

/// Folds the usage rows of days before `first_kept` into their owner's earlier row; how
/// many rows it folded.
async fn fold_usage(store: &Store, first_kept: &str) -> Result<usize, StoreError> {
    let old = old_usage(store, first_kept).await?;
    fold(store, old).await
}

/// The usage rows of days before `first_kept`, by owner.
async fn old_usage(store: &Store, first_kept: &str) -> Result<Old, StoreError> {
    let first_kept = first_kept.to_owned();
    store
        .view(move |v| {
            let mut old: Old = BTreeMap::new();
            v.scan(LLM_USAGE, None, |k, bytes| {
                // `{owner}/{day}/{task}`: an owner (a project's name) may hold a slash.
                let mut parts = k.rsplitn(3, '/');
                let (Some(_task), Some(day), Some(owner)) = (parts.next(), parts.next(), parts.next()) else {
                    return Ok(true);
                };
                if day != EARLIER && day < first_kept.as_str() {
                    old.entry(owner.to_owned())
                        .or_default()
                        .1
                        .push((k.to_owned(), bytes.to_vec()));
                }
                Ok(true)
            })?;
            for (owner, (earlier, _)) in old.iter_mut() {
                *earlier = v.get(LLM_USAGE, &earlier_key(owner))?;
            }
            Ok(old)
        })
        .await
}

/// Writes the folds of `old`, each conditional on the rows it read: a fold another pruner
/// made first is left to it (its rows are gone), never counted twice.
async fn fold(store: &Store, old: Old) -> Result<usize, StoreError> {
    let mut folded = 0;
    for (owner, (mut earlier, rows)) in old {
        for chunk in rows.chunks(PER_BATCH) {
            let mut sum: Usage = match &earlier {
                Some(bytes) => troupe_runtime::codec::decode(bytes)?,
                None => Usage::default(),
            };
            let mut batch = Batch::new().require(LLM_USAGE, earlier_key(&owner), earlier.clone());
            for (key, bytes) in chunk {
                sum.add(&troupe_runtime::codec::decode(bytes)?);
                batch = batch
                    .require(LLM_USAGE, key.clone(), Some(bytes.clone()))
                    .delete(LLM_USAGE, key.clone());
            }
            let bytes = troupe_runtime::codec::encode(&sum)?;
            batch = batch.put(LLM_USAGE, earlier_key(&owner), bytes.clone());
            match store.write(batch).await {
                Ok(_) => {
                    folded += chunk.len();
                    earlier = Some(bytes);
                }
                Err(StoreError::Stale(_)) => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(folded)
}

fn earlier_key(owner: &str) -> String {
    format!("{owner}/{EARLIER}/earlier")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskState;
    use chrono::TimeZone;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
        (dir, store)
    }

    fn status(state: TaskState, finished_at: Option<DateTime<Utc>>) -> Vec<u8> {
        let mut s = TaskStatus::queued();
        s.state = state;
        s.finished_at = finished_at;
        troupe_runtime::codec::encode(&s).unwrap()
    }

    fn usage(tokens: u64, cost: f64) -> Vec<u8> {
        troupe_runtime::codec::encode(&Usage {
            input_tokens: tokens,
            output_tokens: 1,
            cost_usd: cost,
        })
        .unwrap()
    }

    fn approval(task: &str) -> Vec<u8> {
        troupe_runtime::codec::encode(&Approval {
            id: format!("{task}/1/c1"),
            task: task.into(),
            agent: "a1".into(),
            step: 1,
            call: "c1".into(),
            tool: "pay".into(),
            arguments: "{}".into(),
            reason: "policy".into(),
            requested_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            expires_at: None,
            decision: None,
        })
        .unwrap()
    }

    async fn keys(store: &Store, table: troupe_runtime::store::Table) -> Vec<String> {
        store
            .view(move |v| {
                let mut out = Vec::new();
                v.scan(table, None, |k, _| {
                    out.push(k.to_owned());
                    Ok(true)
                })?;
                Ok(out)
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn transcripts_of_tasks_ended_before_the_window_go_and_usage_is_folded_without_changing_a_total() {
        let (_dir, store) = store().await;
        let now = Utc.with_ymd_and_hms(2026, 3, 31, 12, 0, 0).unwrap();
        let long_ago = Utc.with_ymd_and_hms(2026, 2, 1, 9, 0, 0).unwrap();
        let yesterday = Utc.with_ymd_and_hms(2026, 3, 30, 9, 0, 0).unwrap();
        let batch = Batch::new()
            // old: ended 58 days ago; recent: ended yesterday; open: still running, began long ago.
            .put(TASK_STATUS, "old", status(TaskState::Succeeded, Some(long_ago)))
            .put(TASK_STATUS, "recent", status(TaskState::Failed, Some(yesterday)))
            .put(TASK_STATUS, "open", status(TaskState::Running, None))
            .put(LLM_STEPS, "old/000000", vec![1])
            .put(LLM_STEPS, "old/000001", vec![1])
            .put(LLM_STEPS, "recent/000000", vec![1])
            .put(LLM_STEPS, "open/000000", vec![1])
            .put(LLM_APPROVALS, "old/1/c1", approval("old"))
            .put(LLM_APPROVALS, "open/1/c1", approval("open"))
            .put(LLM_USAGE, "a1/2026-02-01/old", usage(100, 1.0))
            .put(LLM_USAGE, "a1/2026-02-02/open", usage(20, 0.25))
            .put(LLM_USAGE, "a1/2026-03-30/recent", usage(7, 0.5))
            .put(LLM_USAGE, "project:team/a/2026-02-01/old", usage(100, 1.0))
            .put(LLM_USAGE, "swarm:s1/2026-03-30/recent", usage(7, 0.5));
        store.write(batch).await.unwrap();
        let today = day(now);
        let before = super::super::journal::spent(&store, "a1", &today).await.unwrap();

        let pruned = prune(&store, now, Duration::from_secs(30 * 86_400)).await.unwrap();
        assert_eq!(
            pruned,
            Pruned {
                steps: 2,
                approvals: 1,
                usage_rows: 3
            }
        );
        assert_eq!(keys(&store, LLM_STEPS).await, ["open/000000", "recent/000000"]);
        assert_eq!(keys(&store, LLM_APPROVALS).await, ["open/1/c1"]);
        assert_eq!(
            keys(&store, LLM_USAGE).await,
            [
                "a1/0000-00-00/earlier",
                "a1/2026-03-30/recent",
                "project:team/a/0000-00-00/earlier",
                "swarm:s1/2026-03-30/recent"
            ]
        );
        // Totals, and so budgets, count what was folded.
        let after = super::super::journal::spent(&store, "a1", &today).await.unwrap();
        assert_eq!(after, before);
        assert_eq!(after.0.input_tokens, 127);
        let project = super::super::journal::spent(&store, "project:team/a", &today)
            .await
            .unwrap();
        assert_eq!(project.0.input_tokens, 100);

        // A second pass has nothing to do; a later fold adds to the earlier row.
        assert_eq!(
            prune(&store, now, Duration::from_secs(30 * 86_400)).await.unwrap(),
            Pruned::default()
        );
        let later = now + chrono::Duration::days(40);
        let pruned = prune(&store, later, Duration::from_secs(30 * 86_400)).await.unwrap();
        assert_eq!((pruned.steps, pruned.usage_rows), (1, 2));
        assert_eq!(
            super::super::journal::spent(&store, "a1", &day(later)).await.unwrap().0,
            after.0
        );
        // Kept for a million years (`llm_retention_days` set absurdly high): nothing goes.
        let ages = Duration::from_secs(1_000_000 * 365 * 86_400);
        assert_eq!(prune(&store, later, ages).await.unwrap(), Pruned::default());
    }

    #[tokio::test]
    async fn a_fold_another_pruner_made_first_is_not_counted_twice() {
        let (_dir, store) = store().await;
        let batch = Batch::new().put(LLM_USAGE, "a1/2026-01-01/t1", usage(10, 0.5)).put(
            LLM_USAGE,
            "a1/2026-01-02/t2",
            usage(5, 0.25),
        );
        store.write(batch).await.unwrap();
        // Two pruners (a leader and the one that followed it) read the same rows.
        let first = old_usage(&store, "2026-02-01").await.unwrap();
        let second = old_usage(&store, "2026-02-01").await.unwrap();
        assert_eq!(first, second);
        assert_eq!(fold(&store, first).await.unwrap(), 2);
        // The second's writes are conditional on what it read: refused, nothing counted again.
        assert_eq!(fold(&store, second).await.unwrap(), 0);
        let (all, _) = super::super::journal::spent(&store, "a1", "2026-03-01").await.unwrap();
        assert_eq!((all.input_tokens, all.cost_usd), (15, 0.75));
    }
}

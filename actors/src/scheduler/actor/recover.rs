//! Start-up: the scheduler rebuilds its queue from the open tasks in the store and its
//! per-agent counters from theirs.

use std::collections::HashMap;

use ractor::ActorProcessingErr;
use serde_json::json;
use troupe_runtime::store::Batch;

use super::{now, State};
use crate::agent::AgentStats;
use crate::scheduler::engine::{Limits, Transition};
use crate::tables::{AGENT_STATS, LLM_APPROVALS, OPEN_TASKS, TASKS, TASK_STATUS};
use crate::task::{TaskSpec, TaskState, TaskStatus};

impl State {
    /// Loads the open tasks. One stored as RUNNING lost its attempt when the node died (a
    /// graceful shutdown puts running tasks back first): that attempt failed, and the task
    /// is retried if it has failures left. Execution is at-least-once.
    pub(super) async fn recover(&mut self) -> Result<(), ActorProcessingErr> {
        // What this scheduler handed the writer (a task's start, its end) lands first: a task
        // that ran here and was forgotten must not be read back as open and run again.
        self.store.flush().await?;
        self.load(None).await
    }

    /// Whether the store says the task `id` is open and held here, before this node's writes
    /// in flight land (its end may be among them).
    pub(super) async fn open_here(&self, id: &str) -> Result<bool, ActorProcessingErr> {
        let (id, node) = (id.to_owned(), self.node.clone());
        Ok(self
            .store
            .view(move |v| Ok(v.get(OPEN_TASKS, &id)?.is_some() && crate::cluster::directory::held_in(v, &id, &node)?))
            .await?)
    }

    /// Takes over the open tasks `ids` that the cluster placed here (moved from a lost node,
    /// handed over by a node none of whose agents served them, or submitted on a peer that
    /// chose this node's agents): each that is open, held here and not known to this
    /// scheduler yet. One that was RUNNING elsewhere is queued again without being charged an
    /// attempt: the node was lost, not the attempt. Only the ids are read, and nothing waits
    /// for this node's writes first, unless one of them ended here a moment ago: it came
    /// here first another way (`EnsureQueued` for a submit answered twice, a move heard
    /// twice), and the store may still say it is open while its end is on its way to the
    /// log. Then the adoption waits, without holding the scheduler, until this scheduler's
    /// writes so far landed (a history checker's run had such a task run twice).
    pub(super) async fn adopt(&mut self, ids: Vec<String>) -> Result<(), ActorProcessingErr> {
        if ids.iter().any(|id| self.ended.holds(id)) {
            self.after_landing(Some(super::SchedulerMsg::Adopt(ids)));
            return Ok(());
        }
        tracing::debug!(tasks = ids.len(), "adopting the open tasks placed here");
        self.load(Some(ids)).await
    }

    /// Loads the open tasks this node holds and does not know yet: those of `only`, or every
    /// one with the agents' counters (at start).
    async fn load(&mut self, only: Option<Vec<String>>) -> Result<(), ActorProcessingErr> {
        let adopting = only.is_some();
        let node = self.node.clone();
        let (open, waiting, stats, settled) = self
            .store
            .view(move |v| {
                let mut ids = Vec::new();
                let mut held = |k: &str| -> Result<(), troupe_runtime::store::StoreError> {
                    if crate::cluster::directory::held_in(v, k, &node)? {
                        ids.push(k.to_owned());
                    }
                    Ok(())
                };
                match &only {
                    Some(only) => {
                        for id in only {
                            if v.get(OPEN_TASKS, id)?.is_some() {
                                held(id)?;
                            }
                        }
                    }
                    None => v.scan(OPEN_TASKS, None, |k, _| {
                        held(k)?;
                        Ok(true)
                    })?,
                }
                let mut open = Vec::with_capacity(ids.len());
                for id in ids {
                    let (Some(spec), Some(status)) = (v.get(TASKS, &id)?, v.get(TASK_STATUS, &id)?) else {
                        continue;
                    };
                    let spec: TaskSpec = troupe_runtime::codec::decode(&spec)?;
                    let status: TaskStatus = troupe_runtime::codec::decode(&status)?;
                    open.push((spec, status));
                }
                // Dependencies that are not open ended before: what became of them.
                let open_ids: std::collections::HashSet<&str> = open
                    .iter()
                    .map(|(s, _): &(TaskSpec, TaskStatus)| s.id.as_str())
                    .collect();
                let closed: Vec<String> = open
                    .iter()
                    .flat_map(|(s, _)| s.depends_on.iter())
                    .filter(|d| !open_ids.contains(d.as_str()))
                    .cloned()
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let settled = super::settled_in(v, &closed)?;
                // Running tasks whose attempt waits for an operator's decision on a tool call.
                let mut waiting = std::collections::HashSet::new();
                for (spec, status) in &open {
                    if status.state.is_running() && awaits_decision(v, &spec.id)? {
                        waiting.insert(spec.id.clone());
                    }
                }
                let mut stats = Vec::new();
                if only.is_some() {
                    // The counters of the agents here are loaded already.
                    return Ok((open, waiting, stats, settled));
                }
                v.scan(AGENT_STATS, None, |k, bytes| {
                    if !crate::cluster::directory::held_in(v, k, &node)? {
                        return Ok(true);
                    }
                    stats.push((k.to_owned(), troupe_runtime::codec::decode::<AgentStats>(bytes)?));
                    Ok(true)
                })?;
                Ok((open, waiting, stats, settled))
            })
            .await?;
        let settled: HashMap<String, Option<serde_json::Value>> = settled.into_iter().collect();
        if !adopting {
            self.stats = stats.into_iter().collect();
        }
        let now = now();
        let mut batch = Batch::new();
        let mut runnable = Vec::new();
        for (spec, mut status) in open {
            if self.work.contains_key(&spec.id) {
                // Known here already (a move this node heard of twice).
                continue;
            }
            // Queued again uncharged: an attempt whose node was lost (not the attempt), or one
            // that waited for an operator (its durable loop waits again for the same call
            // when it starts again: no attempt of it failed).
            let lost = adopting.then_some("the node running the task was lost");
            let held = waiting
                .contains(&spec.id)
                .then_some("the node stopped while the task waited for an operator's decision");
            if let (true, Some(error)) = (status.state.is_running(), lost.or(held)) {
                let error = error.to_string();
                status.error = Some(error.clone());
                status.attempt_errors.push(crate::task::AttemptError {
                    attempt: status.attempts,
                    agent_id: status.agent_id.clone(),
                    error: error.clone(),
                    at: now.wall,
                });
                status.state = TaskState::Queued;
                let transition = Transition {
                    task: spec.id.clone(),
                    status: status.clone(),
                    kind: "TASK_RETRYING",
                    data: json!({ "error": error, "retryInMs": 0, "charged": false }),
                    ended: None,
                };
                self.append(&mut batch, &transition)?;
            } else if status.state.is_running() {
                let error = "the node stopped while the task was running".to_string();
                status.failures += 1;
                status.error = Some(error.clone());
                status.attempt_errors.push(crate::task::AttemptError {
                    attempt: status.attempts,
                    agent_id: status.agent_id.clone(),
                    error: error.clone(),
                    at: now.wall,
                });
                let (kind, data, ended) = if status.failures >= spec.max_attempts {
                    status.state = TaskState::Dead;
                    status.finished_at = Some(now.wall);
                    let agent = status.agent_id.clone();
                    ("TASK_DEAD", json!({ "error": error }), Some((agent, Some(false))))
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
        for (spec, status) in dependencies_first(runnable) {
            self.work.insert(spec.id.clone(), spec.timeout_ms);
            let mine = spec
                .depends_on
                .iter()
                .filter_map(|d| settled.get(d).map(|r| (d.clone(), r.clone())))
                .collect();
            let effects = self.engine.enqueue_with(Limits::from(&spec), status, mine, now);
            // At start no agent is registered yet, so nothing starts; effects would be records
            // only. Adopted tasks may start at once on this node's agents.
            self.apply(effects, now).await?;
        }
        Ok(())
    }
}

/// Whether task `id` has a tool call that waits for an operator's decision.
fn awaits_decision(v: &troupe_runtime::store::View<'_>, id: &str) -> Result<bool, troupe_runtime::store::StoreError> {
    let mut found = false;
    v.scan_prefix(LLM_APPROVALS, &format!("{id}/"), |_, bytes| {
        found = troupe_runtime::codec::decode::<crate::agent::Approval>(bytes)?
            .decision
            .is_none();
        Ok(!found)
    })?;
    Ok(found)
}

/// Orders open tasks so each comes after the open tasks it depends on.
fn dependencies_first(tasks: Vec<(TaskSpec, TaskStatus)>) -> Vec<(TaskSpec, TaskStatus)> {
    let mut by_id: HashMap<String, (TaskSpec, TaskStatus)> = tasks.into_iter().map(|t| (t.0.id.clone(), t)).collect();
    let mut ids: Vec<String> = by_id.keys().cloned().collect();
    ids.sort();
    let mut out = Vec::with_capacity(ids.len());
    let mut seen = std::collections::HashSet::new();
    for id in ids {
        // Depth-first through open dependencies; an explicit stack, as graphs may be deep.
        let mut stack = vec![(id, false)];
        while let Some((id, expanded)) = stack.pop() {
            if expanded {
                if let Some(t) = by_id.remove(&id) {
                    out.push(t);
                }
                continue;
            }
            let Some((spec, _)) = by_id.get(&id) else { continue };
            if !seen.insert(id.clone()) {
                continue;
            }
            stack.push((id.clone(), true));
            for dep in spec.depends_on.iter().rev() {
                if by_id.contains_key(dep) {
                    stack.push((dep.clone(), false));
                }
            }
        }
    }
    out
}

//! Admission: what a submission must pass before its task is written QUEUED. The node
//! bounds its open tasks (`max_open_tasks`: queued, waiting or running), refusing past it
//! with BACKPRESSURE; a task aimed at an agent needs that agent to exist and not be stopped;
//! dependencies must be tasks of this node that exist.
//!
//! ```text
//!  submit ─▶ check agent ─▶ check dependencies ─▶ admit n (open += n) ─▶ write QUEUED
//!                                                      │                   │ fails
//!                                                      └─ over the bound:  └─▶ refuse (open −= n)
//!                                                         BACKPRESSURE
//! ```
//!
//! The scheduler takes the count down as tasks end (see `actor/record.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{Batch, Op, Store};

use crate::agent::{AgentSpec, Desired};
use crate::error::ApiError;
use crate::tables::{AGENTS, OPEN_TASKS, TASKS, TASK_STATUS};
use crate::task::{TaskSpec, TaskStatus};

/// The retry hint of a BACKPRESSURE refusal.
const BACKPRESSURE_RETRY_MS: u64 = 1000;

/// The narrow handles admission needs of its node.
pub struct Admission<'a> {
    pub store: &'a Store,
    /// The node's count of open tasks.
    pub open: &'a AtomicUsize,
    pub max_open: usize,
    pub node: &'a str,
}

/// Tasks counted as open before their write; given back if it fails.
#[must_use = "refuse() gives the tasks back if their write fails"]
pub struct Admitted<'a> {
    open: &'a AtomicUsize,
    n: usize,
}

impl Admitted<'_> {
    pub fn refuse(self) {
        release_open(self.open, self.n);
    }
}

/// Takes `n` from the open-task count, never below zero.
pub fn release_open(open: &AtomicUsize, n: usize) {
    let _ = open.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| Some(v.saturating_sub(n)));
}

impl<'a> Admission<'a> {
    /// Admits `n` more open tasks, or refuses them all with BACKPRESSURE.
    pub fn admit(&self, n: usize) -> Result<Admitted<'a>, ApiError> {
        let before = self.open.fetch_add(n, Ordering::SeqCst);
        if before.saturating_add(n) > self.max_open {
            release_open(self.open, n);
            metrics::counter!("troupe_tasks_refused_total", "reason" => "backpressure").increment(n as u64);
            return Err(ApiError::Backpressure(
                format!(
                    "node {} has {before} open tasks, its limit is {} (max_open_tasks); retry later",
                    self.node, self.max_open
                ),
                BACKPRESSURE_RETRY_MS,
            ));
        }
        Ok(Admitted { open: self.open, n })
    }

    /// A task aimed at an agent needs the agent to exist and not be stopped.
    pub async fn check_agent(&self, agent: Option<&str>) -> Result<(), ApiError> {
        let Some(agent) = agent else { return Ok(()) };
        let mut spec = self.store.get(AGENTS, agent).await?;
        if spec.is_none() {
            // Spawned on another node a moment ago, not applied here yet: before the task is
            // refused, this node catches up with what the cluster committed.
            self.store.linearize().await?;
            spec = self.store.get(AGENTS, agent).await?;
        }
        match spec
            .map(|b| troupe_runtime::codec::decode::<AgentSpec>(&b))
            .transpose()?
        {
            None => Err(ApiError::NotFound(format!("no agent {agent}"))),
            Some(a) if a.desired == Desired::Stopped => Err(ApiError::Conflict(format!("agent {} is stopped", a.name))),
            Some(_) => Ok(()),
        }
    }

    /// Checks that every dependency is a task of this node (`holds` says whether an id is);
    /// answers them without repeats. A task without dependencies reads nothing: a read view
    /// costs a blocking-pool thread.
    pub async fn known_dependencies(
        &self,
        deps: &[String],
        holds: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>, ApiError> {
        let mut unique: Vec<String> = Vec::with_capacity(deps.len());
        for d in deps {
            if !unique.contains(d) {
                unique.push(d.clone());
            }
        }
        if unique.is_empty() {
            return Ok(unique);
        }
        if let Some(d) = unique.iter().find(|d| !holds(d)) {
            // Named by the node that holds it now (its id names the node that made it,
            // which may have handed it on).
            let id = d.clone();
            let holder = self
                .store
                .view(move |v| crate::cluster::directory::placement_in(v, &id))
                .await?
                .map(|p| p.node)
                .filter(|n| *n != self.node);
            let whose = match &holder {
                Some(n) => format!("held by node {n}"),
                None => "a task of another node".to_owned(),
            };
            let there = holder.map(|n| format!("; submit it to {n}")).unwrap_or_default();
            return Err(ApiError::invalid(format!(
                "dependency {d} is {whose}: a task may depend only on tasks held by the node it is submitted to ({}){there}",
                self.node
            )));
        }
        let check = unique.clone();
        let missing = self
            .store
            .view(move |v| {
                let mut missing = Vec::new();
                for d in &check {
                    if v.get(TASKS, d)?.is_none() {
                        missing.push(d.clone());
                    }
                }
                Ok(missing)
            })
            .await?;
        if !missing.is_empty() {
            return Err(ApiError::invalid(format!(
                "unknown dependencies: {}",
                missing.join(", ")
            )));
        }
        Ok(unique)
    }
}

/// Adds a newly queued task to a batch: spec, status, open-task entry and TASK_QUEUED.
pub fn queue_in(batch: &mut Batch, spec: &TaskSpec, status: &TaskStatus) -> Result<(), ApiError> {
    let data = json!({
        "agentId": spec.target_agent,
        "capability": spec.capability,
        "priority": spec.priority.as_str(),
        "dependsOn": spec.depends_on,
        "deadline": spec.deadline,
        "notBefore": spec.not_before,
    });
    batch.push(Op::Put {
        table: TASKS,
        key: spec.id.clone(),
        value: troupe_runtime::codec::encode(spec)?,
    });
    batch.push(Op::Put {
        table: TASK_STATUS,
        key: spec.id.clone(),
        value: troupe_runtime::codec::encode(status)?,
    });
    batch.push(Op::Put {
        table: OPEN_TASKS,
        key: spec.id.clone(),
        value: Vec::new(),
    });
    batch.push(Op::Event(NewEvent::new("TASK_QUEUED", Some(spec.id.clone()), data)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn admission_refuses_past_the_bound_and_gives_back_what_it_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let open = AtomicUsize::new(0);
        let admission = Admission {
            store: &store,
            open: &open,
            max_open: 3,
            node: "n1",
        };
        let _two = admission.admit(2).unwrap();
        let refused = admission.admit(2).err().unwrap();
        assert!(matches!(&refused, ApiError::Backpressure(m, 1000) if m.contains("has 2 open tasks")));
        assert_eq!(open.load(Ordering::SeqCst), 2, "the refused ones are not counted");
        admission.admit(1).unwrap().refuse();
        assert_eq!(open.load(Ordering::SeqCst), 2, "a failed write gives its tasks back");
        release_open(&open, 5);
        assert_eq!(open.load(Ordering::SeqCst), 0, "never below zero");
    }
}

//! Tool calls that wait for an operator. A call the agent's policy names is committed as an
//! [`Approval`] (with an `APPROVAL_REQUESTED` event about its task) and the loop waits for
//! its decision (`approveCall`, `rejectCall`: an `APPROVAL_DECIDED` event), or for the
//! policy's timeout, which rejects it. The decision is kept: a loop that starts again (a
//! restart, a failover) finds it, or waits again for a call still pending. The time spent
//! waiting does not count against the attempt's `timeoutMs`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{Batch, Store, StoreError, View};

use crate::tables::{LLM_APPROVALS, TASK_STATUS};
use crate::task::{TaskState, TaskStatus};

/// A tool call waiting for (or given) an operator's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// `{task}/{step}/{call}`.
    pub id: String,
    pub task: String,
    pub agent: String,
    pub step: u32,
    pub call: String,
    pub tool: String,
    /// As the model wrote them.
    pub arguments: String,
    /// Why the policy asks for a decision.
    pub reason: String,
    pub requested_at: DateTime<Utc>,
    /// Past this, undecided, it is rejected.
    pub expires_at: Option<DateTime<Utc>>,
    pub decision: Option<Decision>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub approved: bool,
    pub note: Option<String>,
    /// The token that decided, or `timeout`.
    pub by: String,
    pub at: DateTime<Utc>,
}

fn decode(bytes: &[u8]) -> Result<Approval, String> {
    troupe_runtime::codec::decode(bytes).map_err(|e| e.to_string())
}

pub async fn get(store: &Store, id: &str) -> Result<Option<Approval>, String> {
    let found = store.get(LLM_APPROVALS, id).await.map_err(|e| e.to_string())?;
    found.map(|b| decode(&b)).transpose()
}

/// Every approval, oldest first; the undecided ones alone with `pending`. One whose task
/// ended undecided (cancelled, dead, expired) is shown rejected by that end: nothing waits
/// for it any more.
pub async fn list(store: &Store, pending: bool) -> Result<Vec<Approval>, String> {
    let mut all: Vec<Approval> = store
        .view(|v| {
            let mut out = Vec::new();
            v.scan(LLM_APPROVALS, None, |_, bytes| {
                let mut approval = troupe_runtime::codec::decode::<Approval>(bytes)?;
                if approval.decision.is_none() {
                    approval.decision = ended_in(v, &approval.task)?.map(|(state, at)| withdrawn(state, at));
                }
                out.push(approval);
                Ok(true)
            })?;
            Ok(out)
        })
        .await
        .map_err(|e| e.to_string())?;
    if pending {
        all.retain(|a| a.decision.is_none());
    }
    all.sort_by_key(|a| a.requested_at);
    Ok(all)
}

/// The approvals of task `task` that were undecided when it ended, each with the decision
/// its end stands for (none while it is open): what a follower of the decisions learns at
/// the task's end, which writes no decision of its own.
pub async fn withdrawn_by_end(store: &Store, task: &str) -> Result<Vec<Approval>, String> {
    let task = task.to_owned();
    store
        .view(move |v| {
            let Some((state, at)) = ended_in(v, &task)? else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            v.scan_prefix(LLM_APPROVALS, &format!("{task}/"), |_, bytes| {
                let mut approval = troupe_runtime::codec::decode::<Approval>(bytes)?;
                if approval.decision.is_none() {
                    approval.decision = Some(withdrawn(state, at));
                    out.push(approval);
                }
                Ok(true)
            })?;
            Ok(out)
        })
        .await
        .map_err(|e| e.to_string())
}

/// How task `task` ended, and when, if it has (`None`: open, or unknown here).
fn ended_in(v: &View<'_>, task: &str) -> Result<Option<(TaskState, DateTime<Utc>)>, StoreError> {
    let Some(bytes) = v.get(TASK_STATUS, task)? else {
        return Ok(None);
    };
    let status: TaskStatus = troupe_runtime::codec::decode(&bytes)?;
    Ok(status.state.is_terminal().then(|| {
        (
            status.state,
            status.finished_at.unwrap_or_else(troupe_runtime::clock::now),
        )
    }))
}

/// The decision an undecided call of a task that ended stands for (it is never stored: the
/// call is not made).
fn withdrawn(state: TaskState, at: DateTime<Utc>) -> Decision {
    Decision {
        approved: false,
        note: Some(format!("the task ended {} before a decision", state.as_str())),
        by: "task-ended".into(),
        at,
    }
}

/// Why deciding failed.
#[derive(Debug, PartialEq)]
pub enum Refused {
    NotFound(String),
    /// Already decided the other way.
    Decided(String),
    Store(String),
}

/// Decides approval `id` (once: deciding again the same way answers the decision made,
/// the other way is refused).
pub async fn decide(
    store: &Store,
    id: &str,
    approved: bool,
    note: Option<String>,
    by: &str,
) -> Result<Approval, Refused> {
    let mut approval = get(store, id)
        .await
        .map_err(Refused::Store)?
        .ok_or_else(|| Refused::NotFound(format!("no tool call {id} waits for a decision")))?;
    if approval.decision.is_none() {
        let task = approval.task.clone();
        if let Some((state, _)) = store
            .view(move |v| ended_in(v, &task))
            .await
            .map_err(|e| Refused::Store(e.to_string()))?
        {
            return Err(Refused::Decided(format!(
                "task {} ended {} before a decision: nothing waits for tool call {id}",
                approval.task,
                state.as_str()
            )));
        }
    }
    if let Some(made) = &approval.decision {
        return if made.approved == approved {
            Ok(approval)
        } else {
            let verdict = if made.approved { "approved" } else { "rejected" };
            Err(Refused::Decided(format!("tool call {id} was already {verdict}")))
        };
    }
    approval.decision = Some(Decision {
        approved,
        note,
        by: by.to_owned(),
        at: troupe_runtime::clock::now(),
    });
    write(store, &approval, "APPROVAL_DECIDED")
        .await
        .map_err(Refused::Store)?;
    Ok(approval)
}

async fn write(store: &Store, approval: &Approval, kind: &str) -> Result<(), String> {
    let data = json!({
        "approval": approval.id, "tool": approval.tool, "step": approval.step, "call": approval.call,
        "approved": approval.decision.as_ref().map(|d| d.approved),
        "note": approval.decision.as_ref().and_then(|d| d.note.clone()),
    });
    let bytes = troupe_runtime::codec::encode(approval).map_err(|e| e.to_string())?;
    let batch = Batch::new()
        .put(LLM_APPROVALS, approval.id.clone(), bytes)
        .event(NewEvent::new(kind, Some(approval.task.clone()), data));
    store.write(batch).await.map(drop).map_err(|e| e.to_string())
}

/// Commits `asked` unless it was asked before; the approval as recorded. Before the task
/// says it awaits it: a node killed once the task said so finds the call pending when it
/// starts again, and charges the attempt nothing.
pub async fn asked(store: &Store, asked: Approval) -> Result<Approval, String> {
    match get(store, &asked.id).await? {
        Some(known) => Ok(known),
        None => {
            write(store, &asked, "APPROVAL_REQUESTED").await?;
            Ok(asked)
        }
    }
}

/// Waits for the decision on `approval`, recorded ([`asked`]), or its expiry, which
/// rejects it; the decision.
pub async fn decided(store: &Store, approval: Approval) -> Result<Decision, String> {
    let mut live = store.live();
    loop {
        let now = get(store, &approval.id).await?.unwrap_or_else(|| approval.clone());
        if let Some(decision) = now.decision {
            return Ok(decision);
        }
        let left = now
            .expires_at
            .map(|at| (at - troupe_runtime::clock::now()).to_std().unwrap_or(Duration::ZERO));
        if left == Some(Duration::ZERO) {
            let why = Some("no decision before the approval's timeout".to_string());
            return match decide(store, &now.id, false, why, "timeout").await {
                Ok(a) => Ok(a.decision.expect("just decided")),
                // Decided meanwhile: that decision stands.
                Err(Refused::Decided(_)) => Ok(get(store, &now.id)
                    .await?
                    .and_then(|a| a.decision)
                    .ok_or("the approval's decision vanished")?),
                Err(Refused::NotFound(e) | Refused::Store(e)) => Err(e),
            };
        }
        // Until an event about the task (or a lag, after which it is read again).
        let next = async {
            loop {
                match live.recv().await {
                    Ok(e) if e.subject.as_deref() == Some(approval.task.as_str()) => return,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => std::future::pending().await,
                }
            }
        };
        match left {
            Some(left) => {
                let _ = tokio::time::timeout(left, next).await;
            }
            None => next.await,
        }
    }
}

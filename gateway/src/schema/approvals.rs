//! Tool calls of LLM agents that wait for an operator: `approvals`, `approveCall`,
//! `rejectCall` (docs/llm-agents.md).

use async_graphql::{Context, Enum, Object, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use troupe_actors::agent::{Approval, ApprovalRefused};
use troupe_actors::{Api, ApiError};
use troupe_runtime::auth::Role;
use troupe_runtime::events::EventFilter;

use crate::auth::{Caller, RoleGuard};
use crate::error::OrGql;
use crate::schema::Int64;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ApprovalState {
    Pending,
    Approved,
    Rejected,
}

/// A tool call an LLM agent's policy holds until an operator decides.
#[derive(SimpleObject)]
#[graphql(name = "Approval")]
pub struct ApprovalOut {
    /// `<task id>/<step>/<call id>`.
    pub id: ID,
    pub task_id: ID,
    pub agent_id: ID,
    pub step: i32,
    pub call_id: String,
    pub tool: String,
    /// As the model wrote them: JSON text.
    pub arguments: String,
    /// Why the policy holds it.
    pub reason: String,
    pub state: ApprovalState,
    pub requested_at: DateTime<Utc>,
    /// Undecided past this, it is rejected.
    pub expires_at: Option<DateTime<Utc>>,
    /// The operator's note (or the timeout's).
    pub note: Option<String>,
    /// The token id that decided, or `timeout`.
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
}

impl From<Approval> for ApprovalOut {
    fn from(a: Approval) -> Self {
        let state = match &a.decision {
            None => ApprovalState::Pending,
            Some(d) if d.approved => ApprovalState::Approved,
            Some(_) => ApprovalState::Rejected,
        };
        Self {
            id: ID(a.id),
            task_id: ID(a.task),
            agent_id: ID(a.agent),
            step: a.step as i32,
            call_id: a.call,
            tool: a.tool,
            arguments: a.arguments,
            reason: a.reason,
            state,
            requested_at: a.requested_at,
            expires_at: a.expires_at,
            note: a.decision.as_ref().and_then(|d| d.note.clone()),
            decided_by: a.decision.as_ref().map(|d| d.by.clone()),
            decided_at: a.decision.as_ref().map(|d| d.at),
        }
    }
}

#[derive(Default)]
pub struct ApprovalsQuery;

#[Object]
impl ApprovalsQuery {
    /// Tool calls held for an operator, oldest first: the pending ones [default], or all.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn approvals(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = true)] pending: bool,
    ) -> async_graphql::Result<Vec<ApprovalOut>> {
        let api = ctx.data::<Api>()?;
        let all = troupe_actors::agent::llm_approvals(api.store(), pending)
            .await
            .map_err(ApiError::Unavailable)
            .gql()?;
        Ok(all.into_iter().map(ApprovalOut::from).collect())
    }
}

/// The events that end a task: one that ends with a call undecided withdraws it.
const TASK_ENDS: [&str; 6] = [
    "TASK_SUCCEEDED",
    "TASK_FAILED",
    "TASK_CANCELLED",
    "TASK_EXPIRED",
    "TASK_DEPENDENCY_FAILED",
    "TASK_DEAD",
];

#[derive(Default)]
pub struct ApprovalsSubscription;

#[Subscription]
impl ApprovalsSubscription {
    /// Each approval as it is requested and as it is decided (by an operator, its timeout,
    /// or the end of its task before a decision: REJECTED by `task-ended`), as this node
    /// applies it: from now on, or from the events after `after` (an event `seq`, such as
    /// `node { lastSeq }`), each as it was then.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn approval_updates(
        &self,
        ctx: &Context<'_>,
        after: Option<Int64>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<ApprovalOut>>> {
        let api = ctx.data::<Api>()?.clone();
        let after = match crate::schema::events::cursor(after)? {
            Some(after) => after,
            None => api.last_seq().await.gql()?,
        };
        let filter = EventFilter {
            kinds: Some(
                ["APPROVAL_REQUESTED", "APPROVAL_DECIDED"]
                    .into_iter()
                    .chain(TASK_ENDS)
                    .map(String::from)
                    .collect(),
            ),
            subject: None,
        };
        let store = api.store().clone();
        let updates = api.subscribe(after, filter).then(move |event| {
            let store = store.clone();
            async move {
                let event = match event {
                    Err(e) => return vec![Err(crate::error::api(e.into()))],
                    Ok(event) => event,
                };
                let unavailable = |e| vec![Err(crate::error::api(ApiError::Unavailable(e)))];
                if TASK_ENDS.contains(&event.kind.as_str()) {
                    // A task that ended with a call undecided: nothing waits for it now.
                    let Some(task) = event.subject.as_deref() else {
                        return Vec::new();
                    };
                    return match troupe_actors::agent::llm_approvals_withdrawn(&store, task).await {
                        Ok(withdrawn) => withdrawn.into_iter().map(|a| Ok(a.into())).collect(),
                        Err(e) => unavailable(e),
                    };
                }
                let Some(id) = event.data.get("approval").and_then(|v| v.as_str()) else {
                    return Vec::new();
                };
                match troupe_actors::agent::llm_approval(&store, id).await {
                    // As it was at that event: a decision is never undone, so only the
                    // request's is older than the record.
                    Ok(found) => found
                        .map(|mut a| {
                            if event.kind == "APPROVAL_REQUESTED" {
                                a.decision = None;
                            }
                            Ok(a.into())
                        })
                        .into_iter()
                        .collect(),
                    Err(e) => unavailable(e),
                }
            }
        });
        Ok(updates.flat_map(futures::stream::iter))
    }
}

#[derive(Default)]
pub struct ApprovalsMutation;

async fn decide(ctx: &Context<'_>, id: ID, approved: bool, note: Option<String>) -> async_graphql::Result<ApprovalOut> {
    let api = ctx.data::<Api>()?;
    let by = ctx.data::<Caller>()?.token.clone();
    let decided = troupe_actors::agent::decide_approval(api.store(), &id, approved, note, &by)
        .await
        .map_err(|e| match e {
            ApprovalRefused::NotFound(m) => ApiError::NotFound(m),
            ApprovalRefused::Decided(m) => ApiError::Conflict(m),
            ApprovalRefused::Store(m) => ApiError::Unavailable(m),
        })
        .gql()?;
    Ok(decided.into())
}

#[Object]
impl ApprovalsMutation {
    /// Lets a held tool call run; the loop goes on. Approving it again answers the same;
    /// a call already rejected is CONFLICT.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn approve_call(
        &self,
        ctx: &Context<'_>,
        id: ID,
        note: Option<String>,
    ) -> async_graphql::Result<ApprovalOut> {
        decide(ctx, id, true, note).await
    }

    /// Refuses a held tool call: the model is given the refusal, with `reason`, as the
    /// call's (error) result, and the loop goes on.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn reject_call(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: Option<String>,
    ) -> async_graphql::Result<ApprovalOut> {
        decide(ctx, id, false, reason).await
    }
}

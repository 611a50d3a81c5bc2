//! What an LLM task shows: its committed steps (`transcript`) and its reply as it streams
//! (`taskOutput`).

use async_graphql::{Enum, ID};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use troupe_actors::Api;

use crate::schema::updates::Follow;
use crate::schema::Int64;

/// One committed step of an LLM task.
#[derive(async_graphql::SimpleObject)]
pub struct TaskStep {
    /// The model call it belongs to: 1, 2, …
    pub step: i32,
    pub kind: TaskStepKind,
    /// A reply's text (may be empty when it only calls tools).
    pub text: Option<String>,
    /// The tool calls a reply asked for.
    pub tool_calls: Vec<ToolCallOut>,
    /// A result's call id.
    pub call_id: Option<String>,
    /// A result's content, as the model was given it.
    pub content: Option<String>,
    /// Whether a result is an error (a failed tool, bad arguments, an unknown tool).
    pub is_error: bool,
    pub input_tokens: Int64,
    pub output_tokens: Int64,
    /// At the node's price table when the reply was committed.
    pub cost_usd: f64,
    pub model: Option<String>,
    pub finish_reason: Option<String>,
    pub latency_ms: Option<Int64>,
    /// When it was complete (the reply read, the tool answered); its commit follows.
    pub at: DateTime<Utc>,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum TaskStepKind {
    /// What the model answered.
    Reply,
    /// A tool call's result.
    ToolResult,
}

/// A tool call a model asked for.
#[derive(async_graphql::SimpleObject)]
#[graphql(name = "ToolCall")]
pub struct ToolCallOut {
    pub id: String,
    pub name: String,
    /// As the model wrote them: JSON text, perhaps not valid.
    pub arguments: String,
}

impl TaskStep {
    /// A reply or a tool result; none for the records of the tools offered and the context.
    pub(super) fn of(step: troupe_actors::agent::LlmStep) -> Option<Self> {
        use troupe_actors::agent::LlmStep as R;
        Some(match step {
            R::Reply {
                step,
                text,
                calls,
                tokens,
                cost_usd,
                model,
                finish,
                latency_ms,
                at,
            } => Self {
                step: step as i32,
                kind: TaskStepKind::Reply,
                text: Some(text),
                tool_calls: calls
                    .into_iter()
                    .map(|c| ToolCallOut {
                        id: c.id,
                        name: c.name,
                        arguments: c.arguments,
                    })
                    .collect(),
                call_id: None,
                content: None,
                is_error: false,
                input_tokens: tokens.input.into(),
                output_tokens: tokens.output.into(),
                cost_usd,
                model: Some(model),
                finish_reason: finish,
                latency_ms: Some(latency_ms.into()),
                at,
            },
            R::Result {
                step,
                call,
                content,
                error,
                at,
            } => Self {
                step: step as i32,
                kind: TaskStepKind::ToolResult,
                text: None,
                tool_calls: Vec::new(),
                call_id: Some(call),
                content: Some(content),
                is_error: error,
                input_tokens: 0u64.into(),
                output_tokens: 0u64.into(),
                cost_usd: 0.0,
                model: None,
                finish_reason: None,
                latency_ms: None,
                at,
            },
            R::Offered { .. } | R::Context { .. } => return None,
        })
    }
}

/// A piece of an LLM task's model reply, as it streams.
#[derive(async_graphql::SimpleObject)]
pub struct TaskOutput {
    pub task_id: ID,
    /// The model call it belongs to: 1, 2, … (0 for the first item, which says the stream is
    /// live).
    pub step: i32,
    pub text: String,
}

/// The stream of `taskOutput(id)`: first an item with step 0 once it is live, then each
/// piece of the task's replies as they stream on this node, until the task ends.
pub async fn output(api: &Api, id: ID) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<TaskOutput>>> {
    // Listening before the task is first read: no piece falls between the two.
    let pieces = tokio_stream::wrappers::BroadcastStream::new(api.agents().model_output());
    let follow = Follow {
        noun: "task",
        read: |api, id| Box::pin(async move { api.tasks().get(&id).await }),
        changed: |sent, now| sent.status.state != now.status.state,
        last: |task| task.status.state.is_terminal(),
        gone_is_error: false,
        show: |task| task.status.state.is_terminal(),
    };
    let ended = crate::schema::updates::follow(api, &id, follow)
        .await?
        .filter_map(|r| futures::future::ready(r.map_or(Some(()), |over| over.then_some(()))))
        .chain(futures::stream::once(futures::future::ready(())))
        .map(|()| None);
    let task = id.to_string();
    let pieces = pieces.filter_map(move |piece| {
        futures::future::ready(match piece {
            Ok(piece) if piece.task == task => Some(Some(TaskOutput {
                task_id: ID(piece.task.clone()),
                step: piece.step as i32,
                text: piece.text.clone(),
            })),
            // Missed pieces (a slow reader): the committed step has them all.
            _ => None,
        })
    });
    let live = TaskOutput {
        task_id: id.clone(),
        step: 0,
        text: String::new(),
    };
    Ok(futures::stream::once(futures::future::ready(Ok(live))).chain(
        // Pieces first: those of the last reply were sent before its step was committed,
        // so they are all read before the end is.
        futures::stream::select_with_strategy(pieces, ended, |_: &mut ()| futures::stream::PollNext::Left)
            .take_while(|item| futures::future::ready(item.is_some()))
            .filter_map(|item| futures::future::ready(item.map(Ok))),
    ))
}

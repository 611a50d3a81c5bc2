//! The two wire dialects: a request made from the task's payload and the steps committed so
//! far, and a reply (whole, or a server-sent event stream) read into one [`Turn`].
//!
//! - OpenAI-compatible chat completions: `tools: [{type: function, function: {…}}]`; the
//!   reply's `message.tool_calls` (streamed as fragments merged by `index`); each result
//!   goes back as a `{role: tool, tool_call_id}` message.
//! - Anthropic's Messages API: a top-level `system`, `tools: [{name, description,
//!   input_schema}]`; `tool_use` blocks (streamed as `input_json_delta` fragments); the
//!   results go back as `tool_result` blocks of one user message.
//!
//! Both APIs refuse a conversation in which a call has no result: the loop commits one for
//! every call before it asks the model again.

use serde_json::{json, Value};

mod request;

use super::journal::{Call, Tokens};
use crate::agent::backend::http::excerpt;
use crate::agent::spec::{Dialect, LlmBackend};
pub use request::request;

/// A tool as the model is offered it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tool {
    pub name: String,
    pub description: String,
    /// A JSON Schema of its arguments (an object).
    #[serde(with = "troupe_runtime::codec::json_text")]
    pub parameters: Value,
    /// Where an MCP server's tool comes from; none for Troupe's own.
    pub mcp: Option<McpTool>,
}

/// An MCP server's tool: the `mcp` agent serving it and its name there.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct McpTool {
    pub agent: String,
    pub tool: String,
}

/// What the model answered to one call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Turn {
    pub text: String,
    pub calls: Vec<Call>,
    pub tokens: Tokens,
    pub model: Option<String>,
    pub finish: Option<String>,
}

/// The conversation a task's payload opens with: a system prompt (the agent's, then any the
/// payload gives) and the payload's messages.
pub struct Opening {
    system: Option<String>,
    /// The session's earlier exchanges, before the payload's messages.
    history: Vec<(String, String)>,
    messages: Vec<(String, String)>,
}

/// What a task begins with besides its payload (see [`super::sessions`]).
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub history: Vec<(String, String)>,
    /// Swarm memory keys and their values (JSON text), for the system prompt.
    pub memory: Vec<(String, String)>,
}

impl Opening {
    /// The payload's own messages (not the system prompt's): what a session keeps of it.
    pub fn own(&self) -> impl Iterator<Item = &(String, String)> {
        self.messages.iter().filter(|(role, _)| role != "system")
    }
}

/// Reads the task's payload: a string, `{"prompt": …}` or `{"messages": [{role, content}]}`,
/// after `context`.
pub fn opening(spec: &LlmBackend, payload: &Value, context: Context) -> Result<Opening, String> {
    let shape = "an llm task's payload must be a string, {\"prompt\": ...} or {\"messages\": [...]}";
    let mut messages = Vec::new();
    match payload {
        Value::String(text) => messages.push(("user".to_owned(), text.clone())),
        Value::Object(o) => match (o.get("messages"), o.get("prompt")) {
            (Some(Value::Array(list)), _) => {
                for m in list {
                    match (
                        m.get("role").and_then(Value::as_str),
                        m.get("content").and_then(Value::as_str),
                    ) {
                        (Some(role @ ("system" | "user" | "assistant")), Some(content)) => {
                            messages.push((role.to_owned(), content.to_owned()))
                        }
                        (Some(role), Some(_)) => {
                            return Err(format!("a message's role is system, user or assistant, not {role:?}"))
                        }
                        _ => return Err("each message needs a string role and a string content".into()),
                    }
                }
            }
            (None, Some(Value::String(text))) => messages.push(("user".to_owned(), text.clone())),
            _ => return Err(shape.into()),
        },
        _ => return Err(shape.into()),
    }
    let mut system = spec.system_prompt.clone();
    if !context.memory.is_empty() {
        let mut memory = String::from("Swarm memory:");
        for (key, value) in &context.memory {
            memory.push_str(&format!("\n{key}: {value}"));
        }
        system = Some(match system {
            Some(s) => format!("{s}\n\n{memory}"),
            None => memory,
        });
    }
    Ok(Opening {
        system,
        history: context.history,
        messages,
    })
}

/// Reads a reply of `dialect`, whole or streamed.
pub fn parse(dialect: Dialect, bytes: &[u8], stream: bool) -> Result<Turn, String> {
    match (dialect, stream) {
        (Dialect::OpenAi, false) => openai_reply(bytes),
        (Dialect::OpenAi, true) => openai_stream(bytes),
        (Dialect::Anthropic, false) => anthropic_reply(bytes),
        (Dialect::Anthropic, true) => anthropic_stream(bytes),
    }
}

fn json_of(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("the model endpoint answered something not JSON: {e}"))
}

fn text_of(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_owned)
}

fn openai_tokens(usage: Option<&Value>) -> Tokens {
    let n = |k: &str| usage.and_then(|u| u.get(k)).and_then(Value::as_u64).unwrap_or(0);
    Tokens {
        input: n("prompt_tokens"),
        output: n("completion_tokens"),
    }
}

fn openai_reply(bytes: &[u8]) -> Result<Turn, String> {
    let reply = json_of(bytes)?;
    let choice = reply
        .pointer("/choices/0")
        .ok_or_else(|| format!("the answer has no choices: {}", excerpt(bytes)))?;
    let mut calls = Vec::new();
    for c in choice
        .pointer("/message/tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        calls.push(Call {
            id: text_of(c.get("id")).ok_or("a tool call has no id")?,
            name: text_of(c.pointer("/function/name")).ok_or("a tool call has no name")?,
            arguments: text_of(c.pointer("/function/arguments")).unwrap_or_default(),
        });
    }
    Ok(Turn {
        text: text_of(choice.pointer("/message/content")).unwrap_or_default(),
        calls,
        tokens: openai_tokens(reply.get("usage")),
        model: text_of(reply.get("model")),
        finish: text_of(choice.get("finish_reason")),
    })
}

/// The `data:` payloads of a server-sent event stream, up to `[DONE]`. A body with none is
/// not a reply: nothing the model said could be read from it.
fn events(bytes: &[u8]) -> Result<Vec<Value>, String> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:").map(str::trim) else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        out.push(serde_json::from_str(data).map_err(|e| format!("a stream chunk is not JSON: {e}"))?);
    }
    if out.is_empty() {
        return Err(format!(
            "the model endpoint answered a streamed call with no server-sent events: {}",
            excerpt(bytes)
        ));
    }
    Ok(out)
}

fn openai_stream(bytes: &[u8]) -> Result<Turn, String> {
    let mut turn = Turn::default();
    // Fragments of each call by its index: id and name come first, arguments in pieces.
    let mut calls: Vec<(u64, Call)> = Vec::new();
    for chunk in events(bytes)? {
        if let Some(piece) = chunk.pointer("/choices/0/delta/content").and_then(Value::as_str) {
            turn.text.push_str(piece);
        }
        for fragment in chunk
            .pointer("/choices/0/delta/tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = fragment.get("index").and_then(Value::as_u64).unwrap_or(0);
            let at = match calls.iter().position(|(i, _)| *i == index) {
                Some(at) => at,
                None => {
                    calls.push((
                        index,
                        Call {
                            id: String::new(),
                            name: String::new(),
                            arguments: String::new(),
                        },
                    ));
                    calls.len() - 1
                }
            };
            let call = &mut calls[at].1;
            if let Some(id) = fragment.get("id").and_then(Value::as_str) {
                call.id = id.to_owned();
            }
            if let Some(name) = fragment.pointer("/function/name").and_then(Value::as_str) {
                call.name.push_str(name);
            }
            if let Some(args) = fragment.pointer("/function/arguments").and_then(Value::as_str) {
                call.arguments.push_str(args);
            }
        }
        if let Some(f) = chunk.pointer("/choices/0/finish_reason").and_then(Value::as_str) {
            turn.finish = Some(f.to_owned());
        }
        if chunk.get("usage").is_some_and(Value::is_object) {
            turn.tokens = openai_tokens(chunk.get("usage"));
        }
        if turn.model.is_none() {
            turn.model = text_of(chunk.get("model"));
        }
    }
    calls.sort_by_key(|(i, _)| *i);
    for (_, call) in calls {
        if call.id.is_empty() || call.name.is_empty() {
            return Err("a streamed tool call came without its id or name".into());
        }
        turn.calls.push(call);
    }
    Ok(turn)
}

fn anthropic_tokens(usage: Option<&Value>) -> (Option<u64>, Option<u64>) {
    let n = |k: &str| usage.and_then(|u| u.get(k)).and_then(Value::as_u64);
    // Cache reads and writes are input the model read too.
    let input = n("input_tokens")
        .map(|i| i + n("cache_creation_input_tokens").unwrap_or(0) + n("cache_read_input_tokens").unwrap_or(0));
    (input, n("output_tokens"))
}

fn anthropic_reply(bytes: &[u8]) -> Result<Turn, String> {
    let reply = json_of(bytes)?;
    if reply.get("type").and_then(Value::as_str) == Some("error") {
        return Err(format!("the model endpoint answered an error: {}", excerpt(bytes)));
    }
    let mut turn = Turn {
        model: text_of(reply.get("model")),
        finish: text_of(reply.get("stop_reason")),
        ..Turn::default()
    };
    let (input, output) = anthropic_tokens(reply.get("usage"));
    turn.tokens = Tokens {
        input: input.unwrap_or(0),
        output: output.unwrap_or(0),
    };
    for block in reply.get("content").and_then(Value::as_array).into_iter().flatten() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => turn
                .text
                .push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => turn.calls.push(Call {
                id: text_of(block.get("id")).ok_or("a tool_use block has no id")?,
                name: text_of(block.get("name")).ok_or("a tool_use block has no name")?,
                arguments: block.get("input").cloned().unwrap_or_else(|| json!({})).to_string(),
            }),
            _ => {}
        }
    }
    Ok(turn)
}

fn anthropic_stream(bytes: &[u8]) -> Result<Turn, String> {
    let mut turn = Turn::default();
    // Blocks by their index: a text, or a tool_use whose input comes in JSON fragments.
    let mut blocks: Vec<(u64, Option<Call>)> = Vec::new();
    for event in events(bytes)? {
        let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
        match event.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                turn.model = text_of(event.pointer("/message/model"));
                let (input, output) = anthropic_tokens(event.pointer("/message/usage"));
                turn.tokens.input = input.unwrap_or(0);
                turn.tokens.output = output.unwrap_or(0);
            }
            Some("content_block_start") => {
                let block = event.get("content_block");
                let call = match block.and_then(|b| b.get("type")).and_then(Value::as_str) {
                    Some("tool_use") => Some(Call {
                        id: text_of(block.and_then(|b| b.get("id"))).ok_or("a tool_use block has no id")?,
                        name: text_of(block.and_then(|b| b.get("name"))).ok_or("a tool_use block has no name")?,
                        arguments: String::new(),
                    }),
                    _ => {
                        if let Some(text) = block.and_then(|b| b.get("text")).and_then(Value::as_str) {
                            turn.text.push_str(text);
                        }
                        None
                    }
                };
                blocks.push((index, call));
            }
            Some("content_block_delta") => {
                let delta = event.get("delta");
                match delta.and_then(|d| d.get("type")).and_then(Value::as_str) {
                    Some("text_delta") => {
                        turn.text
                            .push_str(delta.and_then(|d| d.get("text")).and_then(Value::as_str).unwrap_or(""));
                    }
                    Some("input_json_delta") => {
                        let piece = delta
                            .and_then(|d| d.get("partial_json"))
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        if let Some((_, Some(call))) = blocks.iter_mut().find(|(i, _)| *i == index) {
                            call.arguments.push_str(piece);
                        }
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                if let Some(reason) = event.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    turn.finish = Some(reason.to_owned());
                }
                // Cumulative: the last one holds the totals.
                let (input, output) = anthropic_tokens(event.get("usage"));
                if let Some(input) = input {
                    turn.tokens.input = input;
                }
                if let Some(output) = output {
                    turn.tokens.output = output;
                }
            }
            Some("error") => {
                let why = event
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message");
                return Err(format!("the model's stream broke off: {why}"));
            }
            _ => {}
        }
    }
    blocks.sort_by_key(|(i, _)| *i);
    for (_, call) in blocks {
        if let Some(mut call) = call {
            if call.arguments.trim().is_empty() {
                call.arguments = "{}".into();
            }
            turn.calls.push(call);
        }
    }
    Ok(turn)
}

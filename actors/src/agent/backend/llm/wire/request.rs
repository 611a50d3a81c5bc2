//! A model call's body, in either dialect, written straight from the task's records by
//! borrowed serde structs: a loop sends its whole conversation on every call, and a tree of
//! JSON values built for it, then dropped, was a tenth of a busy node's CPU.

use serde::ser::SerializeMap;
use serde::Serialize;
use serde_json::{json, Value};

use super::{Opening, Tool};
use crate::agent::backend::llm::journal::Record;
use crate::agent::spec::{Dialect, LlmBackend};

/// The path (after the base URL) and body (JSON) of the next model call.
pub fn request(spec: &LlmBackend, opening: &Opening, steps: &[Record], tools: &[Tool]) -> (&'static str, Vec<u8>) {
    let (path, body) = match spec.dialect {
        Dialect::OpenAi => {
            let body = Body {
                spec,
                system: None,
                messages: openai_messages(opening, steps),
                stream_options: spec.stream.then_some(StreamOptions { include_usage: true }),
                tools: tools.iter().map(ToolOffer::OpenAi).collect(),
            };
            ("/v1/chat/completions", serde_json::to_vec(&body))
        }
        Dialect::Anthropic => {
            let (system, messages) = anthropic_messages(opening, steps);
            let body = Body {
                spec,
                system,
                messages,
                stream_options: None,
                tools: tools.iter().map(ToolOffer::Anthropic).collect(),
            };
            ("/v1/messages", serde_json::to_vec(&body))
        }
    };
    (path, body.expect("a request body is JSON"))
}

/// A model call's body, in either dialect.
struct Body<'a, M> {
    spec: &'a LlmBackend,
    /// Anthropic's top-level system prompt.
    system: Option<String>,
    messages: Vec<M>,
    stream_options: Option<StreamOptions>,
    tools: Vec<ToolOffer<'a>>,
}

impl<M: Serialize> Serialize for Body<'_, M> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("model", &self.spec.model)?;
        if let Some(t) = self.spec.temperature {
            map.serialize_entry("temperature", &t)?;
        }
        if let Some(m) = self.spec.max_tokens {
            map.serialize_entry("max_tokens", &m)?;
        }
        if self.spec.stream {
            map.serialize_entry("stream", &true)?;
        }
        if let Some(system) = &self.system {
            map.serialize_entry("system", system)?;
        }
        map.serialize_entry("messages", &self.messages)?;
        if let Some(options) = &self.stream_options {
            map.serialize_entry("stream_options", options)?;
        }
        if !self.tools.is_empty() {
            map.serialize_entry("tools", &self.tools)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// A tool as a dialect offers it.
enum ToolOffer<'a> {
    OpenAi(&'a Tool),
    Anthropic(&'a Tool),
}

impl Serialize for ToolOffer<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Function<'a> {
            name: &'a str,
            description: &'a str,
            parameters: &'a Value,
        }
        #[derive(Serialize)]
        struct OpenAi<'a> {
            r#type: &'static str,
            function: Function<'a>,
        }
        #[derive(Serialize)]
        struct Anthropic<'a> {
            name: &'a str,
            description: &'a str,
            input_schema: &'a Value,
        }
        match self {
            ToolOffer::OpenAi(t) => OpenAi {
                r#type: "function",
                function: Function {
                    name: &t.name,
                    description: &t.description,
                    parameters: &t.parameters,
                },
            }
            .serialize(s),
            ToolOffer::Anthropic(t) => Anthropic {
                name: &t.name,
                description: &t.description,
                input_schema: &t.parameters,
            }
            .serialize(s),
        }
    }
}

/// A chat completions message.
#[derive(Serialize)]
#[serde(untagged)]
enum OpenAiMessage<'a> {
    Said {
        role: &'a str,
        content: &'a str,
    },
    /// A reply: its text (null when it only calls tools) and its calls.
    Replied {
        role: &'static str,
        content: Option<&'a str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<OpenAiCall<'a>>,
    },
    Result {
        role: &'static str,
        tool_call_id: &'a str,
        content: &'a str,
    },
}

#[derive(Serialize)]
struct OpenAiCall<'a> {
    id: &'a str,
    r#type: &'static str,
    function: OpenAiFunction<'a>,
}

#[derive(Serialize)]
struct OpenAiFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

fn openai_messages<'a>(opening: &'a Opening, steps: &'a [Record]) -> Vec<OpenAiMessage<'a>> {
    let mut out = Vec::with_capacity(1 + opening.history.len() + opening.messages.len() + steps.len());
    if let Some(system) = &opening.system {
        out.push(OpenAiMessage::Said {
            role: "system",
            content: system,
        });
    }
    for (role, content) in opening.history.iter().chain(&opening.messages) {
        out.push(OpenAiMessage::Said { role, content });
    }
    for record in steps {
        match record {
            Record::Reply { text, calls, .. } => out.push(OpenAiMessage::Replied {
                role: "assistant",
                content: (!text.is_empty() || calls.is_empty()).then_some(text.as_str()),
                tool_calls: calls
                    .iter()
                    .map(|c| OpenAiCall {
                        id: &c.id,
                        r#type: "function",
                        function: OpenAiFunction {
                            name: &c.name,
                            arguments: &c.arguments,
                        },
                    })
                    .collect(),
            }),
            Record::Result { call, content, .. } => out.push(OpenAiMessage::Result {
                role: "tool",
                tool_call_id: call,
                content,
            }),
            Record::Offered { .. } | Record::Context { .. } => {}
        }
    }
    out
}

/// A Messages API message: a string, or content blocks.
#[derive(Serialize)]
struct AnthropicMessage<'a> {
    role: &'a str,
    content: AnthropicContent<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum AnthropicContent<'a> {
    Text(&'a str),
    Blocks(Vec<Block<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: &'a str,
        is_error: bool,
    },
}

/// The system prompt (the agent's and the payload's `system` messages) and the messages.
fn anthropic_messages<'a>(opening: &'a Opening, steps: &'a [Record]) -> (Option<String>, Vec<AnthropicMessage<'a>>) {
    let mut system: Vec<&str> = opening.system.iter().map(String::as_str).collect();
    let mut out: Vec<AnthropicMessage<'a>> = Vec::new();
    for (role, content) in opening.history.iter().chain(&opening.messages) {
        if role == "system" {
            system.push(content);
        } else {
            out.push(AnthropicMessage {
                role,
                content: AnthropicContent::Text(content),
            });
        }
    }
    for record in steps {
        match record {
            Record::Reply { text, calls, .. } => {
                let mut blocks = Vec::with_capacity(1 + calls.len());
                if !text.is_empty() {
                    blocks.push(Block::Text { text });
                }
                for c in calls {
                    // The API takes an object; what the model wrote is given back as it was
                    // read, or as an empty object when it was not one (its result says why).
                    let input = serde_json::from_str::<Value>(&c.arguments)
                        .ok()
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({}));
                    blocks.push(Block::ToolUse {
                        id: &c.id,
                        name: &c.name,
                        input,
                    });
                }
                out.push(AnthropicMessage {
                    role: "assistant",
                    content: AnthropicContent::Blocks(blocks),
                });
            }
            Record::Result {
                call, content, error, ..
            } => {
                let block = Block::ToolResult {
                    tool_use_id: call,
                    content,
                    is_error: *error,
                };
                // The results of one reply's calls go in one user message.
                match out.last_mut() {
                    Some(AnthropicMessage {
                        role: "user",
                        content: AnthropicContent::Blocks(blocks),
                    }) if blocks.iter().all(|b| matches!(b, Block::ToolResult { .. })) => blocks.push(block),
                    _ => out.push(AnthropicMessage {
                        role: "user",
                        content: AnthropicContent::Blocks(vec![block]),
                    }),
                }
            }
            Record::Offered { .. } | Record::Context { .. } => {}
        }
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    (system, out)
}

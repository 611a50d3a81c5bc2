//! Troupe's own tools, offered to a model when the agent's `tools` patterns name them, and
//! carried by the node as the agent's errands (as a process agent's lines are):
//!
//! | tool | what it does | run again on a resume |
//! |------|--------------|------------------------|
//! | `troupe_submit_task` | submits a task to a capability and waits for its result | never: the call's key is the submit's idempotency key |
//! | `troupe_send_message` | sends a message to an agent and waits for its reply | at least once |
//! | `troupe_memory_get` | reads a key of the agent's swarm memory (the loop reads it from the node's replica itself) | (a read) |
//! | `troupe_memory_set` | writes one, compare-and-set with `expectVersion` | a compare-and-set at most once (the second finds the version moved) |
//!
//! A tool's failure reaches the model as an error result; it never fails the task. A reply
//! whose calls all only read (see [`only_reads`]) is committed with their results, in one
//! write; any other reply is committed before its calls run.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Value};
use troupe_runtime::store::Store;

use super::journal::Call;
use super::wire::{McpTool, Tool};
use crate::agent::backend::{Errand, ErrandKind, Link, Signal};
use crate::agent::protocol::{LinePriority, MemoryOp, Send};

/// Carries an errand of the agent to its node and waits for the answer.
pub type Errands = Arc<dyn Fn(ErrandKind) -> BoxFuture<'static, Result<Value, String>> + std::marker::Send + Sync>;

/// Errands carried by the agent actor behind `link` to the node's courier.
pub fn via(link: Link) -> Errands {
    Arc::new(move |what| {
        let (answer, answered) = tokio::sync::oneshot::channel();
        link.signal(Signal::Errand(Errand { what, answer }));
        Box::pin(async move {
            answered
                .await
                .unwrap_or_else(|_| Err("the node did not carry the call (the agent stopped?)".into()))
        })
    })
}

/// A tool call's wait when the call gives none: 5 minutes, and never past the attempt's end.
const DEFAULT_WAIT_MS: u64 = 300_000;

/// Every tool of Troupe's own.
pub fn catalogue() -> Vec<Tool> {
    vec![
        Tool {
            name: "troupe_submit_task".into(),
            description: "Submits a task to the agents with a capability and waits for its result.".into(),
            mcp: None,
            parameters: json!({
                "type": "object",
                "properties": {
                    "capability": { "type": "string", "description": "The capability an agent must have." },
                    "payload": { "description": "The task's input, any JSON." },
                    "timeoutMs": { "type": "integer", "description": "How long to wait for the result." }
                },
                "required": ["capability"]
            }),
        },
        Tool {
            name: "troupe_send_message".into(),
            description: "Sends a message to an agent (by its id) and waits for its reply.".into(),
            mcp: None,
            parameters: json!({
                "type": "object",
                "properties": {
                    "to": { "type": "string" },
                    "payload": { "description": "The message, any JSON." },
                    "timeoutMs": { "type": "integer" }
                },
                "required": ["to"]
            }),
        },
        Tool {
            name: "troupe_memory_get".into(),
            description: "Reads a key of the swarm memory of the swarm this agent belongs to.".into(),
            mcp: None,
            parameters: json!({
                "type": "object",
                "properties": { "key": { "type": "string" } },
                "required": ["key"]
            }),
        },
        Tool {
            name: "troupe_memory_set".into(),
            description: "Writes a key of this agent's swarm memory; with expectVersion, only if the key is at that version (compare-and-set).".into(),
            mcp: None,
            parameters: json!({
                "type": "object",
                "properties": {
                    "key": { "type": "string" },
                    "value": { "description": "Any JSON." },
                    "expectVersion": { "type": "integer", "description": "0: the key must not exist yet." }
                },
                "required": ["key", "value"]
            }),
        },
    ]
}

/// The tools whose names one of `patterns` matches.
pub fn offered(patterns: &[String]) -> Vec<Tool> {
    catalogue()
        .into_iter()
        .filter(|t| patterns.iter().any(|p| glob(p, &t.name)))
        .collect()
}

/// The first of `patterns` that no tool the agent can be offered could match: none of
/// Troupe's own, and no `<server>__<tool>` of the mcp agents named `servers`. What a server
/// offers is known only when a task lists it, so a pattern whose fixed start fits a
/// server's `<server>__` is taken.
pub fn matching_nothing<'a>(patterns: &'a [String], servers: &[String]) -> Option<&'a String> {
    let own = catalogue();
    patterns.iter().find(|p| {
        let fixed: String = p.chars().take_while(|c| *c != '*' && *c != '?').collect();
        let of_server = |server: &String| {
            let prefix = model_name(&format!("{server}__"));
            fixed.starts_with(&prefix) || prefix.starts_with(&fixed)
        };
        !own.iter().any(|t| glob(p, &t.name)) && !servers.iter().any(of_server)
    })
}

/// Whether `name` matches `pattern`, where `*` is any run of characters and `?` any one.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // The classic two-pointer match, going back to the last `*` on a mismatch.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// The tools of the `mcp` agents `servers` (ids), as the model is offered them: named
/// `<server name>__<tool>`, made to fit the model APIs' `^[a-zA-Z0-9_-]{1,64}$`, those one
/// of `patterns` matches. Asked of each agent with a message, wherever it runs.
pub async fn of_servers(errands: &Errands, servers: &[String], patterns: &[String]) -> Result<Vec<Tool>, String> {
    let mut out: Vec<Tool> = Vec::new();
    for agent in servers {
        let listed = errands(ErrandKind::Send(Send {
            id: format!("tools-{agent}"),
            to: agent.clone(),
            payload: json!({ "op": "tools" }),
            priority: LinePriority::Normal,
            timeout_ms: Some(30_000),
        }))
        .await
        .map_err(|e| format!("the tools of mcp agent {agent} could not be listed: {e}"))?;
        let server = listed.get("server").and_then(Value::as_str).unwrap_or(agent);
        let Some(tools) = listed.get("tools").and_then(Value::as_array) else {
            return Err(format!(
                "agent {agent} offers no tools: it answered the tools request with {listed} (is it an mcp agent?)"
            ));
        };
        for t in tools {
            let Some(tool) = t.get("name").and_then(Value::as_str) else {
                continue;
            };
            let mut name = model_name(&format!("{server}__{tool}"));
            if out.iter().any(|o| o.name == name) {
                name = model_name(&format!("{server}__{tool}__{}", short_hash(&format!("{agent}/{tool}"))));
            }
            if !patterns.iter().any(|p| glob(p, &name)) {
                continue;
            }
            out.push(Tool {
                name,
                description: t
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                parameters: t
                    .get("inputSchema")
                    .cloned()
                    .unwrap_or_else(|| json!({ "type": "object" })),
                mcp: Some(McpTool {
                    agent: agent.clone(),
                    tool: tool.to_owned(),
                }),
            });
        }
    }
    Ok(out)
}

/// `name` with every character the model APIs refuse made `_`, and cut to 64 with a hash of
/// the whole when longer.
pub fn model_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        return "tool".into();
    }
    if clean.len() <= 64 {
        return clean;
    }
    format!("{}_{}", &clean[..55], short_hash(name))
}

fn short_hash(text: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `call` (its key is `key`) with what is left of the attempt, `left`: the content the
/// model is given, and whether it is an error.
pub async fn run(errands: &Errands, offered: &[Tool], call: &Call, key: String, left: Duration) -> (String, bool) {
    let mcp = offered.iter().find(|t| t.name == call.name).and_then(|t| t.mcp.clone());
    match (errand(offered, call, key, left), mcp) {
        (Err(why), _) => (why, true),
        (Ok(what), Some(_)) => match errands(what).await {
            // The server's own answer: its content, and whether it is an error.
            Ok(answer) => (
                answer
                    .get("content")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                answer.get("isError").and_then(Value::as_bool).unwrap_or(false),
            ),
            Err(why) => (why, true),
        },
        (Ok(what), None) => match errands(what).await {
            Ok(Value::String(s)) => (s, false),
            Ok(other) => (other.to_string(), false),
            Err(why) => (why, true),
        },
    }
}

/// The key a well-formed `troupe_memory_get` call reads, if `call` is one.
pub fn memory_read(offered: &[Tool], call: &Call) -> Option<String> {
    match errand(offered, call, String::new(), Duration::ZERO) {
        Ok(ErrandKind::Memory(MemoryOp::Get { key })) => Some(key),
        _ => None,
    }
}

/// Reads `key` of `swarm`'s memory from this node's replica, where the node's courier would
/// read it for the agent: the entry, `null` for no key, or the error with its code.
pub async fn read_memory(store: &Store, swarm: &str, key: &str) -> (String, bool) {
    match crate::swarm::memory::get(store, swarm, key).await {
        Ok(entry) => (entry.map_or(Value::Null, |e| e.to_json()).to_string(), false),
        Err(e) => (format!("{}: {e}", e.code()), true),
    }
}

/// Whether `call` changes nothing where it runs: a read of swarm memory, or a call that
/// cannot be made (its error is the result). Such calls may run before the reply that asked
/// for them is committed, and be made again if the loop stops before it is. An MCP server's
/// tool may do anything: never.
pub fn only_reads(offered: &[Tool], call: &Call) -> bool {
    matches!(
        errand(offered, call, String::new(), Duration::ZERO),
        Err(_) | Ok(ErrandKind::Memory(MemoryOp::Get { .. }))
    )
}

/// The errand a call asks for, or why it cannot be made.
fn errand(offered: &[Tool], call: &Call, key: String, left: Duration) -> Result<ErrandKind, String> {
    let Some(tool) = offered.iter().find(|t| t.name == call.name) else {
        let names: Vec<_> = offered.iter().map(|t| t.name.as_str()).collect();
        return Err(format!(
            "no tool named {:?} is offered here (offered: {names:?})",
            call.name
        ));
    };
    let args: Value = serde_json::from_str(&call.arguments)
        .map_err(|e| format!("the arguments are not valid JSON ({e}): {}", call.arguments))?;
    let Value::Object(args) = args else {
        return Err(format!("the arguments must be a JSON object, not {}", call.arguments));
    };
    let text = |k: &str| -> Result<String, String> {
        args.get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("{} needs a string {k:?}", call.name))
    };
    let left_ms = left.as_millis().min(u128::from(u64::MAX)) as u64;
    let wait = args
        .get("timeoutMs")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_WAIT_MS)
        .clamp(1, left_ms.max(1));
    if let Some(mcp) = &tool.mcp {
        return Ok(ErrandKind::Send(Send {
            id: key.clone(),
            to: mcp.agent.clone(),
            payload: json!({ "op": "call", "tool": mcp.tool, "arguments": args, "key": key }),
            priority: LinePriority::Normal,
            timeout_ms: Some(left_ms.max(1)),
        }));
    }
    let payload = args.get("payload").cloned().unwrap_or(Value::Null);
    Ok(match call.name.as_str() {
        "troupe_submit_task" => ErrandKind::Submit {
            capability: text("capability")?,
            payload,
            key,
            timeout_ms: wait,
        },
        "troupe_send_message" => ErrandKind::Send(Send {
            id: key,
            to: text("to")?,
            payload,
            priority: LinePriority::Normal,
            timeout_ms: Some(wait),
        }),
        "troupe_memory_get" => ErrandKind::Memory(MemoryOp::Get { key: text("key")? }),
        "troupe_memory_set" => ErrandKind::Memory(MemoryOp::Set {
            key: text("key")?,
            value: args.get("value").cloned().unwrap_or(Value::Null),
            ttl_ms: None,
            expect_version: args.get("expectVersion").and_then(Value::as_u64),
        }),
        other => return Err(format!("no tool named {other:?}")),
    })
}

//! The lines a process agent writes (`docs/agent-protocol.md`), as typed values: each
//! [`Line`] kind with its fields, read with serde. A line that does not read is a protocol
//! error ([`Bad::Protocol`]) — except a `team_task` whose task does not read, which the
//! leader is answered about ([`Bad::TeamTask`]), since it waits for that answer.
//!
//! The wire shapes of a `memory` line's operation and of a `team_task`'s swarm task are the
//! protocol's own: the swarm room turns them into its operations and modes.

mod errands;

use serde::Deserialize;
use serde_json::Value;

pub use errands::{Aggregate, LinePriority, Memory, MemoryOp, PlanStep, Publish, Send, Stage, TeamMode, TeamTask};

/// A line of a process agent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    /// The first line: the agent takes tasks (`name` and `version` are not used).
    Ready,
    /// A sign of life with nothing else to say.
    Heartbeat,
    /// An attempt's outcome.
    Result(TaskResult),
    /// A task is moving: resets its inactivity limit.
    Progress(Progress),
    /// The answer to `checkpoint` or `restore`.
    State(Answer),
    /// The answer to `message`.
    Reply(Answer),
    Log(Log),
    /// A message to another agent, answered with `sent`.
    Send(Send),
    /// A message on a topic, answered with `published`.
    Publish(Publish),
    /// A read or write of the agent's swarm's memory, answered with `memory_result`.
    Memory(Memory),
    /// Work for the sub-team the agent leads, answered with `team_result`.
    TeamTask(TeamTask),
}

/// The kinds of line an agent may write, for telling an unknown kind from a bad line.
const KINDS: &[&str] = &[
    "ready",
    "heartbeat",
    "result",
    "progress",
    "state",
    "reply",
    "log",
    "send",
    "publish",
    "memory",
    "team_task",
];

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TaskResult {
    pub id: String,
    pub ok: bool,
    #[serde(default)]
    pub value: Value,
    #[serde(default)]
    pub error: Option<String>,
    /// The attempt it answers; absent from agents written before it existed.
    #[serde(default)]
    pub attempt: Option<u64>,
}

impl TaskResult {
    /// What the attempt came to.
    pub fn outcome(self) -> crate::task::Outcome {
        match self.ok {
            true => Ok(self.value),
            false => Err(self
                .error
                .unwrap_or_else(|| "the agent reported a failure without a reason".to_owned())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Progress {
    pub id: String,
    /// From 0 to 1.
    #[serde(default)]
    pub fraction: Option<f64>,
    #[serde(default)]
    pub note: Option<String>,
    /// The attempt it is about; absent from agents that do not say.
    #[serde(default)]
    pub attempt: Option<u64>,
}

/// An answer to a request Troupe made (`state` carries `state`, `reply` carries `payload`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Answer {
    pub id: String,
    #[serde(default)]
    state: Option<Value>,
    #[serde(default)]
    payload: Option<Value>,
}

impl Answer {
    pub fn value(self) -> Value {
        self.state.or(self.payload).unwrap_or(Value::Null)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Log {
    #[serde(default)]
    pub level: Option<String>,
    #[serde(default)]
    pub message: String,
}

/// Why a line could not be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    /// Counted, logged and answered with an `error` line.
    Protocol(String),
    /// A `team_task` (with this id) whose task does not read: answered with a failed
    /// `team_result`, so the leader waiting for it learns why.
    TeamTask { id: String, why: String },
}

impl Line {
    /// Reads one line of text.
    pub fn parse(text: &str) -> Result<Line, Bad> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| Bad::Protocol(format!("not JSON ({e}): {}", excerpt(text))))?;
        Line::from_value(value)
    }

    /// Reads one line already read as JSON.
    pub fn from_value(value: Value) -> Result<Line, Bad> {
        let Some(kind) = value.get("type").and_then(Value::as_str).map(str::to_owned) else {
            return Err(Bad::Protocol("a line without a string \"type\"".into()));
        };
        if !KINDS.contains(&kind.as_str()) {
            return Err(Bad::Protocol(format!("unknown type {kind:?}")));
        }
        if kind != "ready" && kind != "heartbeat" && kind != "log" && !value.get("id").is_some_and(Value::is_string) {
            return Err(Bad::Protocol(format!("a {kind} line without a string \"id\"")));
        }
        let id = value.get("id").and_then(Value::as_str).map(str::to_owned);
        serde_json::from_value(value).map_err(|e| match (kind.as_str(), id) {
            ("team_task", Some(id)) => Bad::TeamTask {
                id,
                why: format!("a team_task line: {e}"),
            },
            _ => Bad::Protocol(format!("a {kind} line: {e}")),
        })
    }
}

/// The start of a line, for a message about it.
pub fn excerpt(text: &str) -> &str {
    let mut end = text.len().min(120);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read(line: Value) -> Result<Line, Bad> {
        Line::from_value(line)
    }

    #[test]
    fn every_kind_of_line_reads_as_its_variant() {
        assert_eq!(read(json!({ "type": "ready", "name": "py" })), Ok(Line::Ready));
        assert_eq!(read(json!({ "type": "heartbeat" })), Ok(Line::Heartbeat));
        let Ok(Line::Result(r)) = read(json!({ "type": "result", "id": "t", "attempt": 2, "ok": true, "value": 3 }))
        else {
            panic!("not a result");
        };
        assert_eq!((r.attempt, r.outcome()), (Some(2), Ok(json!(3))));
        let Ok(Line::Result(r)) = read(json!({ "type": "result", "id": "t", "ok": false })) else {
            panic!("not a result");
        };
        assert_eq!(r.attempt, None);
        assert!(r.outcome().is_err());
        assert_eq!(
            read(json!({ "type": "progress", "id": "t", "fraction": 0.5, "note": "half", "attempt": 1 })),
            Ok(Line::Progress(Progress {
                id: "t".into(),
                fraction: Some(0.5),
                note: Some("half".into()),
                attempt: Some(1),
            }))
        );
        let Ok(Line::State(a)) = read(json!({ "type": "state", "id": "r1", "state": { "n": 1 } })) else {
            panic!("not a state");
        };
        assert_eq!(a.value(), json!({ "n": 1 }));
        let Ok(Line::Reply(a)) = read(json!({ "type": "reply", "id": "m1", "payload": "hi" })) else {
            panic!("not a reply");
        };
        assert_eq!(a.value(), json!("hi"));
        assert!(matches!(
            read(json!({ "type": "log", "level": "warn", "message": "m" })),
            Ok(Line::Log(Log { level: Some(_), .. }))
        ));
        let Ok(Line::Send(s)) = read(json!({ "type": "send", "id": "s", "to": "a", "priority": "HIGH" })) else {
            panic!("not a send");
        };
        assert_eq!((s.priority, s.timeout_ms()), (LinePriority::High, 30_000));
        let Ok(Line::Publish(p)) = read(json!({ "type": "publish", "id": "p", "topic": "x", "priority": "ODD" }))
        else {
            panic!("not a publish");
        };
        assert_eq!(p.priority, LinePriority::Normal, "an unknown priority is NORMAL");
        assert_eq!(
            read(json!({ "type": "memory", "id": "m", "op": "set", "key": "k", "value": 1, "ttlMs": 60000 })),
            Ok(Line::Memory(Memory {
                id: "m".into(),
                op: MemoryOp::Set {
                    key: "k".into(),
                    value: json!(1),
                    ttl_ms: Some(60000),
                    expect_version: None,
                },
            }))
        );
        let line = json!({ "type": "team_task", "id": "t1", "mode": "MAP_REDUCE", "items": [1, 2],
            "map": { "capabilities": ["exact"] }, "timeoutMs": 9_999_999 });
        let Ok(Line::TeamTask(t)) = read(line) else {
            panic!("not a team task");
        };
        assert_eq!(t.timeout_ms(), 3_600_000, "at most an hour");
        assert!(matches!(t.mode, TeamMode::MapReduce { .. }));
    }

    #[test]
    fn a_bad_line_is_a_protocol_error() {
        let protocol = |line: Value| matches!(read(line), Err(Bad::Protocol(_)));
        assert!(matches!(Line::parse("{not json"), Err(Bad::Protocol(_))));
        assert!(protocol(json!({ "id": "t" })), "no type");
        assert!(protocol(json!({ "type": "dance" })), "an unknown type");
        assert!(protocol(json!({ "type": "result", "ok": true })), "no id");
        assert!(protocol(json!({ "type": "result", "id": "t" })), "no ok");
        assert!(protocol(
            json!({ "type": "result", "id": "t", "ok": true, "attempt": "x" })
        ));
        assert!(protocol(json!({ "type": "send", "id": "s" })), "no to");
        assert!(protocol(json!({ "type": "publish", "id": "p" })), "no topic");
        assert!(protocol(json!({ "type": "memory", "id": "m", "op": "get" })), "no key");
        assert!(protocol(
            json!({ "type": "memory", "id": "m", "op": "drop", "key": "k" })
        ));
        assert!(protocol(
            json!({ "type": "memory", "id": "m", "op": "set", "key": "k", "ttlMs": -5 })
        ));
        assert!(protocol(json!({ "type": "team_task", "mode": "SINGLE" })), "no id");
    }

    #[test]
    fn a_team_task_that_does_not_read_is_answered_not_a_protocol_error() {
        let bad = read(json!({ "type": "team_task", "id": "t1", "mode": "DANCE" }));
        assert!(
            matches!(bad, Err(Bad::TeamTask { ref id, .. }) if id == "t1"),
            "{bad:?}"
        );
    }
}

//! Builtin backends for demos, tests and benchmarks.

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Value};

use super::Backend;
use crate::agent::spec::BuiltinKind;
use crate::task::{Assignment, Outcome};

pub struct Builtin {
    kind: BuiltinKind,
    agent: String,
}

impl Builtin {
    pub fn new(kind: BuiltinKind, agent: String) -> Self {
        Self { kind, agent }
    }
}

impl Backend for Builtin {
    fn run(&mut self, a: Assignment) -> BoxFuture<'static, Outcome> {
        if self.kind == BuiltinKind::Panic {
            // Inside the actor's handler, on purpose: the agent itself crashes.
            panic!("builtin panic agent {} panicked on task {}", self.agent, a.task_id);
        }
        Box::pin(run(self.kind, a.payload))
    }
}

async fn run(kind: BuiltinKind, payload: Value) -> Outcome {
    match kind {
        BuiltinKind::Echo => Ok(payload),
        BuiltinKind::Sleep => {
            let ms = payload
                .get("ms")
                .and_then(Value::as_u64)
                .ok_or_else(|| "sleep needs a payload like {\"ms\": 100}".to_string())?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(json!({ "slept_ms": ms }))
        }
        BuiltinKind::Fail => Err(payload
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("builtin fail")
            .to_string()),
        BuiltinKind::Panic => Err("the panic builtin panics before it runs".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn builtins_do_what_their_names_say() {
        assert_eq!(run(BuiltinKind::Echo, json!({"a": 1})).await, Ok(json!({"a": 1})));
        assert_eq!(
            run(BuiltinKind::Sleep, json!({"ms": 50})).await,
            Ok(json!({"slept_ms": 50}))
        );
        assert!(run(BuiltinKind::Sleep, json!({})).await.is_err());
        assert_eq!(run(BuiltinKind::Fail, json!({"message": "no"})).await, Err("no".into()));
    }
}

//! Builtin backends for demos, tests and benchmarks.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Value};

use super::Backend;
use crate::agent::spec::BuiltinKind;
use crate::task::{Assignment, Outcome};

pub struct Builtin {
    kind: BuiltinKind,
    agent: String,
    /// The `counter` builtin's state.
    count: Arc<AtomicI64>,
}

impl Builtin {
    pub fn new(kind: BuiltinKind, agent: String) -> Self {
        Self {
            kind,
            agent,
            count: Arc::new(AtomicI64::new(0)),
        }
    }
}

impl Backend for Builtin {
    /// A builtin agent answers a message with its payload.
    fn message(
        &mut self,
        _from: Option<String>,
        payload: Value,
        _timeout: Duration,
    ) -> BoxFuture<'static, Result<Value, String>> {
        Box::pin(async move { Ok(payload) })
    }

    fn run(&mut self, a: Assignment) -> BoxFuture<'static, Outcome> {
        if self.kind == BuiltinKind::Panic {
            // Inside the actor's handler, on purpose: the agent itself crashes.
            panic!("builtin panic agent {} panicked on task {}", self.agent, a.task_id);
        }
        if self.kind == BuiltinKind::Counter {
            let count = self.count.clone();
            return Box::pin(async move { count_up(&count, &a.payload) });
        }
        Box::pin(run(self.kind, a.payload))
    }

    fn checkpoint(&mut self) -> BoxFuture<'_, Result<Value, String>> {
        let state = match self.kind {
            BuiltinKind::Counter => Ok(json!({ "count": self.count.load(Ordering::SeqCst) })),
            other => Err(format!("the {} builtin keeps no state to checkpoint", other.as_str())),
        };
        Box::pin(async move { state })
    }

    fn restore(&mut self, state: Value) -> BoxFuture<'_, Result<(), String>> {
        let done = match (self.kind, state.get("count").and_then(Value::as_i64)) {
            (BuiltinKind::Counter, Some(n)) => {
                self.count.store(n, Ordering::SeqCst);
                Ok(())
            }
            (BuiltinKind::Counter, None) => Err("a counter state looks like {\"count\": N}".to_string()),
            (other, _) => Err(format!("the {} builtin keeps no state to restore", other.as_str())),
        };
        Box::pin(async move { done })
    }
}

/// `{"add": N}` adds N (default 0: a read); answers the count after it.
fn count_up(count: &AtomicI64, payload: &Value) -> Outcome {
    let add = match payload.get("add") {
        None => 0,
        Some(n) => n.as_i64().ok_or("counter's \"add\" must be an integer")?,
    };
    Ok(json!({ "count": count.fetch_add(add, Ordering::SeqCst) + add }))
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
        BuiltinKind::Counter => Err("the counter builtin runs inside its agent".into()),
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

    #[tokio::test]
    async fn a_counter_counts_and_comes_back_from_a_checkpoint() {
        let mut counter = Builtin::new(BuiltinKind::Counter, "c".into());
        let task = |payload| Assignment {
            task_id: "t".into(),
            attempt: 1,
            payload,
            timeout_ms: None,
        };
        assert_eq!(counter.run(task(json!({"add": 2}))).await, Ok(json!({"count": 2})));
        let saved = counter.checkpoint().await.unwrap();
        assert_eq!(counter.run(task(json!({"add": 5}))).await, Ok(json!({"count": 7})));
        counter.restore(saved).await.unwrap();
        assert_eq!(counter.run(task(json!({}))).await, Ok(json!({"count": 2})));
        let mut echo = Builtin::new(BuiltinKind::Echo, "e".into());
        assert!(echo.checkpoint().await.unwrap_err().contains("echo"));
    }
}

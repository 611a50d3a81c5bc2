//! Builtin backends for demos, tests and benchmarks. `panic` is not here: it panics inside
//! the agent actor itself, see `actor.rs`.

use std::time::Duration;

use serde_json::{json, Value};

use super::spec::BuiltinKind;
use crate::task::Outcome;

pub async fn run(kind: BuiltinKind, payload: &Value) -> Outcome {
    match kind {
        BuiltinKind::Echo => Ok(payload.clone()),
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
        BuiltinKind::Panic => Err("the panic builtin runs inside the actor".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn builtins_do_what_their_names_say() {
        assert_eq!(run(BuiltinKind::Echo, &json!({"a": 1})).await, Ok(json!({"a": 1})));
        assert_eq!(
            run(BuiltinKind::Sleep, &json!({"ms": 50})).await,
            Ok(json!({"slept_ms": 50}))
        );
        assert!(run(BuiltinKind::Sleep, &json!({})).await.is_err());
        assert_eq!(
            run(BuiltinKind::Fail, &json!({"message": "no"})).await,
            Err("no".into())
        );
    }
}

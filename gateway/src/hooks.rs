//! Webhooks in: `POST /hooks/<name>` turns a signed request into a task (or a swarm task)
//! from the hook's template in the config (`[[hooks]]`), so an issue opened or a CI run can
//! start work.
//!
//! ```text
//!  request ─▶ hook named? ─no─▶ 404
//!             │ signature (raw bytes) or bearer token ─bad─▶ 401
//!             │ X-GitHub-Event: ping, not in `events` (or none), `match` fails ─▶ 204
//!             │ body JSON, `payload` pointers resolve ─no─▶ 422
//!             └▶ submit under the key hook:<name>:<delivery> ─▶ 202 {taskId} (200 for a repeat)
//! ```
//!
//! The request is only queued, never waited on: GitHub gives up after 10 s. Only the mapped
//! fields are kept, never the raw body.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use troupe_actors::swarm::SwarmTaskMode;
use troupe_actors::task::SubmitTaskRequest;
use troupe_actors::{Api, ApiError};
use troupe_runtime::config::outside::{Hook, HookAuth, HookTarget};

use crate::server::AppState;

/// The route's own limit: the largest body any hook takes, and at least the gateway's (so a
/// request for a hook this node does not have is answered 404, not 413).
pub fn body_limit(hooks: &[Hook], gateway: usize) -> usize {
    hooks.iter().map(|h| h.max_body_bytes).fold(gateway, usize::max)
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    answer(status, json!({ "error": { "code": code, "message": message.into() } }))
}

pub async fn receive(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(hook) = s.settings.hooks.iter().find(|h| h.name == name) else {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no hook is named {name:?}"));
    };
    if body.len() > hook.max_body_bytes {
        count(&name, "invalid");
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("hook {name:?} takes at most {} bytes", hook.max_body_bytes),
        );
    }
    if let Err(why) = authenticate(&hook.auth, &headers, &body) {
        count(&name, "refused");
        return error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", why);
    }
    let event = header(&headers, "x-github-event");
    // A hook that names its events takes those only: a request that names none is not one.
    let taken = hook.events.is_empty() || event.is_some_and(|e| hook.events.iter().any(|k| k == e));
    if event == Some("ping") || !taken {
        count(&name, "ignored");
        return StatusCode::NO_CONTENT.into_response();
    }
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            count(&name, "invalid");
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_INPUT",
                format!("the body is not JSON: {e}"),
            );
        }
    };
    if !matches(hook, &body) {
        count(&name, "ignored");
        return StatusCode::NO_CONTENT.into_response();
    }
    let payload = match payload(hook, body) {
        Ok(p) => p,
        Err(message) => {
            count(&name, "invalid");
            return error(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_INPUT", message);
        }
    };
    let key = header(&headers, &hook.idempotency_header).map(|d| keyed(&hook.name, d));
    let mut outcome = submit(&s.api, hook, payload, key.as_deref()).await;
    if let (Err(ApiError::Conflict(_)), Some(key)) = (&outcome, &key) {
        // The same delivery after the hook's template changed: a repeat, answered with what
        // the first one made, not a new task.
        if let Ok(Some(id)) = s.api.answered_under(scope(hook), key).await {
            outcome = Ok(Made {
                id,
                field: field(hook),
                fresh: false,
            });
        }
    }
    // A key taken by another request whose answer cannot be read back (not applied here
    // yet): still a repeat, without the task.
    let repeat = matches!(outcome, Err(ApiError::Conflict(_))) && key.is_some();
    count(
        &name,
        match &outcome {
            Ok(made) if made.fresh => "submitted",
            Ok(_) => "duplicate",
            Err(_) if repeat => "duplicate",
            Err(_) => "failed",
        },
    );
    match outcome {
        Ok(Made { id, field, fresh }) => {
            let status = if fresh { StatusCode::ACCEPTED } else { StatusCode::OK };
            answer(status, json!({ field: id, "duplicate": !fresh }))
        }
        Err(_) if repeat => answer(StatusCode::OK, json!({ "duplicate": true })),
        Err(e) => {
            let status = match e.code() {
                "INVALID_INPUT" => StatusCode::UNPROCESSABLE_ENTITY,
                "NOT_FOUND" => StatusCode::UNPROCESSABLE_ENTITY,
                "BACKPRESSURE" => StatusCode::TOO_MANY_REQUESTS,
                "UNAVAILABLE" => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, e.code(), e.to_string())
        }
    }
}

/// Counts one request by how it was answered: `submitted`, `duplicate`, `ignored` (204),
/// `refused` (401), `invalid` (413, 400, 422) or `failed`.
fn count(hook: &str, outcome: &'static str) {
    metrics::counter!("troupe_hook_requests_total", "hook" => hook.to_owned(), "outcome" => outcome).increment(1);
}

/// The mutation a hook's deliveries are keyed under, and the field its answer names.
fn scope(hook: &Hook) -> &'static str {
    match hook.target {
        HookTarget::Capability(_) => "submitTask",
        HookTarget::Swarm(_) => "swarm-task",
    }
}

fn field(hook: &Hook) -> &'static str {
    match hook.target {
        HookTarget::Capability(_) => "taskId",
        HookTarget::Swarm(_) => "swarmTaskId",
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The idempotency key of a delivery: namespaced by hook, within the key length.
fn keyed(hook: &str, delivery: &str) -> String {
    let mut key = format!("hook:{hook}:{delivery}");
    let mut end = key.len().min(troupe_runtime::idempotency::MAX_KEY_LEN);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    key.truncate(end);
    key
}

/// Checks the caller: GitHub's HMAC over the raw bytes, or the hook's bearer token, both
/// compared in constant time.
fn authenticate(auth: &HookAuth, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    match auth {
        HookAuth::GitHub(secret) => {
            let sig = header(headers, "x-hub-signature-256").ok_or("X-Hub-Signature-256 is missing")?;
            let hex = sig
                .strip_prefix("sha256=")
                .ok_or("X-Hub-Signature-256 does not start with sha256=")?;
            let tag = from_hex(hex).ok_or("X-Hub-Signature-256 is not hex")?;
            let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|e| e.to_string())?;
            mac.update(body);
            mac.verify_slice(&tag)
                .map_err(|_| "the signature does not match the body".to_owned())
        }
        HookAuth::Bearer(token) => {
            let given = header(headers, "authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or("Authorization: Bearer <token> is missing")?;
            if bool::from(given.trim().as_bytes().ct_eq(token)) {
                Ok(())
            } else {
                Err("the token is not this hook's".into())
            }
        }
    }
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Whether the body holds every value the hook's `match` asks for.
fn matches(hook: &Hook, body: &Value) -> bool {
    hook.matches
        .iter()
        .all(|(pointer, want)| body.pointer(pointer) == Some(want))
}

/// The task's payload: the mapped fields, or the whole body when the hook maps none.
fn payload(hook: &Hook, body: Value) -> Result<Value, String> {
    if hook.payload.is_empty() {
        return Ok(body);
    }
    let mut out = Map::new();
    for (field, pointer) in &hook.payload {
        let value = body
            .pointer(pointer)
            .ok_or_else(|| format!("the body has nothing at {pointer} (for the payload's {field:?})"))?;
        out.insert(field.clone(), value.clone());
    }
    Ok(Value::Object(out))
}

/// What a hook made.
struct Made {
    id: String,
    field: &'static str,
    /// Made now, not found under the delivery's key.
    fresh: bool,
}

async fn submit(api: &Api, hook: &Hook, payload: Value, key: Option<&str>) -> Result<Made, ApiError> {
    match &hook.target {
        HookTarget::Capability(capability) => {
            let request = SubmitTaskRequest::to_capability(capability.clone(), payload);
            let before = chrono::Utc::now();
            let task = api.tasks().submit(request, key.map(str::to_owned)).await?;
            // A replayed answer is a task made before this request came.
            let fresh = task.spec.created_at >= before;
            Ok(Made {
                id: task.spec.id,
                field: field(hook),
                fresh,
            })
        }
        HookTarget::Swarm(swarm) => {
            let id = swarm_id(api, swarm).await?;
            let mode = SwarmTaskMode::Single {
                capabilities: Vec::new(),
                payload,
            };
            let before = chrono::Utc::now();
            let task = match key {
                Some(key) => api.swarms().submit_task_once(&id, mode, key).await?,
                None => api.swarms().submit_task(&id, mode).await?,
            };
            let fresh = task.created_at >= before;
            Ok(Made {
                id: task.id,
                field: field(hook),
                fresh,
            })
        }
    }
}

/// A swarm named by id or by name.
async fn swarm_id(api: &Api, swarm: &str) -> Result<String, ApiError> {
    if let Ok(view) = api.swarms().get(swarm).await {
        return Ok(view.spec.id);
    }
    api.swarms()
        .list()
        .await?
        .into_iter()
        .find(|s| s.spec.name == swarm)
        .map(|s| s.spec.id)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "the hook's swarm {swarm:?} is not in the cluster: create it, or name another in the hook's `swarm`"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn githubs_own_test_vector_is_accepted_and_a_changed_byte_is_not() {
        // From GitHub's "Validating webhook deliveries".
        let auth = HookAuth::GitHub(b"It's a Secret to Everybody".to_vec());
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
                .parse()
                .unwrap(),
        );
        assert_eq!(authenticate(&auth, &headers, b"Hello, World!"), Ok(()));
        assert!(authenticate(&auth, &headers, b"Hello, World?").is_err());
        headers.insert("x-hub-signature-256", "sha256=75".parse().unwrap());
        assert!(authenticate(&auth, &headers, b"Hello, World!").is_err());
    }

    #[test]
    fn a_long_delivery_id_still_makes_a_key_within_the_limit() {
        let key = keyed("issues", &"d".repeat(500));
        assert_eq!(key.len(), troupe_runtime::idempotency::MAX_KEY_LEN);
        assert!(key.starts_with("hook:issues:"));
    }
}

//! The `llm` backend: an OpenAI-compatible `/v1/chat/completions` endpoint. The task's
//! payload becomes the messages, the reply is the result, with the token usage the server
//! reported. 429 and 5xx answers (and connection errors) are retried within the attempt,
//! honouring `Retry-After`. The API key is read on the node when the agent starts, from what
//! the node's admin allows (see `agent::secrets`); it is never part of the spec, an error or
//! a log line.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Map, Value};

use super::http::{excerpt, failed, read_body};
use super::{Backend, Link};
use crate::agent::secrets::Secrets;
use crate::agent::spec::LlmBackend;
use crate::task::{Assignment, Outcome};

/// An attempt's limit (every retry included) when neither the task nor the backend sets one.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

pub struct Llm {
    spec: LlmBackend,
    client: reqwest::Client,
    secrets: Arc<Secrets>,
    key: Option<String>,
}

impl Llm {
    pub fn new(spec: LlmBackend, secrets: Arc<Secrets>) -> Self {
        Self {
            spec,
            client: super::http_client(),
            secrets,
            key: None,
        }
    }
}

impl Backend for Llm {
    fn start(&mut self, _link: Link) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            // Judged again here, on the node that runs the agent: its allow-list applies, and
            // a file is resolved as it is now.
            self.key = match &self.spec.api_key {
                None => None,
                Some(key) => Some(self.secrets.read(key).await.map_err(|e| e.to_string())?),
            };
            Ok(())
        })
    }

    fn run(&mut self, a: Assignment) -> BoxFuture<'static, Outcome> {
        let limit = a
            .timeout_ms
            .or(self.spec.timeout_ms)
            .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        let (spec, client, key) = (self.spec.clone(), self.client.clone(), self.key.clone());
        Box::pin(async move {
            let body = request_body(&spec, &a.payload)?;
            let call = complete(&spec, &client, key.as_deref(), &body, limit);
            tokio::time::timeout(limit, call)
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {} ms", limit.as_millis())))
        })
    }

    fn own_timeouts(&self) -> bool {
        true
    }
}

/// Posts the request, retrying what the server says may work later.
async fn complete(
    spec: &LlmBackend,
    client: &reqwest::Client,
    key: Option<&str>,
    body: &Value,
    limit: Duration,
) -> Outcome {
    let url = format!("{}/v1/chat/completions", spec.base_url.trim_end_matches('/'));
    let mut tries = 0;
    loop {
        tries += 1;
        let mut request = client.post(&url).json(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let (why, wait) = match request.send().await {
            Err(e) => (failed(&url, &e, limit), None),
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(retry_after);
                let bytes = read_body(response, &url, limit).await?;
                if status.is_success() {
                    return if spec.stream {
                        parse_stream(&bytes, &spec.model)
                    } else {
                        parse_reply(&bytes, &spec.model)
                    };
                }
                let why = format!("HTTP {}: {}", status.as_u16(), excerpt(&bytes));
                if status.as_u16() != 429 && !status.is_server_error() {
                    return Err(why);
                }
                (why, retry_after)
            }
        };
        if tries > spec.max_retries {
            return Err(format!("{why} (after {tries} tries)"));
        }
        let delay = wait.unwrap_or_else(|| backoff(tries));
        tracing::info!(%url, error = %why, delay_ms = delay.as_millis() as u64, tries, "model endpoint busy: retrying");
        tokio::time::sleep(delay).await;
    }
}

/// 500 ms, doubled per try, at most 30 s.
fn backoff(tries: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << tries.saturating_sub(1).min(6))).min(Duration::from_secs(30))
}

/// `Retry-After` in seconds (whole or decimal), at most a minute; an HTTP date is not used.
fn retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    // Clamped before the conversion: `Duration::from_secs_f64` panics past `u64::MAX` seconds,
    // and the header is whatever the server sends.
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64())))
}

/// The chat request for a task: the system prompt, then the payload's messages.
fn request_body(spec: &LlmBackend, payload: &Value) -> Result<Value, String> {
    let mut messages = Vec::new();
    if let Some(system) = &spec.system_prompt {
        messages.push(json!({ "role": "system", "content": system }));
    }
    let shape = "an llm task's payload must be a string, {\"prompt\": ...} or {\"messages\": [...]}";
    match payload {
        Value::String(text) => messages.push(json!({ "role": "user", "content": text })),
        Value::Object(o) => match (o.get("messages"), o.get("prompt")) {
            (Some(Value::Array(list)), _) => {
                for m in list {
                    let ok =
                        m.get("role").is_some_and(Value::is_string) && m.get("content").is_some_and(Value::is_string);
                    if !ok {
                        return Err("each message needs a string role and a string content".into());
                    }
                    messages.push(json!({ "role": m["role"], "content": m["content"] }));
                }
            }
            (None, Some(Value::String(text))) => messages.push(json!({ "role": "user", "content": text })),
            _ => return Err(shape.into()),
        },
        _ => return Err(shape.into()),
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(spec.model));
    body.insert("messages".into(), Value::Array(messages));
    if let Some(t) = spec.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(m) = spec.max_tokens {
        body.insert("max_tokens".into(), json!(m));
    }
    if spec.stream {
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    Ok(Value::Object(body))
}

/// The result Troupe keeps: content, model, finish reason and usage (null when none came).
fn result(content: String, model: Option<&Value>, fallback: &str, finish: Value, usage: Option<&Value>) -> Value {
    let usage = usage.filter(|u| u.is_object()).map(|u| {
        let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
        json!({ "promptTokens": n("prompt_tokens"), "completionTokens": n("completion_tokens"), "totalTokens": n("total_tokens") })
    });
    json!({
        "content": content,
        "model": model.and_then(Value::as_str).unwrap_or(fallback),
        "finishReason": finish,
        "usage": usage,
    })
}

fn parse_reply(bytes: &[u8], fallback: &str) -> Outcome {
    let reply: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the model endpoint answered something not JSON: {e}"))?;
    let choice = reply
        .pointer("/choices/0")
        .ok_or_else(|| format!("the answer has no choices: {}", excerpt(bytes)))?;
    let content = choice.pointer("/message/content").and_then(Value::as_str).unwrap_or("");
    let finish = choice.get("finish_reason").cloned().unwrap_or(Value::Null);
    Ok(result(
        content.to_owned(),
        reply.get("model"),
        fallback,
        finish,
        reply.get("usage"),
    ))
}

/// A server-sent event stream of chunks, up to `data: [DONE]`.
fn parse_stream(bytes: &[u8], fallback: &str) -> Outcome {
    let text = String::from_utf8_lossy(bytes);
    let (mut content, mut finish, mut usage, mut model) = (String::new(), Value::Null, None, None);
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:").map(str::trim) else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| format!("a stream chunk is not JSON: {e}"))?;
        if let Some(piece) = chunk.pointer("/choices/0/delta/content").and_then(Value::as_str) {
            content.push_str(piece);
        }
        if let Some(f) = chunk.pointer("/choices/0/finish_reason").filter(|f| !f.is_null()) {
            finish = f.clone();
        }
        if chunk.get("usage").is_some_and(Value::is_object) {
            usage = chunk.get("usage").cloned();
        }
        if model.is_none() {
            model = chunk.get("model").cloned();
        }
    }
    Ok(result(content, model.as_ref(), fallback, finish, usage.as_ref()))
}

#[cfg(test)]
mod tests;

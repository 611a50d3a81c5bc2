//! The `http` backend: each attempt POSTs the task as JSON to a URL. A 2xx answer's JSON body
//! is the result; any other status fails the attempt with the status and an excerpt of the
//! body. Retrying is the task's business (its attempts), not the backend's.

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Value};

use super::Backend;
use crate::agent::spec::HttpBackend;
use crate::task::{Assignment, Outcome};

/// An attempt's limit when neither the task nor the backend sets one.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer body read.
pub(super) const MAX_BODY: usize = 4 * 1024 * 1024;
/// How much of a failed answer's body an error shows.
const EXCERPT: usize = 512;

pub struct Http {
    spec: HttpBackend,
    agent: String,
    client: reqwest::Client,
}

impl Http {
    pub fn new(spec: HttpBackend, agent: String) -> Self {
        Self {
            spec,
            agent,
            client: super::http_client(),
        }
    }
}

impl Backend for Http {
    fn run(&mut self, a: Assignment) -> BoxFuture<'static, Outcome> {
        let limit = a
            .timeout_ms
            .or(self.spec.timeout_ms)
            .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        let body = json!({ "taskId": a.task_id, "attempt": a.attempt, "agentId": self.agent, "payload": a.payload });
        let mut request = self.client.post(&self.spec.url).timeout(limit).json(&body);
        for (name, value) in &self.spec.headers {
            request = request.header(name, value);
        }
        let url = self.spec.url.clone();
        Box::pin(async move {
            let response = request.send().await.map_err(|e| failed(&url, &e, limit))?;
            let status = response.status();
            let bytes = read_body(response, &url, limit).await?;
            if !status.is_success() {
                return Err(format!("HTTP {}: {}", status.as_u16(), excerpt(&bytes)));
            }
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(Value::Null);
            }
            Ok(serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())))
        })
    }

    fn own_timeouts(&self) -> bool {
        true
    }
}

/// Reads a body up to [`MAX_BODY`]; a longer one is an error.
pub(super) async fn read_body(response: reqwest::Response, url: &str, limit: Duration) -> Result<Vec<u8>, String> {
    read_body_with(response, url, limit, |_| {}).await
}

/// [`read_body`], giving `each` every chunk as it comes.
pub(super) async fn read_body_with(
    mut response: reqwest::Response,
    url: &str,
    limit: Duration,
    mut each: impl FnMut(&[u8]),
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| failed(url, &e, limit))? {
        each(&chunk);
        out.extend_from_slice(&chunk);
        if out.len() > MAX_BODY {
            return Err(format!("the answer from {url} is larger than {MAX_BODY} bytes"));
        }
    }
    Ok(out)
}

pub(super) fn failed(url: &str, e: &reqwest::Error, limit: Duration) -> String {
    if e.is_timeout() {
        format!("POST {url} timed out after {} ms", limit.as_millis())
    } else {
        format!("POST {url} failed: {}", troupe_runtime::causes::said_with_causes(e))
    }
}

/// At most [`EXCERPT`] bytes of a body, cut on a character boundary, trimmed.
pub(super) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut end = text.len().min(EXCERPT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_excerpt_is_short_and_cut_on_a_character_boundary() {
        let long = "é".repeat(600);
        let cut = excerpt(long.as_bytes());
        assert!(cut.len() <= EXCERPT && cut.chars().all(|c| c == 'é'));
        assert_eq!(excerpt(b"  not found \n"), "not found");
    }
}

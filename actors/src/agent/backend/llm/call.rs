//! One model call over HTTP, with its retries: 429, 408, 409, 529 and 5xx answers, a
//! stream that broke off and connection errors are tried again (after `Retry-After` when
//! the server gives one, else after a doubling backoff), up to the backend's `maxRetries`.

use std::time::Duration;

use super::wire::{self, Turn};
use super::{deltas, Loop};
use crate::agent::backend::http::{excerpt, failed, read_body_with};
use crate::agent::spec::{Dialect, LlmBackend};

/// The longest `Retry-After` honoured.
pub(super) const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

impl Loop {
    /// Posts one model call, retrying what the server says may work later. A streamed
    /// reply's text goes to those watching `task`'s `step` as it comes.
    pub(super) async fn complete(&self, path: &str, body: &[u8], (task, step): (&str, u32)) -> Result<Turn, String> {
        let (spec, limit) = (&self.spec, self.limit);
        let url = format!("{}{path}", spec.base_url.trim_end_matches('/'));
        let mut tries = 0;
        loop {
            tries += 1;
            let mut request = self
                .client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_vec());
            match (spec.dialect, self.key.as_deref()) {
                (Dialect::OpenAi, Some(key)) => request = request.bearer_auth(key),
                (Dialect::OpenAi, None) => {}
                (Dialect::Anthropic, key) => {
                    let version = spec
                        .anthropic_version
                        .as_deref()
                        .unwrap_or(LlmBackend::DEFAULT_ANTHROPIC_VERSION);
                    request = request.header("anthropic-version", version);
                    if let Some(key) = key {
                        request = request.header("x-api-key", key);
                    }
                }
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
                    // A server may answer a streamed call whole (as JSON): read what it sent.
                    let streamed = spec.stream && !is_json(response.headers());
                    let mut lines = deltas::SseLines::default();
                    let watched = streamed && status.is_success();
                    let bytes = read_body_with(response, &url, limit, |chunk| {
                        if watched {
                            lines.feed(chunk, |line| {
                                if let Some(text) = deltas::text_of(spec.dialect, line) {
                                    self.deltas.send(task, step, text);
                                }
                            });
                        }
                    })
                    .await?;
                    if status.is_success() {
                        match wire::parse(spec.dialect, &bytes, streamed) {
                            Ok(turn) => return Ok(turn),
                            // A stream that broke off after its 200 (Anthropic's `error`
                            // event) is worth another try.
                            Err(why) if why.starts_with("the model's stream broke off") => (why, None),
                            Err(why) => return Err(why),
                        }
                    } else {
                        let why = format!("HTTP {}: {}", status.as_u16(), excerpt(&bytes));
                        // 529: Anthropic's "overloaded".
                        if !matches!(status.as_u16(), 408 | 409 | 429 | 529) && !status.is_server_error() {
                            // The same request would be refused again, by any agent.
                            return Err(match status.is_client_error() {
                                true => format!("MODEL_REFUSED: {why}"),
                                false => why,
                            });
                        }
                        (why, retry_after)
                    }
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
}

/// Whether an answer says its body is JSON (`application/json`, with parameters or not).
fn is_json(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("application/json"))
}

/// 500 ms, doubled per try, at most 30 s.
pub(super) fn backoff(tries: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << tries.saturating_sub(1).min(6))).min(Duration::from_secs(30))
}

/// `Retry-After` in seconds (whole or decimal), at most a minute; an HTTP date is not used.
pub(super) fn retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    // Clamped before the conversion: `Duration::from_secs_f64` panics past `u64::MAX` seconds,
    // and the header is whatever the server sends.
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64())))
}

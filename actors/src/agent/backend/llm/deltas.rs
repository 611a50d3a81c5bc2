//! The model's text as it streams, piece by piece, for those watching a task
//! (`taskOutput`). Pieces are not kept: what is kept is the step the whole reply becomes
//! (see [`super::journal`]). They go to whoever listens on this node now, through a bounded
//! broadcast: a listener that falls behind misses pieces, never slows the loop.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

use crate::agent::spec::Dialect;

/// The pieces a slow listener may fall behind by before it misses some.
const BACKLOG: usize = 4096;

/// A piece of a model reply while it streams.
#[derive(Clone, Debug)]
pub struct Delta {
    pub task: String,
    /// The model call it belongs to: 1, 2, …
    pub step: u32,
    pub text: String,
}

/// Where a node's LLM agents send their pieces.
#[derive(Clone, Debug)]
pub struct Deltas(broadcast::Sender<Arc<Delta>>);

impl Default for Deltas {
    fn default() -> Self {
        Self(broadcast::channel(BACKLOG).0)
    }
}

impl Deltas {
    /// The pieces sent from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Delta>> {
        self.0.subscribe()
    }

    pub(super) fn send(&self, task: &str, step: u32, text: String) {
        if self.0.receiver_count() > 0 {
            let _ = self.0.send(Arc::new(Delta {
                task: task.to_owned(),
                step,
                text,
            }));
        }
    }
}

/// The text a server-sent event line of `dialect` adds to the reply, if it adds some.
pub(super) fn text_of(dialect: Dialect, line: &str) -> Option<String> {
    let data = line.strip_prefix("data:")?.trim();
    if data == "[DONE]" {
        return None;
    }
    let event: Value = serde_json::from_str(data).ok()?;
    let piece = match dialect {
        Dialect::OpenAi => event.pointer("/choices/0/delta/content"),
        Dialect::Anthropic => (event.get("type").and_then(Value::as_str) == Some("content_block_delta")
            && event.pointer("/delta/type").and_then(Value::as_str) == Some("text_delta"))
        .then(|| event.pointer("/delta/text"))
        .flatten(),
    }?;
    piece.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

/// Splits a body, as its chunks come, into lines.
#[derive(Default)]
pub(super) struct SseLines {
    pending: Vec<u8>,
}

impl SseLines {
    pub fn feed(&mut self, chunk: &[u8], mut each: impl FnMut(&str)) {
        self.pending.extend_from_slice(chunk);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            each(String::from_utf8_lossy(&line).trim_end());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_of_each_dialects_stream_events() {
        let openai = r#"data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#;
        assert_eq!(text_of(Dialect::OpenAi, openai).as_deref(), Some("Hel"));
        assert_eq!(text_of(Dialect::OpenAi, "data: [DONE]"), None);
        let tool = r#"data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0}]}}]}"#;
        assert_eq!(text_of(Dialect::OpenAi, tool), None);
        let anthropic = r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"lo"}}"#;
        assert_eq!(text_of(Dialect::Anthropic, anthropic).as_deref(), Some("lo"));
        let json =
            r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{"}}"#;
        assert_eq!(text_of(Dialect::Anthropic, json), None);
        assert_eq!(text_of(Dialect::Anthropic, "event: content_block_delta"), None);
    }

    #[test]
    fn lines_are_split_across_chunks() {
        let mut lines = SseLines::default();
        let mut out = Vec::new();
        lines.feed(b"data: a\n\nda", |l| out.push(l.to_owned()));
        lines.feed(b"ta: b\r\n", |l| out.push(l.to_owned()));
        assert_eq!(out, ["data: a", "", "data: b"]);
    }
}

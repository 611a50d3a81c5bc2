//! The llm backend's tests, by concept; here what they share: a scripted model endpoint,
//! replies, errands and started backends.

use super::*;
use crate::agent::backend::ErrandKind;
use crate::task::Budget;
use journal::Tokens;
use std::sync::Mutex;

fn spec(stream: bool) -> LlmBackend {
    LlmBackend {
        system_prompt: Some("be brief".into()),
        temperature: Some(0.5),
        max_tokens: Some(10),
        stream,
        max_retries: 2,
        ..LlmBackend::to("http://127.0.0.1:1", "m")
    }
}

/// A model endpoint that gives its scripted answers in order (then 500s), and keeps each
/// request it was sent: its headers (lower case) and its body.
struct Scripted {
    port: u16,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Scripted {
    /// Each answer is (status line, content type, body).
    async fn start(answers: Vec<(&'static str, &'static str, String)>) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let kept = seen.clone();
        tokio::spawn(async move {
            let mut answers = answers.into_iter();
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                // Headers, then the body its Content-Length announces.
                let (head, body) = loop {
                    let n = socket.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break (String::new(), Vec::new());
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            break (text[..end].to_owned(), got[end + 4..end + 4 + len].to_vec());
                        }
                    }
                };
                if head.is_empty() {
                    continue;
                }
                kept.lock()
                    .unwrap()
                    .push((head, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                let (status, kind, body) =
                    answers
                        .next()
                        .unwrap_or(("500 Internal Server Error", "text/plain", "script over".into()));
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        Self { port, seen }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn bodies(&self) -> Vec<Value> {
        self.seen.lock().unwrap().iter().map(|(_, b)| b.clone()).collect()
    }
}

fn ok(body: Value) -> (&'static str, &'static str, String) {
    ("200 OK", "application/json", body.to_string())
}

fn sse(events: &[Value], done: bool) -> (&'static str, &'static str, String) {
    let mut body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    if done {
        body.push_str("data: [DONE]\n\n");
    }
    ("200 OK", "text/event-stream", body)
}

/// An OpenAI reply asking for one call of `name` with `arguments` (JSON text).
fn openai_call(id: &str, name: &str, arguments: &str) -> (&'static str, &'static str, String) {
    ok(json!({
        "model": "m-1",
        "choices": [{ "message": { "content": null, "tool_calls": [
            { "id": id, "type": "function", "function": { "name": name, "arguments": arguments } }
        ] }, "finish_reason": "tool_calls" }],
        "usage": { "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15 }
    }))
}

fn openai_answer(text: &str) -> (&'static str, &'static str, String) {
    ok(json!({
        "model": "m-1",
        "choices": [{ "message": { "content": text }, "finish_reason": "stop" }],
        "usage": { "prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23 }
    }))
}

/// Errands answered by `answer`, each one kept (its kind, as debug text, with its key).
fn errands(
    answer: impl Fn(&ErrandKind) -> Result<Value, String> + Send + Sync + 'static,
) -> (Errands, Arc<Mutex<Vec<String>>>) {
    let kept: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = kept.clone();
    let errands: Errands = Arc::new(move |what| {
        seen.lock().unwrap().push(format!("{what:?}"));
        let out = answer(&what);
        Box::pin(async move { out })
    });
    (errands, kept)
}

fn task(id: &str, payload: Value) -> Assignment {
    Assignment {
        task_id: id.into(),
        attempt: 1,
        payload,
        timeout_ms: Some(20_000),
    }
}

async fn started(spec: LlmBackend, store: Option<Store>, errands: Errands) -> Llm {
    started_with(spec, store, Default::default(), errands).await
}

async fn started_with(spec: LlmBackend, store: Option<Store>, prices: Prices, errands: Errands) -> Llm {
    let lent = Lent {
        store,
        prices: Arc::new(prices),
        ..Lent::default()
    };
    let mut llm = Llm::new(spec, Default::default())
        .for_agent("agent-1", &lent)
        .carrying(errands);
    llm.start(Link::detached()).await.unwrap();
    llm
}

/// Puts a task's spec with `budget` into `store`, as a submit does.
async fn submitted(store: &Store, id: &str, budget: Option<Budget>) {
    let spec = TaskSpec {
        capability: Some("llm".into()),
        payload: json!("go"),
        budget,
        ..TaskSpec::example(id)
    };
    let bytes = troupe_runtime::codec::encode(&spec).unwrap();
    store
        .write(troupe_runtime::store::Batch::new().put(crate::tables::TASKS, id, bytes))
        .await
        .unwrap();
}

/// Errands that never answer, each seen by `seen` first, and what is dropped when the first
/// one is made: an attempt stopped there is stopped as a kill of its node would stop it.
fn hanging(seen: impl Fn(&ErrandKind) + Send + Sync + 'static) -> (Errands, tokio::sync::oneshot::Receiver<()>) {
    let (reached, held) = tokio::sync::oneshot::channel::<()>();
    let reached = Arc::new(Mutex::new(Some(reached)));
    let errands: Errands = Arc::new(move |what| {
        seen(&what);
        let reached = reached.lock().unwrap().take();
        Box::pin(async move {
            drop(reached);
            std::future::pending::<()>().await;
            Ok(Value::Null)
        })
    });
    (errands, held)
}

/// Errands that count their calls and answer `answer`.
fn counted(answer: Value) -> (Errands, Arc<Mutex<Vec<String>>>) {
    errands(move |_| Ok(answer.clone()))
}

mod budgets;
mod commits;
mod dialects;
mod held;
mod loops;

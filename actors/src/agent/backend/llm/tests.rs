use super::*;
use crate::agent::backend::ErrandKind;
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

#[test]
fn payloads_open_the_conversation_after_the_system_prompt() {
    let s = spec(false);
    let (path, body) = wire::request(&s, &wire::opening(&s, &json!("hi")).unwrap(), &[], &[]);
    assert_eq!(path, "/v1/chat/completions");
    assert_eq!(
        body["messages"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    );
    assert_eq!(body["max_tokens"], 10);
    assert!(body.get("stream").is_none() && body.get("tools").is_none());
    let s = spec(true);
    let (_, body) = wire::request(&s, &wire::opening(&s, &json!({"prompt": "p"})).unwrap(), &[], &[]);
    assert_eq!(body["messages"][1]["content"], "p");
    assert_eq!(body["stream_options"]["include_usage"], true);
    let listed = json!({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]});
    let (_, body) = wire::request(&s, &wire::opening(&s, &listed).unwrap(), &[], &[]);
    assert_eq!(body["messages"][2]["content"], "b");
    assert!(wire::opening(&s, &json!(3)).is_err());
    assert!(wire::opening(&s, &json!({"messages": [{"role": 1}]})).is_err());
    // Anthropic: the system prompt (the agent's and the payload's) is its own field.
    let a = LlmBackend {
        dialect: Dialect::Anthropic,
        ..spec(false)
    };
    let listed = json!({"messages": [{"role": "system", "content": "and kind"}, {"role": "user", "content": "q"}]});
    let (path, body) = wire::request(
        &a,
        &wire::opening(&a, &listed).unwrap(),
        &[],
        &tools::offered(&["troupe_memory_*".into()]),
    );
    assert_eq!(path, "/v1/messages");
    assert_eq!(body["system"], "be brief\n\nand kind");
    assert_eq!(body["messages"], json!([{"role": "user", "content": "q"}]));
    let names: Vec<_> = body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, [json!("troupe_memory_get"), json!("troupe_memory_set")]);
    assert_eq!(body["tools"][0]["input_schema"]["required"], json!(["key"]));
}

#[test]
fn tool_patterns_are_globs_over_the_names() {
    assert!(tools::glob("troupe_*", "troupe_submit_task"));
    assert!(tools::glob("*", "x"));
    assert!(tools::glob("troupe_memory_?et", "troupe_memory_get"));
    assert!(tools::glob("*_task", "troupe_submit_task"));
    assert!(tools::glob("t*o*k", "troupe_submit_task"));
    assert!(!tools::glob("troupe_memory_*", "troupe_submit_task"));
    assert!(!tools::glob("troupe", "troupe_submit_task"));
    assert!(!tools::glob("?", ""));
    // MCP names made to fit the model APIs' ^[a-zA-Z0-9_-]{1,64}$.
    assert_eq!(tools::model_name("fs.server__read/file"), "fs_server__read_file");
    let long = tools::model_name(&format!("{}__tool", "s".repeat(80)));
    assert_eq!(long.len(), 64);
    assert_ne!(
        long,
        tools::model_name(&format!("{}__tool2", "s".repeat(80))),
        "a hash keeps them apart"
    );
    assert_eq!(tools::offered(&[]).len(), 0);
    assert_eq!(tools::offered(&["troupe_*".into()]).len(), tools::catalogue().len());
}

#[test]
fn streamed_replies_give_text_calls_and_tokens_in_both_dialects() {
    let stream = "data: {\"model\":\"x\",\"choices\":[{\"delta\":{\"content\":\"he\"}}]}\n\n: comment\n\
                  data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n\
                  data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]}}]}\n\n\
                  data: {\"choices\":[{\"delta\":{\"content\":\"llo\"},\"finish_reason\":\"tool_calls\"}]}\n\n\
                  data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\n\
                  data: [DONE]\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"ignored\"}}]}\n";
    let turn = wire::parse(Dialect::OpenAi, stream.as_bytes(), true).unwrap();
    assert_eq!(turn.text, "hello");
    assert_eq!(turn.finish.as_deref(), Some("tool_calls"));
    assert_eq!(turn.tokens, Tokens { input: 1, output: 2 });
    assert_eq!(
        (turn.calls[0].id.as_str(), turn.calls[0].arguments.as_str()),
        ("c1", "{\"a\":1}")
    );
    let events = [
        json!({"type": "message_start", "message": {"model": "claude-x", "usage": {"input_tokens": 7, "cache_read_input_tokens": 3, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me look."}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "troupe_memory_get", "input": {}}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"key\": "}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"plan\"}"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 12}}),
        json!({"type": "message_stop"}),
    ];
    let (_, _, body) = sse(&events, false);
    let turn = wire::parse(Dialect::Anthropic, body.as_bytes(), true).unwrap();
    assert_eq!(turn.text, "Let me look.");
    assert_eq!(turn.model.as_deref(), Some("claude-x"));
    assert_eq!(turn.tokens, Tokens { input: 10, output: 12 });
    assert_eq!(turn.calls.len(), 1);
    assert_eq!(turn.calls[0].arguments, "{\"key\": \"plan\"}");
    let broken = sse(
        &[
            events[0].clone(),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ],
        false,
    )
    .2;
    let why = wire::parse(Dialect::Anthropic, broken.as_bytes(), true).unwrap_err();
    assert!(why.contains("Overloaded"), "{why}");
}

#[tokio::test]
async fn a_tool_call_is_run_and_its_result_given_back_until_the_model_answers() {
    let server = Scripted::start(vec![
        openai_call("call_1", "troupe_memory_get", r#"{"key":"plan"}"#),
        openai_call("call_2", "troupe_memory_get", "not json"),
        openai_call("call_3", "launch_missiles", "{}"),
        openai_answer("done"),
    ])
    .await;
    let (carried, kept) = errands(|_| Ok(json!({"value": "ship it", "version": 3})));
    let s = LlmBackend {
        tools: vec!["troupe_memory_*".into()],
        ..LlmBackend::to(server.url(), "m")
    };
    let mut llm = started(s, None, carried).await;
    let out = llm.run(task("t1", json!("go"))).await.unwrap();
    assert_eq!(out["content"], "done");
    assert_eq!((out["steps"].clone(), out["toolCalls"].clone()), (json!(4), json!(3)));
    assert_eq!(
        out["usage"],
        json!({"promptTokens": 50, "completionTokens": 18, "totalTokens": 68})
    );
    // Only the well-formed call of an offered tool reached the node.
    assert_eq!(kept.lock().unwrap().len(), 1, "{:?}", kept.lock().unwrap());
    let bodies = server.bodies();
    assert_eq!(bodies.len(), 4);
    assert_eq!(bodies[0]["tools"].as_array().unwrap().len(), 2);
    let second = bodies[1]["messages"].as_array().unwrap();
    assert_eq!(second[1]["tool_calls"][0]["id"], "call_1");
    assert_eq!(second[2]["role"], "tool");
    assert_eq!(second[2]["tool_call_id"], "call_1");
    assert_eq!(second[2]["content"], r#"{"value":"ship it","version":3}"#);
    // Bad arguments and an unknown tool come back as results the model can read.
    let last = bodies[3]["messages"].as_array().unwrap();
    let results: Vec<_> = last
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert!(results[1].contains("not valid JSON"), "{results:?}");
    assert!(results[2].contains("no tool named \"launch_missiles\""), "{results:?}");
}

#[tokio::test]
async fn the_anthropic_dialect_sends_its_headers_and_gives_every_tool_use_its_result() {
    let two_calls = sse(
        &[
            json!({"type": "message_start", "message": {"model": "claude-x", "usage": {"input_tokens": 5, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_a", "name": "troupe_memory_get", "input": {}}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"key\":\"a\"}"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_b", "name": "troupe_memory_get", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"key\":\"b\"}"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
            json!({"type": "message_stop"}),
        ],
        false,
    );
    let answer = sse(
        &[
            json!({"type": "message_start", "message": {"model": "claude-x", "usage": {"input_tokens": 30, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "a and b"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}}),
            json!({"type": "message_stop"}),
        ],
        false,
    );
    let server = Scripted::start(vec![two_calls, answer]).await;
    let (carried, _) = errands(|what| match what {
        ErrandKind::Memory(crate::agent::protocol::MemoryOp::Get { key }) if key == "a" => Ok(json!("A")),
        _ => Err("NOT_FOUND: no key b".into()),
    });
    let s = LlmBackend {
        dialect: Dialect::Anthropic,
        stream: true,
        max_tokens: Some(100),
        tools: vec!["troupe_*".into()],
        ..LlmBackend::to(server.url(), "claude-x")
    };
    let mut llm = started(s, None, carried).await;
    let out = llm.run(task("t2", json!("look"))).await.unwrap();
    assert_eq!(out["content"], "a and b");
    assert_eq!(out["usage"]["totalTokens"], 5 + 9 + 30 + 4);
    let seen = server.seen.lock().unwrap().clone();
    assert!(seen[0].0.starts_with("post /v1/messages"), "{}", seen[0].0);
    assert!(seen[0].0.contains("anthropic-version: 2023-06-01"), "{}", seen[0].0);
    let messages = seen[1].1["messages"].as_array().unwrap().clone();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert_eq!(messages[1]["content"][1]["input"], json!({"key": "b"}));
    // Both results in one user message, the failed one marked as an error.
    assert_eq!(
        messages[2],
        json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_a", "content": "A", "is_error": false},
            {"type": "tool_result", "tool_use_id": "toolu_b", "content": "NOT_FOUND: no key b", "is_error": true},
        ]})
    );
}

#[tokio::test]
async fn a_loop_that_starts_again_goes_on_after_its_last_committed_step() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
    let server = Scripted::start(vec![
        openai_call("call_1", "troupe_submit_task", r#"{"capability":"echo","payload":1}"#),
        openai_answer("the echo said 1"),
    ])
    .await;
    // The first attempt's tool call never returns: the attempt is dropped there, as a
    // kill of its node would stop it, with the model's reply committed.
    let (reached, held) = tokio::sync::oneshot::channel::<()>();
    let keys: Arc<Mutex<Vec<String>>> = Arc::default();
    let hang: Errands = {
        let keys = keys.clone();
        let reached = Arc::new(Mutex::new(Some(reached)));
        Arc::new(move |what| {
            if let ErrandKind::Submit { key, .. } = &what {
                keys.lock().unwrap().push(key.clone());
            }
            let reached = reached.lock().unwrap().take();
            Box::pin(async move {
                drop(reached);
                std::future::pending::<()>().await;
                Ok(Value::Null)
            })
        })
    };
    let s = LlmBackend {
        tools: vec!["troupe_submit_task".into()],
        ..LlmBackend::to(server.url(), "m")
    };
    let mut first = started(s.clone(), Some(store.clone()), hang).await;
    let attempt = tokio::spawn(first.run(task("t3", json!("delegate"))));
    let _ = held.await;
    attempt.abort();
    assert_eq!(server.bodies().len(), 1);
    // The next attempt (on this node or another) reads the committed reply back: the
    // model is not asked again for it, and the call is made again with the same key.
    let (carried, _) = errands(|_| Ok(json!(1)));
    let keys_then = keys.clone();
    let counting: Errands = Arc::new(move |what| {
        if let ErrandKind::Submit { key, .. } = &what {
            keys_then.lock().unwrap().push(key.clone());
        }
        carried(what)
    });
    let mut second = started(s, Some(store.clone()), counting).await;
    let out = second
        .run(Assignment {
            attempt: 2,
            ..task("t3", json!("delegate"))
        })
        .await
        .unwrap();
    assert_eq!(out["content"], "the echo said 1");
    assert_eq!(out["steps"], 2);
    assert_eq!(server.bodies().len(), 2, "a committed model call was made again");
    assert_eq!(*keys.lock().unwrap(), ["t3/1/call_1", "t3/1/call_1"]);
    // Three steps committed, each with its event.
    let steps = store.events_after(0, 100).await.unwrap();
    let kinds: Vec<_> = steps
        .iter()
        .filter(|e| e.kind == "TASK_STEP")
        .map(|e| e.data["kind"].clone())
        .collect();
    assert_eq!(kinds, [json!("reply"), json!("toolResult"), json!("reply")]);
    // A third attempt finds the answer committed and asks nobody anything.
    let (idle, asked) = errands(|_| Ok(Value::Null));
    let mut third = started(
        LlmBackend {
            tools: vec!["troupe_submit_task".into()],
            ..LlmBackend::to(server.url(), "m")
        },
        Some(store),
        idle,
    )
    .await;
    assert_eq!(
        third.run(task("t3", json!("delegate"))).await.unwrap()["content"],
        "the echo said 1"
    );
    assert_eq!((server.bodies().len(), asked.lock().unwrap().len()), (2, 0));
}

#[tokio::test]
async fn max_steps_stops_the_loop_with_every_call_answered() {
    let server = Scripted::start(
        (0..5)
            .map(|i| openai_call(&format!("call_{i}"), "troupe_memory_get", r#"{"key":"k"}"#))
            .collect(),
    )
    .await;
    let (carried, kept) = errands(|_| Ok(json!("v")));
    let s = LlmBackend {
        max_steps: 3,
        tools: vec!["troupe_memory_get".into()],
        ..LlmBackend::to(server.url(), "m")
    };
    let mut llm = started(s, None, carried).await;
    let why = llm.run(task("t4", json!("loop"))).await.unwrap_err();
    assert!(why.starts_with("MAX_STEPS"), "{why}");
    assert_eq!(server.bodies().len(), 3);
    assert_eq!(kept.lock().unwrap().len(), 3);
}

#[test]
fn retry_after_is_seconds_capped_and_dates_are_not_used() {
    assert_eq!(retry_after("2"), Some(Duration::from_secs(2)));
    assert_eq!(retry_after("0.5"), Some(Duration::from_millis(500)));
    assert_eq!(retry_after("120"), Some(MAX_RETRY_AFTER));
    assert_eq!(retry_after("1e20"), Some(MAX_RETRY_AFTER));
    assert_eq!(retry_after("1e308"), Some(MAX_RETRY_AFTER));
    assert_eq!(retry_after("inf"), None);
    assert_eq!(retry_after("-1"), None);
    assert_eq!(retry_after("Wed, 21 Oct 2026 07:28:00 GMT"), None);
    assert_eq!(backoff(1), Duration::from_millis(500));
    assert_eq!(backoff(20), Duration::from_secs(30));
}

#[tokio::test]
async fn a_key_the_node_does_not_allow_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "sekrit").unwrap();
    let key = crate::agent::spec::SecretRef::File(key.to_string_lossy().into_owned());
    let with = |secrets: Secrets| {
        Llm::new(
            LlmBackend {
                api_key: Some(key.clone()),
                ..spec(false)
            },
            Arc::new(secrets),
        )
    };
    let why = with(Secrets::default()).start(Link::detached()).await.unwrap_err();
    assert!(why.contains("secret_dirs"), "{why}");
    let why = with(Secrets::new(vec![], vec![dir.path().into()], vec![dir.path().into()]))
        .start(Link::detached())
        .await
        .unwrap_err();
    assert!(why.contains("the node's own secret"), "{why}");
    let mut allowed = with(Secrets::new(vec![], vec![dir.path().into()], vec![]));
    allowed.start(Link::detached()).await.unwrap();
    assert_eq!(allowed.key.as_deref(), Some("sekrit"));
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let server = Scripted::start(vec![
        // (Its header rides on the status line.)
        ("429 Too Many Requests\r\nRetry-After: 0", "text/plain", "busy".into()),
        openai_answer("ok"),
    ])
    .await;
    let (carried, _) = errands(|_| Ok(Value::Null));
    let mut llm = started(
        LlmBackend {
            base_url: format!("{}/", server.url()),
            ..spec(false)
        },
        None,
        carried,
    )
    .await;
    let out = llm.run(task("t", json!("hi"))).await.unwrap();
    assert_eq!(out["content"], "ok");
    assert_eq!(server.bodies().len(), 2);
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

#[tokio::test]
async fn a_task_budget_stops_the_loop_before_the_model_call_that_would_pass_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
    // Each call takes 15 tokens; the task may take 20: the third call is never made.
    let server = Scripted::start(
        (0..5)
            .map(|i| openai_call(&format!("call_{i}"), "troupe_memory_get", r#"{"key":"k"}"#))
            .collect(),
    )
    .await;
    submitted(
        &store,
        "t5",
        Some(Budget {
            max_tokens: Some(20),
            max_cost_usd: None,
        }),
    )
    .await;
    let (carried, kept) = errands(|_| Ok(json!("v")));
    let s = LlmBackend {
        tools: vec!["troupe_*".into()],
        ..LlmBackend::to(server.url(), "m")
    };
    let mut llm = started(s, Some(store.clone()), carried).await;
    let why = llm.run(task("t5", json!("go"))).await.unwrap_err();
    assert!(
        why.starts_with("BUDGET_EXCEEDED: the task's maxTokens is 20 and 30 was spent"),
        "{why}"
    );
    assert!(crate::task::is_final(&why));
    // Both calls the model made were answered before the stop.
    assert_eq!((server.bodies().len(), kept.lock().unwrap().len()), (2, 2));
    let events = store.events_after(0, 100).await.unwrap();
    let stop = events
        .iter()
        .find(|e| e.kind == "BUDGET_EXCEEDED")
        .expect("an event with the figures");
    assert_eq!(stop.data["spent"], 30.0);
    assert_eq!(stop.data["task"]["inputTokens"], 20);
}

#[tokio::test]
async fn an_agents_cost_budget_counts_what_its_earlier_tasks_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
    let server = Scripted::start(vec![
        openai_call("call_1", "troupe_memory_get", r#"{"key":"k"}"#),
        openai_answer("first"),
    ])
    .await;
    // 10 input tokens at 100 $ a million, 5 output at 200: 0.002 $ a call; the first
    // task's answer (20 in, 3 out) 0.0026 $. The agent may spend 0.004 $ in all.
    let prices: Prices = [(
        "m".to_owned(),
        troupe_runtime::config::Price {
            input: 100.0,
            output: 200.0,
        },
    )]
    .into();
    let s = LlmBackend {
        tools: vec!["troupe_*".into()],
        budget: crate::agent::AgentBudget {
            max_cost_usd: Some(0.004),
            ..Default::default()
        },
        ..LlmBackend::to(server.url(), "m")
    };
    let (carried, _) = errands(|_| Ok(json!("v")));
    let mut llm = started_with(s.clone(), Some(store.clone()), prices.clone(), carried.clone()).await;
    let out = llm.run(task("t6", json!("go"))).await.unwrap();
    assert!((out["costUsd"].as_f64().unwrap() - 0.0046).abs() < 1e-9, "{out}");
    // A later task of the agent (even after a restart: a new backend) finds it spent.
    let mut again = started_with(s, Some(store.clone()), prices, carried).await;
    let why = again.run(task("t7", json!("go"))).await.unwrap_err();
    assert!(
        why.starts_with("BUDGET_EXCEEDED: the agent's maxCostUsd is 0.004"),
        "{why}"
    );
    assert_eq!(server.bodies().len(), 2, "no model call for the second task");
    let today = journal::day(troupe_runtime::clock::now());
    let (all, on_day) = journal::spent(&store, "agent-1", &today).await.unwrap();
    assert_eq!((all.tokens(), on_day.tokens()), (38, 38));
}

/// Errands that count their calls and answer `answer`.
fn counted(answer: Value) -> (Errands, Arc<Mutex<Vec<String>>>) {
    errands(move |_| Ok(answer.clone()))
}

#[tokio::test]
async fn a_held_call_waits_for_an_operator_even_across_a_restart_and_runs_once_approved() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
    let server = Scripted::start(vec![
        openai_call("call_1", "troupe_memory_set", r#"{"key":"k","value":1}"#),
        openai_answer("done"),
    ])
    .await;
    let s = LlmBackend {
        tools: vec!["troupe_*".into()],
        approval: crate::agent::ApprovalPolicy {
            tools: vec!["troupe_memory_set".into()],
            ..Default::default()
        },
        ..LlmBackend::to(server.url(), "m")
    };
    let mut live = store.live();
    let (carried, ran) = counted(json!({"version": 1}));
    let mut first = started(s.clone(), Some(store.clone()), carried.clone()).await;
    let attempt = tokio::spawn(first.run(task("t8", json!("go"))));
    // Asked for, committed: then the attempt stops, as a restart would stop it.
    loop {
        let e = live.recv().await.unwrap();
        if e.kind == "APPROVAL_REQUESTED" {
            assert_eq!(e.subject.as_deref(), Some("t8"));
            break;
        }
    }
    attempt.abort();
    let pending = approvals::list(&store, true).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].id.as_str(), pending[0].tool.as_str()),
        ("t8/1/call_1", "troupe_memory_set")
    );
    assert!(pending[0].reason.contains("troupe_memory_set"), "{}", pending[0].reason);
    // The next attempt waits for the same call; an operator approves it.
    let mut second = started(s, Some(store.clone()), carried).await;
    let resumed = tokio::spawn(second.run(Assignment {
        attempt: 2,
        ..task("t8", json!("go"))
    }));
    let approved = approvals::decide(&store, "t8/1/call_1", true, Some("fine".into()), "tok-1")
        .await
        .unwrap();
    assert_eq!(approved.decision.as_ref().map(|d| d.by.as_str()), Some("tok-1"));
    assert_eq!(resumed.await.unwrap().unwrap()["content"], "done");
    assert_eq!(
        ran.lock().unwrap().len(),
        1,
        "the held call ran once, after its approval"
    );
    assert_eq!(server.bodies().len(), 2, "no model call was made again");
    assert!(approvals::list(&store, true).await.unwrap().is_empty());
    // Decided once: the same decision again answers it, the other is refused.
    assert!(approvals::decide(&store, "t8/1/call_1", true, None, "tok-2")
        .await
        .is_ok());
    assert!(matches!(
        approvals::decide(&store, "t8/1/call_1", false, None, "tok-2").await,
        Err(approvals::Refused::Decided(_))
    ));
    assert!(matches!(
        approvals::decide(&store, "nope", true, None, "tok-2").await,
        Err(approvals::Refused::NotFound(_))
    ));
}

#[tokio::test]
async fn an_undecided_call_is_rejected_at_its_timeout_which_the_attempts_time_does_not_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
    let server = Scripted::start(vec![
        openai_call("call_1", "troupe_memory_set", r#"{"key":"k","value":1}"#),
        openai_answer("gave up on it"),
    ])
    .await;
    let s = LlmBackend {
        tools: vec!["troupe_*".into()],
        approval: crate::agent::ApprovalPolicy {
            tools: vec!["troupe_memory_*".into()],
            timeout_ms: Some(1_500),
            ..Default::default()
        },
        ..LlmBackend::to(server.url(), "m")
    };
    let (carried, ran) = counted(json!({"version": 1}));
    let mut llm = started(s, Some(store.clone()), carried).await;
    // The attempt may take 1 s; the wait for a decision takes 1.5 s and is not counted.
    let out = llm
        .run(Assignment {
            timeout_ms: Some(1_000),
            ..task("t9", json!("go"))
        })
        .await
        .unwrap();
    assert_eq!(out["content"], "gave up on it");
    assert!(ran.lock().unwrap().is_empty(), "a rejected call never runs");
    let result = &server.bodies()[1]["messages"][2];
    assert_eq!(result["role"], "tool");
    assert!(
        result["content"]
            .as_str()
            .unwrap()
            .starts_with("rejected by the approval's timeout"),
        "{result}"
    );
    let all = approvals::list(&store, false).await.unwrap();
    assert_eq!(
        all[0].decision.as_ref().map(|d| (d.approved, d.by.as_str())),
        Some((false, "timeout"))
    );
}

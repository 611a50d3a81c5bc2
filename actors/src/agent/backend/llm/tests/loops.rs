//! The loop against a scripted model: tool calls and their results, both dialects end to
//! end, a loop that starts again, max steps, keys and retries.

use super::*;

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
    let keys: Arc<Mutex<Vec<String>>> = Arc::default();
    let (hang, held) = hanging({
        let keys = keys.clone();
        move |what| {
            if let ErrandKind::Submit { key, .. } = what {
                keys.lock().unwrap().push(key.clone());
            }
        }
    });
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

/// One task's run against a server answering `script` in turn: its outcome, and how many
/// calls the server got.
async fn run_against(script: Vec<(&'static str, &'static str, String)>) -> (Result<Value, String>, usize) {
    let server = Scripted::start(script).await;
    let (carried, _) = errands(|_| Ok(Value::Null));
    let spec = LlmBackend {
        base_url: format!("{}/", server.url()),
        ..spec(false)
    };
    let mut llm = started(spec, None, carried).await;
    let out = llm.run(task("t", json!("hi"))).await;
    (out, server.bodies().len())
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let (out, calls) = run_against(vec![
        // (Its header rides on the status line.)
        ("429 Too Many Requests\r\nRetry-After: 0", "text/plain", "busy".into()),
        openai_answer("ok"),
    ])
    .await;
    assert_eq!(out.unwrap()["content"], "ok");
    assert_eq!(calls, 2);
}

#[tokio::test]
async fn a_call_the_api_refuses_is_not_asked_again_and_ends_the_task() {
    let refused = r#"{"error":{"message":"invalid key"}}"#;
    let (out, calls) = run_against(vec![
        ("401 Unauthorized", "application/json", refused.into()),
        openai_answer("never asked"),
    ])
    .await;
    let why = out.unwrap_err();
    assert!(
        why.starts_with("MODEL_REFUSED: HTTP 401") && why.contains("invalid key"),
        "{why}"
    );
    // Final: the scheduler fails the task at once rather than spend its other attempts.
    assert!(crate::task::is_final(&why));
    assert_eq!(calls, 1);
}

/// A span as recorded: its id, its name, its attributes as text.
type Recorded = (u64, String, std::collections::BTreeMap<String, String>);

/// The spans a loop opens, in order.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Recorded>>>);

impl Spans {
    fn record(&self, id: &tracing::span::Id, values: &dyn Fn(&mut dyn tracing::field::Visit), name: Option<&str>) {
        struct Fields<'a>(&'a mut std::collections::BTreeMap<String, String>);
        impl tracing::field::Visit for Fields<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.insert(
                    field.name().to_owned(),
                    format!("{value:?}").trim_matches('"').to_owned(),
                );
            }
        }
        let mut spans = self.0.lock().unwrap();
        if let Some(name) = name {
            spans.push((id.into_u64(), name.to_owned(), Default::default()));
        }
        // A registry reuses an id once its span closed: the last one opened is the one.
        if let Some(span) = spans.iter_mut().rev().find(|(i, _, _)| *i == id.into_u64()) {
            values(&mut Fields(&mut span.2));
        }
    }
}

impl<S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>> tracing_subscriber::Layer<S>
    for Spans
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.record(id, &|v| attrs.record(v), Some(attrs.metadata().name()));
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.record(id, &|v| values.record(v), None);
    }
}

#[test]
fn model_and_tool_calls_are_spans_named_and_attributed_as_the_genai_conventions_say() {
    use tracing_subscriber::layer::SubscriberExt;
    let spans = Spans::default();
    // While a single subscriber is registered, tracing asks only the calling thread's
    // whether it wants a callsite: another test's thread meeting the execute_tool callsite
    // first (with no subscriber) cached that nobody does, and the span went missing (twice
    // in this session's gates). A second, silent one, registered first, has every
    // registered subscriber asked.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = Scripted::start(vec![
            openai_call("call_1", "troupe_memory_get", r#"{"key":"plan"}"#),
            openai_answer("done"),
        ])
        .await;
        let (carried, _) = errands(|_| Ok(json!({"value": 1})));
        let s = LlmBackend {
            tools: vec!["troupe_memory_*".into()],
            ..LlmBackend::to(server.url(), "m")
        };
        let mut llm = started(s, None, carried).await;
        llm.run(task("t1", json!("go"))).await.unwrap();
    });
    let spans = spans.0.lock().unwrap().clone();
    let named = |name: &str| {
        spans
            .iter()
            .filter(|(_, n, _)| n == name)
            .map(|(_, _, f)| f.clone())
            .collect::<Vec<_>>()
    };
    let chats = named("chat");
    assert_eq!(chats.len(), 2, "{spans:?}");
    let first = &chats[0];
    for (key, value) in [
        ("otel.name", "chat m"),
        ("otel.kind", "client"),
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "openai"),
        ("gen_ai.request.model", "m"),
        ("gen_ai.response.finish_reasons", "tool_calls"),
        ("troupe.task.id", "t1"),
        ("troupe.step", "1"),
    ] {
        assert_eq!(first.get(key).map(String::as_str), Some(value), "{key} in {first:?}");
    }
    assert!(
        first.contains_key("gen_ai.usage.input_tokens") && first.contains_key("gen_ai.usage.output_tokens"),
        "{first:?}"
    );
    let tools = named("execute_tool");
    assert_eq!(tools.len(), 1, "{spans:?}");
    assert_eq!(
        tools[0].get("otel.name").map(String::as_str),
        Some("execute_tool troupe_memory_get")
    );
    assert_eq!(tools[0].get("gen_ai.tool.call.id").map(String::as_str), Some("call_1"));
}

#[tokio::test]
async fn memory_keys_are_read_into_the_system_prompt_once_and_kept_for_a_resume() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
    submitted(&store, "t1", None).await;
    let server = Scripted::start(vec![openai_answer("ok"), openai_answer("again")]).await;
    // "plan" is set; "missing" is not (no entry: left out of the prompt).
    let (carried, kept) = errands(|e| match e {
        ErrandKind::Memory(crate::agent::protocol::MemoryOp::Get { key }) if key == "plan" => {
            Ok(json!({"value": {"goal": "ship"}, "version": 2}))
        }
        _ => Ok(Value::Null),
    });
    let s = LlmBackend {
        system_prompt: Some("be brief".into()),
        memory_keys: vec!["plan".into(), "missing".into()],
        ..LlmBackend::to(server.url(), "m")
    };
    let mut llm = started(s.clone(), Some(store.clone()), carried).await;
    llm.run(task("t1", json!("go"))).await.unwrap();
    let system = server.bodies()[0]["messages"][0]["content"].clone();
    assert_eq!(system, "be brief\n\nSwarm memory:\nplan: {\"goal\":\"ship\"}");
    assert_eq!(kept.lock().unwrap().len(), 2);
    // The same task run again (its journal kept) reads no memory: it has its context.
    let (carried, kept) = errands(|_| Ok(json!({"value": "changed", "version": 3})));
    let mut again = started(s, Some(store), carried).await;
    again.run(task("t1", json!("go"))).await.unwrap();
    assert!(kept.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_swarm_member_reads_its_swarms_memory_from_the_replica_without_an_errand() {
    use crate::swarm::memory::{self, Write};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
    let swarm = troupe_runtime::codec::encode(&crate::swarm::SwarmSpec::example("sw1")).unwrap();
    store
        .write(troupe_runtime::store::Batch::new().put(crate::tables::SWARMS, "sw1", swarm))
        .await
        .unwrap();
    let plan = Write::Set {
        value: json!({"ship": true}),
        ttl_ms: None,
    };
    memory::write(&store, "sw1", "plan", plan, None, 1 << 20).await.unwrap();
    let server = Scripted::start(vec![
        openai_call("call_1", "troupe_memory_get", r#"{"key":"plan"}"#),
        openai_call("call_2", "troupe_memory_get", r#"{"key":"absent"}"#),
        openai_answer("done"),
    ])
    .await;
    let (carried, asked) = errands(|_| Err("no errand was expected".into()));
    let lent = Lent {
        store: Some(store.clone()),
        ..Lent::default()
    };
    let s = LlmBackend {
        tools: vec!["troupe_memory_get".into()],
        ..LlmBackend::to(server.url(), "m")
    };
    let mut llm = Llm::new(s, Default::default())
        .for_agent("agent-1", &lent)
        .grouped(Some("sw1"), "default")
        .carrying(carried);
    llm.start(Link::detached()).await.unwrap();
    assert_eq!(llm.run(task("t", json!("go"))).await.unwrap()["content"], "done");
    assert!(asked.lock().unwrap().is_empty(), "{:?}", asked.lock().unwrap());
    let last = server.bodies()[2]["messages"].as_array().unwrap().clone();
    let results: Vec<Value> = last
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| serde_json::from_str(m["content"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(results[0]["value"], json!({"ship": true}));
    assert_eq!(
        (results[0]["key"].clone(), results[0]["version"].clone()),
        (json!("plan"), json!(1))
    );
    assert_eq!(results[1], Value::Null, "a key not set reads null");
}

#[tokio::test]
async fn a_streamed_call_answered_whole_is_read_as_json_and_one_with_no_events_fails() {
    // A server that answers a streamed call with JSON (many do when they cannot stream tool
    // calls): the call and the answer are read as such, not as an empty stream.
    let server = Scripted::start(vec![
        openai_call("call_1", "troupe_memory_get", r#"{"key":"plan"}"#),
        openai_answer("done"),
    ])
    .await;
    let (carried, kept) = errands(|_| Ok(json!({"value": "ship it", "version": 3})));
    let s = LlmBackend {
        tools: vec!["troupe_memory_*".into()],
        stream: true,
        ..LlmBackend::to(server.url(), "m")
    };
    let mut llm = started(s, None, carried).await;
    let out = llm.run(task("t1", json!("go"))).await.unwrap();
    assert_eq!(out["content"], "done");
    assert_eq!((out["steps"].clone(), out["toolCalls"].clone()), (json!(2), json!(1)));
    assert_eq!(kept.lock().unwrap().len(), 1);
    // A body that says it streams but carries no event is no reply: the attempt fails,
    // it does not succeed with nothing.
    let empty = Scripted::start(vec![("200 OK", "text/event-stream", "{\"not\": \"sse\"}".into())]).await;
    let s = LlmBackend {
        stream: true,
        max_retries: 0,
        ..LlmBackend::to(empty.url(), "m")
    };
    let mut llm = started(s, None, counted(Value::Null).0).await;
    let why = llm.run(task("t2", json!("go"))).await.unwrap_err();
    assert!(why.contains("no server-sent events"), "{why}");
}

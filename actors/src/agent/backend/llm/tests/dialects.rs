//! Requests and replies in both dialects, tool names, and the retry header.

use super::*;

#[test]
fn payloads_open_the_conversation_after_the_system_prompt() {
    let s = spec(false);
    let (path, body) = request(
        &s,
        &wire::opening(&s, &json!("hi"), Default::default()).unwrap(),
        &[],
        &[],
    );
    assert_eq!(path, "/v1/chat/completions");
    assert_eq!(
        body["messages"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    );
    assert_eq!(body["max_tokens"], 10);
    assert!(body.get("stream").is_none() && body.get("tools").is_none());
    let s = spec(true);
    let (_, body) = request(
        &s,
        &wire::opening(&s, &json!({"prompt": "p"}), Default::default()).unwrap(),
        &[],
        &[],
    );
    assert_eq!(body["messages"][1]["content"], "p");
    assert_eq!(body["stream_options"]["include_usage"], true);
    let listed = json!({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]});
    let (_, body) = request(&s, &wire::opening(&s, &listed, Default::default()).unwrap(), &[], &[]);
    assert_eq!(body["messages"][2]["content"], "b");
    assert!(wire::opening(&s, &json!(3), Default::default()).is_err());
    assert!(wire::opening(&s, &json!({"messages": [{"role": 1}]}), Default::default()).is_err());
    // A role neither API knows is refused here, not sent.
    let wizard = json!({"messages": [{"role": "wizard", "content": "hi"}]});
    let refused = wire::opening(&s, &wizard, Default::default()).map(drop).unwrap_err();
    assert!(refused.contains("\"wizard\""), "{refused}");
    // Anthropic: the system prompt (the agent's and the payload's) is its own field.
    let a = LlmBackend {
        dialect: Dialect::Anthropic,
        ..spec(false)
    };
    let listed = json!({"messages": [{"role": "system", "content": "and kind"}, {"role": "user", "content": "q"}]});
    let (path, body) = request(
        &a,
        &wire::opening(&a, &listed, Default::default()).unwrap(),
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
fn a_pattern_no_tool_could_match_is_told_apart() {
    let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let servers = p(&["files", "fs.server"]);
    // Troupe's own, any run, and any name of a server's tools (known only at a task's start).
    for fine in [
        "troupe_*",
        "troupe_memory_?et",
        "*",
        "*_task",
        "files__*",
        "files__read",
        "fil*",
        "fs_server__x",
    ] {
        assert_eq!(tools::matching_nothing(&p(&[fine]), &servers), None, "{fine}");
    }
    // Misspelt, or of a server the agent does not name.
    for wrong in ["troupe_memroy_get", "troupe_submit_task_x", "fiels__*", "calc__charge"] {
        assert_eq!(
            tools::matching_nothing(&p(&["troupe_*", wrong]), &servers).map(String::as_str),
            Some(wrong)
        );
    }
    assert_eq!(
        tools::matching_nothing(&p(&["files__*"]), &[]).map(String::as_str),
        Some("files__*")
    );
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

/// A request with its body read as JSON.
fn request(
    spec: &LlmBackend,
    opening: &wire::Opening,
    steps: &[Record],
    tools: &[wire::Tool],
) -> (&'static str, Value) {
    let (path, body) = wire::request(spec, opening, steps, tools);
    (path, body_of(body))
}

/// A body as JSON, to compare.
fn body_of(body: impl AsRef<[u8]>) -> Value {
    serde_json::from_slice(body.as_ref()).expect("a JSON body")
}

/// Both dialects' bodies for a conversation with replies, calls (one with arguments that
/// are not an object) and results, pinned whole.
#[test]
fn a_conversation_with_calls_and_results_is_sent_whole_in_both_dialects() {
    let at = troupe_runtime::clock::now();
    let call = |id: &str, arguments: &str| journal::Call {
        id: id.into(),
        name: "troupe_memory_get".into(),
        arguments: arguments.into(),
    };
    let reply = |step, text: &str, calls| Record::Reply {
        step,
        text: text.into(),
        calls,
        tokens: Tokens::default(),
        cost_usd: 0.0,
        model: "m".into(),
        finish: None,
        latency_ms: 1,
        at,
    };
    let result = |step, call: &str, content: &str, error| Record::Result {
        step,
        call: call.into(),
        content: content.into(),
        error,
        at,
    };
    let steps = [
        reply(1, "", vec![call("c1", r#"{"key":"a"}"#), call("c2", "not json")]),
        result(1, "c1", "A", false),
        result(1, "c2", "bad arguments", true),
        reply(2, "thinking", vec![call("c3", r#"{"key":"b"}"#)]),
        result(2, "c3", "B", false),
        reply(3, "done", vec![]),
    ];
    let offered = tools::offered(&["troupe_memory_get".into()]);
    let s = spec(true);
    let opening = wire::opening(&s, &json!("hi"), Default::default()).unwrap();
    let (_, body) = wire::request(&s, &opening, &steps, &offered);
    let schema = offered[0].parameters.clone();
    let description = offered[0].description.clone();
    let openai_call = |id: &str, arguments: &str| json!({"id": id, "type": "function", "function": {"name": "troupe_memory_get", "arguments": arguments}});
    assert_eq!(
        body_of(body),
        json!({
            "model": "m", "temperature": 0.5, "max_tokens": 10, "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": null, "tool_calls": [openai_call("c1", r#"{"key":"a"}"#), openai_call("c2", "not json")]},
                {"role": "tool", "tool_call_id": "c1", "content": "A"},
                {"role": "tool", "tool_call_id": "c2", "content": "bad arguments"},
                {"role": "assistant", "content": "thinking", "tool_calls": [openai_call("c3", r#"{"key":"b"}"#)]},
                {"role": "tool", "tool_call_id": "c3", "content": "B"},
                {"role": "assistant", "content": "done"},
            ],
            "tools": [{"type": "function", "function": {"name": "troupe_memory_get", "description": description, "parameters": schema}}],
        })
    );
    let a = LlmBackend {
        dialect: Dialect::Anthropic,
        ..spec(false)
    };
    let opening = wire::opening(&a, &json!("hi"), Default::default()).unwrap();
    let (_, body) = wire::request(&a, &opening, &steps, &offered);
    let tool_use =
        |id: &str, input: Value| json!({"type": "tool_use", "id": id, "name": "troupe_memory_get", "input": input});
    let tool_result = |id: &str, content: &str, error: bool| json!({"type": "tool_result", "tool_use_id": id, "content": content, "is_error": error});
    assert_eq!(
        body_of(body),
        json!({
            "model": "m", "temperature": 0.5, "max_tokens": 10, "system": "be brief",
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [tool_use("c1", json!({"key": "a"})), tool_use("c2", json!({}))]},
                {"role": "user", "content": [tool_result("c1", "A", false), tool_result("c2", "bad arguments", true)]},
                {"role": "assistant", "content": [{"type": "text", "text": "thinking"}, tool_use("c3", json!({"key": "b"}))]},
                {"role": "user", "content": [tool_result("c3", "B", false)]},
                {"role": "assistant", "content": [{"type": "text", "text": "done"}]},
            ],
            "tools": [{"name": "troupe_memory_get", "description": description, "input_schema": schema}],
        })
    );
}

use super::*;

fn spec(stream: bool) -> LlmBackend {
    LlmBackend {
        base_url: "http://127.0.0.1:1".into(),
        model: "m".into(),
        system_prompt: Some("be brief".into()),
        api_key: None,
        temperature: Some(0.5),
        max_tokens: Some(10),
        stream,
        timeout_ms: None,
        max_retries: 2,
    }
}

#[test]
fn payloads_become_messages_after_the_system_prompt() {
    let body = request_body(&spec(false), &json!("hi")).unwrap();
    assert_eq!(
        body["messages"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    );
    assert_eq!(body["max_tokens"], 10);
    assert!(body.get("stream").is_none());
    let body = request_body(&spec(true), &json!({"prompt": "p"})).unwrap();
    assert_eq!(body["messages"][1]["content"], "p");
    assert_eq!(body["stream_options"]["include_usage"], true);
    let listed = json!({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]});
    assert_eq!(
        request_body(&spec(false), &listed).unwrap()["messages"][2]["content"],
        "b"
    );
    assert!(request_body(&spec(false), &json!(3)).is_err());
    assert!(request_body(&spec(false), &json!({"messages": [{"role": 1}]})).is_err());
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

#[test]
fn replies_and_streams_give_content_and_usage() {
    let reply = br#"{"model":"x","choices":[{"message":{"content":"yes"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
    let out = parse_reply(reply, "m").unwrap();
    assert_eq!(out["content"], "yes");
    assert_eq!(
        out["usage"],
        json!({"promptTokens": 3, "completionTokens": 1, "totalTokens": 4})
    );
    let bare = parse_reply(br#"{"choices":[{"message":{"content":null}}]}"#, "m").unwrap();
    assert_eq!(
        (bare["content"].clone(), bare["model"].clone(), bare["usage"].clone()),
        (json!(""), json!("m"), Value::Null)
    );
    let stream = "data: {\"model\":\"x\",\"choices\":[{\"delta\":{\"content\":\"he\"}}]}\n\n: comment\n\
                  data: {\"choices\":[{\"delta\":{\"content\":\"llo\"},\"finish_reason\":\"stop\"}]}\n\n\
                  data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\n\
                  data: [DONE]\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"ignored\"}}]}\n";
    let out = parse_stream(stream.as_bytes(), "m").unwrap();
    assert_eq!(out["content"], "hello");
    assert_eq!(out["finishReason"], "stop");
    assert_eq!(out["usage"]["totalTokens"], 3);
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let answers = [
            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 0\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy"
                .to_string(),
            {
                let body = r#"{"choices":[{"message":{"content":"ok"},"finish_reason":"stop"}]}"#;
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
            },
        ];
        for answer in answers {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 65536];
            let mut seen = Vec::new();
            // Headers, then the body its Content-Length announces.
            loop {
                let n = socket.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen).to_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if seen.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            socket.write_all(answer.as_bytes()).await.unwrap();
        }
    });
    let mut llm = Llm::new(
        LlmBackend {
            base_url: format!("http://127.0.0.1:{port}/"),
            ..spec(false)
        },
        Default::default(),
    );
    llm.start(Link::detached()).await.unwrap();
    let task = Assignment {
        task_id: "t".into(),
        attempt: 1,
        payload: json!("hi"),
        timeout_ms: Some(10_000),
    };
    let out = llm.run(task).await.unwrap();
    assert_eq!(out["content"], "ok");
    server.await.unwrap();
}

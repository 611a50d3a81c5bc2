//! Tool calls held for an operator.

use super::*;

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

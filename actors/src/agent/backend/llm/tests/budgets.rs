//! Budgets: a task's and an agent's, from the usage committed.

use super::*;

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
    // The stop comes after every step it counted, the last one held until then included.
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.last(), Some(&"BUDGET_EXCEEDED"), "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "TASK_STEP").count(), 4, "{kinds:?}");
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

#[tokio::test]
async fn a_swarms_budget_counts_what_all_its_members_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
    let swarm = crate::swarm::SwarmSpec {
        budget: Some(Budget {
            max_tokens: Some(25),
            max_cost_usd: None,
        }),
        ..crate::swarm::SwarmSpec::example("sw1")
    };
    let bytes = troupe_runtime::codec::encode(&swarm).unwrap();
    store
        .write(troupe_runtime::store::Batch::new().put(crate::tables::SWARMS, "sw1", bytes))
        .await
        .unwrap();
    // Each answer takes 23 tokens: one member's task, then another's, pass 25 together.
    let server = Scripted::start(vec![openai_answer("one"), openai_answer("two")]).await;
    let member = |agent: &'static str| {
        let (url, store) = (server.url(), store.clone());
        async move {
            let lent = Lent {
                store: Some(store),
                ..Lent::default()
            };
            let mut llm = Llm::new(LlmBackend::to(url, "m"), Default::default())
                .for_agent(agent, &lent)
                .grouped(Some("sw1"), "research")
                .carrying(errands(|_| Ok(json!(null))).0);
            llm.start(Link::detached()).await.unwrap();
            llm
        }
    };
    for (agent, id) in [("a1", "t1"), ("a2", "t2")] {
        submitted(&store, id, None).await;
        member(agent).await.run(task(id, json!("go"))).await.unwrap();
    }
    submitted(&store, "t3", None).await;
    let why = member("a3").await.run(task("t3", json!("go"))).await.unwrap_err();
    assert!(
        why.starts_with("BUDGET_EXCEEDED: the swarm's maxTokens is 25 and 46 was spent"),
        "{why}"
    );
    // Counted per agent, per swarm and per project.
    let (swarm_spent, _) = spent_by(&store, "swarm:sw1").await.unwrap();
    let (project_spent, _) = spent_by(&store, "project:research").await.unwrap();
    let (one, _) = spent_by(&store, "a1").await.unwrap();
    assert_eq!(
        (swarm_spent.tokens(), project_spent.tokens(), one.tokens()),
        (46, 46, 23)
    );
}

#[tokio::test]
async fn an_agents_budget_counts_the_step_that_only_read_before_the_next_model_call() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
    let server = Scripted::start(vec![
        openai_call("call_1", "troupe_memory_get", r#"{"key":"k"}"#),
        openai_answer("never asked"),
    ])
    .await;
    // The first call takes 15 tokens, the agent's whole budget. Its reply only reads, so it
    // is held with its result; the check before the next call must count it all the same.
    let s = LlmBackend {
        tools: vec!["troupe_memory_get".into()],
        budget: crate::agent::AgentBudget {
            max_tokens: Some(15),
            ..Default::default()
        },
        ..LlmBackend::to(server.url(), "m")
    };
    let (carried, _) = counted(json!("v"));
    let mut llm = started(s, Some(store.clone()), carried).await;
    let why = llm.run(task("t", json!("go"))).await.unwrap_err();
    assert!(
        why.starts_with("BUDGET_EXCEEDED: the agent's maxTokens is 15 and 15 was spent"),
        "{why}"
    );
    assert_eq!(server.bodies().len(), 1);
}

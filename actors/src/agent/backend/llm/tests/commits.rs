//! How a step is committed: a reply whose calls only read goes with their results, in one
//! write, sent while the model is asked again; a reply whose calls act is committed before
//! they run; a loop stopped between a held reply and its results still commits what the
//! model call cost.

use super::*;

/// How many of `task`'s steps are committed in `store`.
async fn committed(store: &Store, task: &str) -> usize {
    Journal::load(Some(store.clone()), "agent-1", task)
        .await
        .unwrap()
        .records()
        .len()
}

/// Each errand's tool, and how many of task `t`'s steps were committed when it ran.
type Seen = Arc<Mutex<Vec<(String, usize)>>>;

/// Errands that answer "v" and keep what they saw.
fn watching(store: &Store) -> (Errands, Seen) {
    let seen: Seen = Arc::default();
    let (kept, store) = (seen.clone(), store.clone());
    let errands: Errands = Arc::new(move |what| {
        let tool = match &what {
            ErrandKind::Memory(crate::agent::protocol::MemoryOp::Get { .. }) => "get",
            ErrandKind::Memory(_) => "set",
            _ => "other",
        };
        let (kept, store) = (kept.clone(), store.clone());
        Box::pin(async move {
            let n = committed(&store, "t").await;
            kept.lock().unwrap().push((tool.to_owned(), n));
            Ok(json!("v"))
        })
    });
    (errands, seen)
}

fn step_kinds(events: &[troupe_runtime::events::Event]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.kind == "TASK_STEP")
        .map(|e| e.data["kind"].clone())
        .collect()
}

#[tokio::test]
async fn a_reply_that_only_reads_is_committed_with_its_results_and_one_that_acts_before_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
    let server = Scripted::start(vec![
        openai_call("call_1", "troupe_memory_get", r#"{"key":"plan"}"#),
        openai_call("call_2", "troupe_memory_set", r#"{"key":"plan","value":2}"#),
        openai_answer("done"),
    ])
    .await;
    let (carried, seen) = watching(&store);
    let s = LlmBackend {
        tools: vec!["troupe_memory_*".into()],
        ..LlmBackend::to(server.url(), "m")
    };
    let mut llm = started(s, Some(store.clone()), carried).await;
    let out = llm.run(task("t", json!("go"))).await.unwrap();
    assert_eq!(out["content"], "done");
    // The read ran before its reply was committed; the write after its reply was, with
    // the first step (reply and result) before it.
    assert_eq!(*seen.lock().unwrap(), [("get".to_owned(), 0), ("set".to_owned(), 3)]);
    // Every record committed in order, each with its event, and the usage of both replies
    // counted.
    assert_eq!(committed(&store, "t").await, 5);
    let events = store.events_after(0, 100).await.unwrap();
    assert_eq!(
        step_kinds(&events),
        [
            json!("reply"),
            json!("toolResult"),
            json!("reply"),
            json!("toolResult"),
            json!("reply")
        ]
    );
    let today = journal::day(troupe_runtime::clock::now());
    let (all, _) = journal::spent(&store, "agent-1", &today).await.unwrap();
    assert_eq!(all.tokens(), 15 + 15 + 23);
}

#[tokio::test]
async fn a_loop_stopped_while_its_reply_is_held_commits_the_reply_and_goes_on_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
    let server = Scripted::start(vec![
        openai_call("call_1", "troupe_memory_get", r#"{"key":"plan"}"#),
        openai_answer("done"),
    ])
    .await;
    // The read never returns: the attempt is stopped there (a cancel aborts it so), with
    // the reply held.
    let (hang, held) = hanging(|_| {});
    let s = LlmBackend {
        tools: vec!["troupe_memory_get".into()],
        ..LlmBackend::to(server.url(), "m")
    };
    let mut first = started(s.clone(), Some(store.clone()), hang).await;
    let attempt = tokio::spawn(first.run(task("t", json!("go"))));
    let _ = held.await;
    attempt.abort();
    // The stopped loop's reply is committed all the same: what it cost is counted.
    tokio::time::timeout(Duration::from_secs(10), async {
        while committed(&store, "t").await < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the held reply was never committed");
    let today = journal::day(troupe_runtime::clock::now());
    assert_eq!(journal::spent(&store, "agent-1", &today).await.unwrap().0.tokens(), 15);
    // The next attempt answers the committed reply's call; the model is not asked for it
    // again.
    let (carried, kept) = counted(json!("v"));
    let mut second = started(s, Some(store.clone()), carried).await;
    let out = second.run(task("t", json!("go"))).await.unwrap();
    assert_eq!(out["content"], "done");
    assert_eq!((server.bodies().len(), kept.lock().unwrap().len()), (2, 1));
    assert_eq!(committed(&store, "t").await, 3);
}

#[tokio::test]
async fn the_next_model_call_is_asked_while_the_step_before_commits_and_taken_once_it_is_durable() {
    use std::sync::mpsc;
    use troupe_runtime::store::{Fault, StoreOptions};
    // The writer waits on `open` before the first write of a step (a reply and its read's
    // result, held together).
    let (open, gate) = mpsc::channel::<()>();
    let gate = Mutex::new(Some(gate));
    let (reached_tx, reached) = mpsc::channel::<()>();
    let reached_tx = Mutex::new(reached_tx);
    let fault: troupe_runtime::store::FaultHook = Arc::new(move |batch: &troupe_runtime::store::Batch| {
        if let (true, Some(gate)) = (batch.touches(crate::tables::LLM_STEPS), gate.lock().unwrap().take()) {
            let _ = reached_tx.lock().unwrap().send(());
            let _ = gate.recv();
        }
        None::<Fault>
    });
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        fault: Some(fault),
        ..StoreOptions::default()
    };
    let store = Store::open_with(&dir.path().join("troupe.redb"), options).unwrap();
    let server = Scripted::start(vec![
        openai_call("call_1", "troupe_memory_get", r#"{"key":"plan"}"#),
        openai_answer("done"),
    ])
    .await;
    let (carried, _) = counted(json!("v"));
    let s = LlmBackend {
        tools: vec!["troupe_memory_get".into()],
        ..LlmBackend::to(server.url(), "m")
    };
    let mut llm = started(s, Some(store.clone()), carried).await;
    let attempt = tokio::spawn(llm.run(task("t", json!("go"))));
    tokio::task::spawn_blocking(move || reached.recv().unwrap())
        .await
        .unwrap();
    // The first step's write is held by the writer; the model is asked again meanwhile.
    tokio::time::timeout(Duration::from_secs(10), async {
        while server.bodies().len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the next model call waited for the step before it to commit");
    assert_eq!(committed(&store, "t").await, 0);
    assert!(
        !attempt.is_finished(),
        "the answer was taken before the step before it was durable"
    );
    open.send(()).unwrap();
    let out = attempt.await.unwrap().unwrap();
    assert_eq!(out["content"], "done");
    let events = store.events_after(0, 100).await.unwrap();
    assert_eq!(
        step_kinds(&events),
        [json!("reply"), json!("toolResult"), json!("reply")]
    );
}

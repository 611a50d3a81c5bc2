//! The scheduler actor against a real store and stand-in agents.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;
use troupe_runtime::store::{Batch, Store, Table};
use troupe_runtime::supervision::Backoff;

use super::{Scheduler, SchedulerArgs, SchedulerMsg};
use crate::agent::AgentMsg;
use crate::task::{Priority, TaskRecord, TaskState};

/// Answers every assignment at once with the payload as the result.
struct FakeAgent(ActorRef<SchedulerMsg>);

impl Actor for FakeAgent {
    type Msg = AgentMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<AgentMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(&self, _: ActorRef<AgentMsg>, msg: AgentMsg, _: &mut ()) -> Result<(), ActorProcessingErr> {
        if let AgentMsg::Run(a) = msg {
            self.0.cast(SchedulerMsg::Finished {
                task_id: a.task_id,
                attempt: a.attempt,
                agent_id: "a1".into(),
                outcome: Ok(a.payload),
            })?;
        }
        Ok(())
    }
}

fn task(id: &str) -> TaskRecord {
    TaskRecord {
        id: id.into(),
        state: TaskState::Queued,
        target_agent: None,
        capability: Some("echo".into()),
        agent_id: None,
        attempts: 0,
        max_attempts: 3,
        priority: Priority::Normal,
        timeout_ms: None,
        payload: json!({"n": 1}),
        result: None,
        error: None,
        created_at: troupe_runtime::clock::now(),
        started_at: None,
        finished_at: None,
    }
}

async fn scheduler(store: &Store) -> ActorRef<SchedulerMsg> {
    let args = SchedulerArgs {
        store: store.clone(),
        retry: Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(100),
        },
    };
    Actor::spawn(None, Scheduler, args).await.expect("scheduler starts").0
}

async fn stored(store: &Store, id: &str) -> TaskRecord {
    let bytes = store.get(Table::Tasks, id).await.unwrap().expect("task stored");
    troupe_runtime::codec::decode(&bytes).unwrap()
}

async fn kinds(store: &Store) -> Vec<String> {
    store
        .events_after(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

fn agent_up(actor: ActorRef<AgentMsg>) -> SchedulerMsg {
    SchedulerMsg::AgentUp {
        id: "a1".into(),
        capabilities: vec!["echo".into()],
        max_concurrent: 1,
        actor,
    }
}

#[tokio::test]
async fn a_task_runs_on_a_capable_agent_and_each_step_is_recorded_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let s = scheduler(&store).await;
    let (agent, _) = Actor::spawn(None, FakeAgent(s.clone()), ()).await.unwrap();
    s.cast(agent_up(agent)).unwrap();
    s.cast(SchedulerMsg::Enqueue(task("t1"))).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while kinds(&store).await.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events: {:?}",
            kinds(&store).await
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(kinds(&store).await, ["TASK_STARTED", "TASK_SUCCEEDED"]);
    let t = stored(&store, "t1").await;
    assert_eq!(
        (t.state, t.attempts, t.result),
        (TaskState::Succeeded, 1, Some(json!({"n": 1})))
    );
}

#[tokio::test]
async fn an_unreachable_agent_gets_nothing_started_and_the_task_stays_queued() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let s = scheduler(&store).await;
    let (agent, handle) = Actor::spawn(None, FakeAgent(s.clone()), ()).await.unwrap();
    agent.stop(None);
    handle.await.unwrap();
    s.cast(agent_up(agent)).unwrap();
    store
        .write(Batch::new().put(Table::Tasks, "t1", troupe_runtime::codec::encode(&task("t1")).unwrap()))
        .await
        .unwrap();
    s.cast(SchedulerMsg::Enqueue(task("t1"))).unwrap();
    // A call behind the cast: once it answers, the dispatch attempt has happened.
    let running = ractor::call!(s, SchedulerMsg::Running).unwrap();
    store.flush().await.unwrap();
    assert_eq!(running, 0);
    assert!(kinds(&store).await.is_empty(), "events: {:?}", kinds(&store).await);
    let t = stored(&store, "t1").await;
    assert_eq!((t.state, t.attempts), (TaskState::Queued, 0));
}

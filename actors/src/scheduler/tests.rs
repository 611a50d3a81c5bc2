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
        max_concurrent: 2,
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

/// What the stand-in agents saw, shared by all of them.
#[derive(Default)]
struct Ledger {
    running: std::collections::HashMap<String, u32>,
    busy_tasks: std::collections::HashSet<String>,
    violations: Vec<String>,
    starts: u64,
}

/// Takes assignments, checks the invariants, and finishes each after a short random delay,
/// failing some of them.
struct CheckingAgent {
    id: String,
    max: u32,
    scheduler: ActorRef<SchedulerMsg>,
    ledger: std::sync::Arc<std::sync::Mutex<Ledger>>,
    seed: u64,
}

impl Actor for CheckingAgent {
    type Msg = AgentMsg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<AgentMsg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(self.seed)
    }

    async fn handle(&self, _: ActorRef<AgentMsg>, msg: AgentMsg, rng: &mut u64) -> Result<(), ActorProcessingErr> {
        let AgentMsg::Run(a) = msg else { return Ok(()) };
        {
            let mut l = self.ledger.lock().unwrap();
            l.starts += 1;
            let n = l.running.entry(self.id.clone()).or_default();
            *n += 1;
            if *n > self.max {
                let v = format!("agent {} ran {} tasks with {} slots", self.id, n, self.max);
                l.violations.push(v);
            }
            if !l.busy_tasks.insert(a.task_id.clone()) {
                l.violations
                    .push(format!("task {} assigned while already running", a.task_id));
            }
        }
        // xorshift: a deterministic stream per agent.
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        let (delay, fail) = (*rng % 3, *rng % 4 == 0);
        let (id, scheduler, ledger) = (self.id.clone(), self.scheduler.clone(), self.ledger.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            {
                let mut l = ledger.lock().unwrap();
                *l.running.get_mut(&id).unwrap() -= 1;
                l.busy_tasks.remove(&a.task_id);
            }
            let outcome = if fail {
                Err("unlucky".to_string())
            } else {
                Ok(a.payload)
            };
            let _ = scheduler.cast(SchedulerMsg::Finished {
                task_id: a.task_id,
                attempt: a.attempt,
                agent_id: id,
                outcome,
            });
        });
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_random_load_no_task_runs_twice_no_agent_overcommits_and_every_task_ends_once() {
    for seed in [1u64, 7, 42] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let s = scheduler(&store).await;
        let ledger = std::sync::Arc::new(std::sync::Mutex::new(Ledger::default()));
        for i in 0..5u32 {
            let agent = CheckingAgent {
                id: format!("a{i}"),
                max: 1 + i % 3,
                scheduler: s.clone(),
                ledger: ledger.clone(),
                seed: seed * 1000 + u64::from(i) + 1,
            };
            let (actor, _) = Actor::spawn(None, agent, ()).await.unwrap();
            s.cast(SchedulerMsg::AgentUp {
                id: format!("a{i}"),
                capabilities: vec!["echo".into()],
                max_concurrent: 1 + i % 3,
                actor,
            })
            .unwrap();
        }
        const TASKS: usize = 300;
        for n in 0..TASKS {
            let mut t = task(&format!("t{n:04}"));
            t.priority = [Priority::Critical, Priority::High, Priority::Normal, Priority::Low][n % 4];
            t.max_attempts = 2;
            s.cast(SchedulerMsg::Enqueue(t)).unwrap();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let ends = loop {
            let events = store.events_after(0, 100_000).await.unwrap();
            let ends: Vec<_> = events
                .into_iter()
                .filter(|e| e.kind == "TASK_SUCCEEDED" || e.kind == "TASK_FAILED")
                .collect();
            if ends.len() >= TASKS {
                break ends;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "seed {seed}: only {} tasks ended",
                ends.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let l = ledger.lock().unwrap();
        assert!(l.violations.is_empty(), "seed {seed}: {:?}", l.violations);
        let mut subjects: Vec<_> = ends.iter().filter_map(|e| e.subject.clone()).collect();
        subjects.sort();
        subjects.dedup();
        assert_eq!(
            (ends.len(), subjects.len()),
            (TASKS, TASKS),
            "seed {seed}: a task ended twice"
        );
        for e in &ends {
            let attempt = e.data["attempt"].as_u64().unwrap();
            assert!((1..=2).contains(&attempt), "seed {seed}: {e:?}");
        }
        assert!(l.starts >= TASKS as u64, "seed {seed}: {} starts", l.starts);
    }
}

#[tokio::test]
async fn a_second_enqueue_of_a_known_task_does_not_start_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let s = scheduler(&store).await;
    // Never answers: the task stays RUNNING, where a second start would be a double run.
    let (silent, _) = Actor::spawn(None, Silent, ()).await.unwrap();
    s.cast(agent_up(silent)).unwrap();
    s.cast(SchedulerMsg::Enqueue(task("t1"))).unwrap();
    s.cast(SchedulerMsg::Enqueue(task("t1"))).unwrap();
    let running = ractor::call!(s, SchedulerMsg::Running).unwrap();
    store.flush().await.unwrap();
    assert_eq!(running, 1);
    assert_eq!(kinds(&store).await, ["TASK_STARTED"]);
}

/// Takes assignments and never finishes them.
struct Silent;

impl Actor for Silent {
    type Msg = AgentMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<AgentMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

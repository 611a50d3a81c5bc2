//! The scheduler actor against a real store and stand-in agents. Tests wait on the store's
//! events, never on a sleep.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;
use troupe_runtime::events::{self, Event, EventFilter};
use troupe_runtime::store::{Batch, Fault, FaultHook, Store, StoreOptions};

use super::{RetryPolicy, Scheduler, SchedulerArgs, SchedulerMsg};
use crate::agent::AgentMsg;
use crate::tables::{OPEN_TASKS, TASKS, TASK_STATUS};
use crate::task::{TaskSpec, TaskState, TaskStatus};

mod ended;

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

fn spec(id: &str) -> TaskSpec {
    TaskSpec {
        payload: json!({"n": 1}),
        ..TaskSpec::example(id)
    }
}

/// Writes a task as the tasks service does before it tells the scheduler.
async fn durable(store: &Store, spec: &TaskSpec, status: &TaskStatus) {
    store
        .write(
            Batch::new()
                .put(TASKS, spec.id.clone(), enc(spec))
                .put(TASK_STATUS, spec.id.clone(), enc(status))
                .put(OPEN_TASKS, spec.id.clone(), vec![]),
        )
        .await
        .unwrap();
}

/// Places `id` on this scheduler's node in the directory (a move, a hand-off or a peer's
/// placement of a submit), as of `epoch`.
async fn placed_here(store: &Store, id: &str, epoch: u64) {
    let here = crate::cluster::directory::Placement {
        node: "local".into(),
        epoch,
    };
    store
        .write(Batch::new().put(crate::tables::DIRECTORY, id.to_owned(), enc(&here)))
        .await
        .unwrap();
}

/// How many task starts the store's events tell of.
async fn starts(store: &Store) -> usize {
    let events = store.events_after(0, 100).await.unwrap();
    events.iter().filter(|e| e.kind == "TASK_STARTED").count()
}

/// The kinds of the store's first events, in order.
async fn kinds(store: &Store) -> Vec<String> {
    store
        .events_after(0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

fn enc<T: serde::Serialize>(value: &T) -> Vec<u8> {
    troupe_runtime::codec::encode(value).unwrap()
}

fn open(dir: &tempfile::TempDir, fault: Option<FaultHook>) -> Store {
    let options = StoreOptions {
        fault,
        ..StoreOptions::default()
    };
    Store::open_with(&dir.path().join("db"), options).unwrap()
}

async fn scheduler(store: &Store) -> (ActorRef<SchedulerMsg>, tokio::task::JoinHandle<()>) {
    scheduler_caching(store, crate::scheduler::PAYLOAD_CACHE_BYTES).await
}

async fn scheduler_caching(store: &Store, cache: usize) -> (ActorRef<SchedulerMsg>, tokio::task::JoinHandle<()>) {
    scheduler_publishing(store, cache, Default::default()).await
}

async fn scheduler_publishing(
    store: &Store,
    cache: usize,
    rooms: crate::scheduler::Rooms,
) -> (ActorRef<SchedulerMsg>, tokio::task::JoinHandle<()>) {
    let args = SchedulerArgs {
        node: "local".into(),
        store: store.clone(),
        open: Default::default(),
        rooms,
        peers: None,
        breaker: Default::default(),
        payload_cache_bytes: cache,
        retry: RetryPolicy {
            base: Duration::from_millis(10),
            max: Duration::from_millis(100),
        },
    };
    Actor::spawn(None, Scheduler, args).await.expect("scheduler starts")
}

/// The next `n` events of these kinds after `after`.
async fn next_events(store: &Store, after: u64, kinds: &[&str], n: usize) -> Vec<Arc<Event>> {
    let filter = EventFilter {
        kinds: Some(kinds.iter().map(|k| k.to_string()).collect()),
        subject: None,
    };
    let stream = events::subscribe(store, after, filter).take(n);
    tokio::time::timeout(Duration::from_secs(10), stream.map(Result::unwrap).collect::<Vec<_>>())
        .await
        .expect("the events within 10 s")
}

/// A scheduler on `store` with one capable agent up.
async fn with_an_agent(store: &Store) -> ActorRef<SchedulerMsg> {
    let (s, _) = scheduler(store).await;
    let (agent, _) = Actor::spawn(None, FakeAgent(s.clone()), ()).await.unwrap();
    s.cast(agent_up(agent)).unwrap();
    s
}

fn agent_up(actor: ActorRef<AgentMsg>) -> SchedulerMsg {
    SchedulerMsg::AgentUp {
        id: "a1".into(),
        name: "echo-1".into(),
        capabilities: vec!["echo".into()],
        skills: Default::default(),
        max_concurrent: 2,
        open: true,
        actor,
    }
}

#[tokio::test]
async fn a_task_runs_on_a_capable_agent_and_each_step_is_recorded_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    let s = with_an_agent(&store).await;
    let t1 = spec("t1");
    durable(&store, &t1, &TaskStatus::queued()).await;
    s.cast(SchedulerMsg::Enqueue(Box::new((t1, TaskStatus::queued()))))
        .unwrap();
    let seen = next_events(&store, 0, &["TASK_STARTED", "TASK_SUCCEEDED"], 2).await;
    let kinds: Vec<&str> = seen.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["TASK_STARTED", "TASK_SUCCEEDED"]);
    let status: TaskStatus =
        troupe_runtime::codec::decode(&store.get(TASK_STATUS, "t1").await.unwrap().unwrap()).unwrap();
    assert_eq!(
        (status.state, status.attempts, status.result),
        (TaskState::Succeeded, 1, Some(json!({"n": 1})))
    );
    assert!(
        store.get(OPEN_TASKS, "t1").await.unwrap().is_none(),
        "a finished task is no longer open"
    );
}

#[tokio::test(start_paused = true)]
async fn the_room_of_the_agents_is_published_for_the_heartbeat_without_asking_the_scheduler() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    let rooms = crate::scheduler::Rooms::default();
    let (s, _) = scheduler_publishing(&store, crate::scheduler::PAYLOAD_CACHE_BYTES, rooms.clone()).await;
    assert!(rooms.get().is_empty(), "no agent yet");
    let (agent, _) = Actor::spawn(None, FakeAgent(s.clone()), ()).await.unwrap();
    s.cast(agent_up(agent)).unwrap();
    // Published at the next period, whatever else the scheduler is asked.
    tokio::time::sleep(crate::scheduler::ROOMS_EVERY * 2).await;
    let published = rooms.get();
    let echo = published.get("echo").copied().expect("echo is served");
    assert_eq!((echo.agents, echo.free), (1, 2));
    assert!(echo.best.is_some());
    assert_eq!(published.len(), 1, "{published:?}");
}

#[tokio::test]
async fn an_unreachable_agent_gets_nothing_started_and_the_task_stays_queued() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    let (s, _) = scheduler(&store).await;
    let (agent, handle) = Actor::spawn(None, FakeAgent(s.clone()), ()).await.unwrap();
    agent.stop(None);
    handle.await.unwrap();
    s.cast(agent_up(agent)).unwrap();
    let t1 = spec("t1");
    durable(&store, &t1, &TaskStatus::queued()).await;
    s.cast(SchedulerMsg::Enqueue(Box::new((t1, TaskStatus::queued()))))
        .unwrap();
    // A call behind the cast: once it answers, the dispatch attempt has happened.
    let running = ractor::call!(s, SchedulerMsg::Running).unwrap();
    store.flush().await.unwrap();
    assert_eq!(running, 0);
    assert!(
        store.events_after(0, 10).await.unwrap().is_empty(),
        "nothing was recorded as started"
    );
}

#[tokio::test]
async fn a_task_queued_while_the_scheduler_restarts_reaches_its_successor() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    // The slot still names a scheduler that stopped; its successor read the store at its
    // start, before the task below was written.
    let (gone, done) = scheduler(&store).await;
    gone.stop(None);
    done.await.unwrap();
    let slot = crate::slots::Slot::default();
    slot.set(gone);
    let successor = with_an_agent(&store).await;
    let t1 = spec("t1");
    durable(&store, &t1, &TaskStatus::queued()).await;
    super::tasks::hand_over(&slot, t1, TaskStatus::queued());
    // The successor takes its place: the task runs there.
    slot.set(successor);
    let seen = next_events(&store, 0, &["TASK_SUCCEEDED"], 1).await;
    assert_eq!(seen[0].subject.as_deref(), Some("t1"));
}

#[tokio::test]
async fn a_second_enqueue_of_a_known_task_does_not_start_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    let (s, _) = scheduler(&store).await;
    let (silent, _) = Actor::spawn(None, Silent, ()).await.unwrap();
    s.cast(agent_up(silent)).unwrap();
    let t1 = spec("t1");
    durable(&store, &t1, &TaskStatus::queued()).await;
    s.cast(SchedulerMsg::Enqueue(Box::new((t1.clone(), TaskStatus::queued()))))
        .unwrap();
    s.cast(SchedulerMsg::Enqueue(Box::new((t1, TaskStatus::queued()))))
        .unwrap();
    let running = ractor::call!(s, SchedulerMsg::Running).unwrap();
    store.flush().await.unwrap();
    assert_eq!(running, 1);
    assert_eq!(kinds(&store).await, ["TASK_STARTED"]);
}

#[tokio::test]
async fn a_restarted_scheduler_charges_the_lost_attempt_and_runs_the_task_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    let mut running = TaskStatus::queued();
    running.state = TaskState::Running;
    running.attempts = 1;
    running.agent_id = Some("a1".into());
    let mut last_chance = spec("last");
    last_chance.max_attempts = 1;
    durable(&store, &spec("t1"), &running).await;
    durable(&store, &last_chance, &running).await;
    let (s, _) = scheduler(&store).await;
    let recovered = next_events(&store, 0, &["TASK_RETRYING", "TASK_DEAD"], 2).await;
    let by_task: Vec<(&str, &str)> = recovered
        .iter()
        .map(|e| (e.subject.as_deref().unwrap(), e.kind.as_str()))
        .collect();
    assert!(by_task.contains(&("t1", "TASK_RETRYING")), "{by_task:?}");
    assert!(by_task.contains(&("last", "TASK_DEAD")), "{by_task:?}");
    let (agent, _) = Actor::spawn(None, FakeAgent(s.clone()), ()).await.unwrap();
    let after = store.last_seq().await.unwrap();
    s.cast(agent_up(agent)).unwrap();
    let done = next_events(&store, after, &["TASK_SUCCEEDED"], 1).await;
    assert_eq!(done[0].subject.as_deref(), Some("t1"));
    assert_eq!(done[0].data["attempt"], 2);
}

#[tokio::test]
async fn a_transition_the_store_refuses_fails_the_scheduler_instead_of_drifting() {
    let dir = tempfile::tempdir().unwrap();
    let refuse = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = refuse.clone();
    let hook: FaultHook = Arc::new(move |b: &Batch| {
        (flag.load(std::sync::atomic::Ordering::SeqCst) && b.touches(TASK_STATUS)).then_some(Fault::Reject)
    });
    let store = open(&dir, Some(hook));
    let (s, done) = scheduler(&store).await;
    let (silent, _) = Actor::spawn(None, Silent, ()).await.unwrap();
    s.cast(agent_up(silent)).unwrap();
    let t1 = spec("t1");
    durable(&store, &t1, &TaskStatus::queued()).await;
    refuse.store(true, std::sync::atomic::Ordering::SeqCst);
    s.cast(SchedulerMsg::Enqueue(Box::new((t1, TaskStatus::queued()))))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .expect("the scheduler stops when its write is refused")
        .unwrap();
    assert_eq!(s.get_status(), ractor::ActorStatus::Stopped);
}

#[tokio::test]
async fn cancelling_a_task_that_just_finished_answers_with_its_final_state() {
    let dir = tempfile::tempdir().unwrap();
    // A slow disk: the commit that records the success takes a while.
    let hook: FaultHook = Arc::new(|b: &Batch| {
        let succeeded = b
            .ops()
            .iter()
            .any(|op| matches!(op, troupe_runtime::store::Op::Event(e) if e.kind == "TASK_SUCCEEDED"));
        if succeeded {
            std::thread::sleep(Duration::from_millis(300));
        }
        None
    });
    let store = open(&dir, Some(hook));
    let s = with_an_agent(&store).await;
    let t1 = spec("t1");
    durable(&store, &t1, &TaskStatus::queued()).await;
    s.cast(SchedulerMsg::Enqueue(Box::new((t1, TaskStatus::queued()))))
        .unwrap();
    // Once nothing runs, the scheduler has taken the result; its record is still on its way.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ractor::call!(s, SchedulerMsg::Running).unwrap() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "the task never finished");
        tokio::task::yield_now().await;
    }
    let answer = ractor::call!(s, SchedulerMsg::Cancel, "t1".to_string()).unwrap();
    match answer {
        Err(crate::error::ApiError::Conflict(m)) => assert!(m.contains("SUCCEEDED"), "{m}"),
        other => panic!("expected a conflict naming the final state, got {other:?}"),
    }
}

#[tokio::test]
async fn a_task_placed_here_a_moment_ago_is_cancelled_before_its_arrival_is_taken_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    let (s, _) = scheduler(&store).await;
    // Placed here by the peer it was submitted to: QUEUED and held here, and its arrival
    // not told to this scheduler yet.
    let placed = spec("t5@maker");
    durable(&store, &placed, &TaskStatus::queued()).await;
    placed_here(&store, &placed.id, 1).await;
    let answer = ractor::call!(s, SchedulerMsg::Cancel, placed.id.clone()).unwrap();
    assert_eq!(answer.expect("cancelled").state, TaskState::Cancelled);
    store.flush().await.unwrap();
    assert_eq!(kinds(&store).await, ["TASK_CANCELLED"]);
}

#[tokio::test]
async fn an_attempt_gets_its_payload_from_the_store_when_it_is_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    // No payload cache at all: every payload must come from the store.
    let (s, _) = scheduler_caching(&store, 0).await;
    let (agent, _) = Actor::spawn(None, FakeAgent(s.clone()), ()).await.unwrap();
    let on_disk = spec("t1");
    durable(&store, &on_disk, &TaskStatus::queued()).await;
    // The message carries the spec, but beyond its cache the scheduler keeps only what it
    // needs to decide: the payload the agent gets is the one on disk.
    let mut in_message = on_disk.clone();
    in_message.payload = json!({"stale": true});
    s.cast(SchedulerMsg::Enqueue(Box::new((in_message, TaskStatus::queued()))))
        .unwrap();
    s.cast(agent_up(agent)).unwrap();
    next_events(&store, 0, &["TASK_SUCCEEDED"], 1).await;
    let status: TaskStatus =
        troupe_runtime::codec::decode(&store.get(TASK_STATUS, "t1").await.unwrap().unwrap()).unwrap();
    assert_eq!(
        status.result,
        Some(json!({"n": 1})),
        "the echoed payload is the stored one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_unknown_task_does_not_hold_the_scheduler_behind_the_writer() {
    const HELD: troupe_runtime::store::Table = troupe_runtime::store::Table::new("held");
    // A write the disk holds until the test lets it go; the hook says when it is held.
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(gate);
    let (seen, mut reached) = tokio::sync::watch::channel(false);
    let hook: FaultHook = Arc::new(move |b: &Batch| {
        let held = b
            .ops()
            .iter()
            .any(|op| matches!(op, troupe_runtime::store::Op::Put { table, .. } if *table == HELD));
        if held {
            seen.send_replace(true);
            let _ = gate.lock().unwrap().recv();
        }
        None
    });
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, Some(hook));
    let (s, _) = scheduler(&store).await;
    let write = tokio::spawn({
        let store = store.clone();
        async move { store.write(Batch::new().put(HELD, "k", vec![1])).await }
    });
    reached.wait_for(|r| *r).await.unwrap();
    let (reply, cancelled) = ractor::concurrency::oneshot();
    s.cast(SchedulerMsg::Cancel("nobody".into(), reply.into())).unwrap();
    // The scheduler takes its next message while the writer is still held.
    let running = tokio::time::timeout(Duration::from_secs(10), async {
        ractor::call!(s, SchedulerMsg::Running).unwrap()
    })
    .await;
    release.send(()).unwrap();
    assert_eq!(running.ok(), Some(0), "the scheduler waited for the writer");
    write.await.unwrap().unwrap();
    match cancelled.await.unwrap() {
        Err(crate::error::ApiError::NotFound(m)) => assert!(m.contains("nobody"), "{m}"),
        other => panic!("expected no such task, got {other:?}"),
    }
}

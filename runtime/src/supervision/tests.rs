//! The supervisor on real actors: each strategy, escalation, a child's own intensity, start
//! timeouts, slow starts beside fast ones, shutdown policies and the described tree.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef};
use tokio::sync::{mpsc, Notify};

use super::*;
use crate::store::Store;

/// A started worker: its child id and its actor.
type Started = (String, ActorRef<WorkerMsg>);

enum WorkerMsg {
    Fail,
    /// Holds the worker's loop for good, as a hung actor.
    Block,
}

impl ractor::Message for WorkerMsg {}

struct Worker {
    id: String,
    log: mpsc::UnboundedSender<Started>,
    /// Set when the worker ran its post_stop.
    stopped_cleanly: Arc<std::sync::atomic::AtomicBool>,
    ignore_stop: bool,
    /// Fails the moment it starts: its exit can reach the supervisor before the start
    /// job's report does.
    fail_at_once: bool,
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<WorkerMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        if self.fail_at_once {
            myself.cast(WorkerMsg::Fail)?;
        }
        let _ = self.log.send((self.id.clone(), myself));
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<WorkerMsg>, _: &mut ()) -> Result<(), ActorProcessingErr> {
        if self.ignore_stop {
            // Hangs in its cleanup, as a child that will not stop does.
            std::future::pending::<()>().await;
        }
        self.stopped_cleanly.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    async fn handle(&self, _: ActorRef<WorkerMsg>, msg: WorkerMsg, _: &mut ()) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Fail => Err(format!("{} was told to fail", self.id).into()),
            WorkerMsg::Block => std::future::pending().await,
        }
    }
}

struct WorkerSpec {
    id: String,
    log: mpsc::UnboundedSender<Started>,
    gate: Option<Arc<Notify>>,
    intensity: Option<Intensity>,
    start_timeout: Duration,
    shutdown: Shutdown,
    ignore_stop: bool,
    fail_at_once: bool,
    stopped_cleanly: Arc<std::sync::atomic::AtomicBool>,
    /// How many more chances it asks for once past its intensity.
    chances: std::sync::atomic::AtomicU32,
    /// How many of its next starts fail.
    failing_starts: std::sync::atomic::AtomicU32,
    retries_a_failed_start: bool,
}

impl WorkerSpec {
    fn new(id: &str, log: &mpsc::UnboundedSender<Started>) -> Self {
        Self {
            id: id.into(),
            log: log.clone(),
            gate: None,
            intensity: None,
            start_timeout: Duration::from_secs(10),
            shutdown: Shutdown::Timeout(Duration::from_secs(5)),
            ignore_stop: false,
            fail_at_once: false,
            stopped_cleanly: Arc::default(),
            chances: Default::default(),
            failing_starts: Default::default(),
            retries_a_failed_start: false,
        }
    }
}

impl ChildSpec for WorkerSpec {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &str {
        "WORKER"
    }
    fn intensity(&self) -> Option<Intensity> {
        self.intensity
    }
    fn start_timeout(&self) -> Duration {
        self.start_timeout
    }
    fn shutdown(&self) -> Shutdown {
        self.shutdown
    }
    fn retries_a_failed_start(&self) -> bool {
        self.retries_a_failed_start
    }
    fn one_more_chance(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.chances
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
    fn start(
        self: Arc<Self>,
        supervisor: ractor::ActorCell,
    ) -> futures::future::BoxFuture<'static, Result<ractor::ActorCell, ActorProcessingErr>> {
        Box::pin(async move {
            if let Some(gate) = &self.gate {
                gate.notified().await;
            }
            let failing = &self.failing_starts;
            if failing
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1),
                )
                .is_ok()
            {
                return Err(format!("{} cannot start yet", self.id).into());
            }
            let worker = Worker {
                id: self.id.clone(),
                log: self.log.clone(),
                stopped_cleanly: self.stopped_cleanly.clone(),
                ignore_stop: self.ignore_stop,
                fail_at_once: self.fail_at_once,
            };
            let (actor, _) = Actor::spawn_linked(None, worker, (), supervisor).await?;
            Ok(actor.get_cell())
        })
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    store: Store,
    log: mpsc::UnboundedSender<Started>,
    started: mpsc::UnboundedReceiver<Started>,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let (log, started) = mpsc::unbounded_channel();
        Self {
            _dir: dir,
            store,
            log,
            started,
        }
    }

    fn args(&self, strategy: Strategy, max_restarts: Option<u32>, children: Vec<Arc<dyn ChildSpec>>) -> SupervisorArgs {
        SupervisorArgs {
            name: "test".into(),
            strategy,
            intensity: max_restarts.map(|max_restarts| Intensity {
                max_restarts,
                window: Duration::from_secs(60),
            }),
            backoff: Backoff {
                base: Duration::from_millis(1),
                max: Duration::from_millis(5),
            },
            children,
            start_order: StartOrder::Sequential,
            store: self.store.clone(),
        }
    }

    fn workers(&self, ids: &[&str]) -> Vec<Arc<dyn ChildSpec>> {
        ids.iter()
            .map(|id| Arc::new(WorkerSpec::new(id, &self.log)) as Arc<dyn ChildSpec>)
            .collect()
    }

    /// A nested one_for_all supervisor "inner" with one worker, "leaf".
    fn inner(&self, intensity: Option<Intensity>) -> SupervisorSpec {
        let store = self.store.clone();
        let log = self.log.clone();
        SupervisorSpec {
            id: "inner".into(),
            args: Box::new(move || SupervisorArgs {
                name: "inner".into(),
                strategy: Strategy::OneForAll,
                intensity,
                backoff: Backoff {
                    base: Duration::from_millis(1),
                    max: Duration::from_millis(1),
                },
                children: vec![Arc::new(WorkerSpec::new("leaf", &log))],
                start_order: StartOrder::Concurrent,
                store: store.clone(),
            }),
        }
    }

    /// The next `n` starts, in the order they happened.
    async fn starts(&mut self, n: usize) -> Vec<Started> {
        let mut out = Vec::new();
        while out.len() < n {
            let next = tokio::time::timeout(Duration::from_secs(10), self.started.recv())
                .await
                .expect("a start within 10 s")
                .expect("log open");
            out.push(next);
        }
        out
    }

    /// Kinds of the events written so far about `subject`.
    async fn kinds_of(&self, subject: &str) -> Vec<String> {
        self.store.flush().await.unwrap();
        self.store
            .events_after(0, 10_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.subject.as_deref() == Some(subject))
            .map(|e| e.kind)
            .collect()
    }
}

fn ids(started: &[Started]) -> Vec<(String, ActorId)> {
    started.iter().map(|(id, a)| (id.clone(), a.get_id())).collect()
}

async fn restarted_by(strategy: Strategy) -> (Vec<(String, ActorId)>, Vec<(String, ActorId)>) {
    let mut h = Harness::new();
    let args = h.args(strategy, Some(5), h.workers(&["a", "b", "c"]));
    let (_sup, _) = Actor::spawn(None, Supervisor, args).await.unwrap();
    let first = h.starts(3).await;
    first[1].1.cast(WorkerMsg::Fail).unwrap();
    let expected = match strategy {
        Strategy::OneForOne => 1,
        Strategy::OneForAll => 3,
        Strategy::RestForOne => 2,
    };
    (ids(&first), ids(&h.starts(expected).await))
}

#[tokio::test]
async fn one_for_one_restarts_only_the_failed_child() {
    let (first, again) = restarted_by(Strategy::OneForOne).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, "b");
    assert_ne!(again[0].1, first[1].1, "b is a new actor");
}

#[tokio::test]
async fn one_for_all_restarts_every_child_in_start_order() {
    let (first, again) = restarted_by(Strategy::OneForAll).await;
    let names: Vec<&str> = again.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    for (old, new) in first.iter().zip(&again) {
        assert_ne!(old.1, new.1, "{} is a new actor", old.0);
    }
}

#[tokio::test]
async fn rest_for_one_restarts_the_child_and_those_started_after_it() {
    let (_, again) = restarted_by(Strategy::RestForOne).await;
    let names: Vec<&str> = again.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["b", "c"]);
}

#[tokio::test]
async fn a_slow_start_does_not_hold_up_its_siblings_and_a_start_past_its_timeout_fails() {
    let mut h = Harness::new();
    let args = h.args(Strategy::OneForOne, None, vec![]);
    let (sup, _) = Actor::spawn(None, Supervisor, args).await.unwrap();
    let gate = Arc::new(Notify::new());
    let mut slow = WorkerSpec::new("slow", &h.log);
    slow.gate = Some(gate.clone());
    // Cast first, so the slow start is asked for before the fast one.
    let (reply, slow_start) = ractor::concurrency::oneshot();
    sup.cast(SupervisorMsg::StartChild(Arc::new(slow), reply.into()))
        .unwrap();
    let fast: Arc<dyn ChildSpec> = Arc::new(WorkerSpec::new("fast", &h.log));
    ractor::call!(sup, SupervisorMsg::StartChild, fast).unwrap().unwrap();
    let children = ractor::call!(sup, SupervisorMsg::Children).unwrap();
    assert_eq!(children, vec![("slow".to_string(), false), ("fast".to_string(), true)]);
    gate.notify_one();
    slow_start.await.unwrap().unwrap();
    assert_eq!(h.starts(2).await.len(), 2);

    let mut stuck = WorkerSpec::new("stuck", &h.log);
    stuck.gate = Some(Arc::new(Notify::new()));
    stuck.start_timeout = Duration::from_millis(50);
    let err = ractor::call!(sup, SupervisorMsg::StartChild, Arc::new(stuck) as Arc<dyn ChildSpec>)
        .unwrap()
        .unwrap_err();
    assert!(err.contains("did not start within 50 ms"), "{err}");
}

#[tokio::test]
async fn a_failed_start_is_answered_at_once_and_retried_only_when_the_child_asks() {
    let mut h = Harness::new();
    let args = h.args(Strategy::OneForOne, None, vec![]);
    let (sup, _) = Actor::spawn(None, Supervisor, args).await.unwrap();
    let mut flaky = WorkerSpec::new("flaky", &h.log);
    flaky.failing_starts = std::sync::atomic::AtomicU32::new(2);
    flaky.retries_a_failed_start = true;
    let err = ractor::call!(sup, SupervisorMsg::StartChild, Arc::new(flaky) as Arc<dyn ChildSpec>)
        .unwrap()
        .unwrap_err();
    assert!(err.contains("flaky cannot start yet"), "{err}");
    // The supervisor tries again (a second failure, then a start) by its restart policy.
    let started = h.starts(1).await;
    assert_eq!(started[0].0, "flaky");
    // Its report of the start follows the actor's own.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ractor::call!(sup, SupervisorMsg::Children).unwrap() != vec![("flaky".to_string(), true)] {
        assert!(tokio::time::Instant::now() < deadline, "flaky never ran");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let kinds = h.kinds_of("flaky").await;
    assert_eq!(
        kinds,
        vec!["WORKER_FAILED", "WORKER_FAILED", "WORKER_RESTARTED"],
        "{kinds:?}"
    );

    let mut once = WorkerSpec::new("once", &h.log);
    once.failing_starts = std::sync::atomic::AtomicU32::new(1);
    let err = ractor::call!(sup, SupervisorMsg::StartChild, Arc::new(once) as Arc<dyn ChildSpec>)
        .unwrap()
        .unwrap_err();
    assert!(err.contains("once cannot start yet"), "{err}");
    let children = ractor::call!(sup, SupervisorMsg::Children).unwrap();
    assert_eq!(
        children,
        vec![("flaky".to_string(), true)],
        "a start nobody retries left a child"
    );
}

#[tokio::test]
async fn a_child_that_will_not_stop_is_killed_after_its_shutdown_timeout() {
    let mut h = Harness::new();
    let mut stubborn = WorkerSpec::new("stubborn", &h.log);
    stubborn.ignore_stop = true;
    stubborn.shutdown = Shutdown::Timeout(Duration::from_millis(100));
    let mut brutal = WorkerSpec::new("brutal", &h.log);
    brutal.shutdown = Shutdown::BrutalKill;
    let brutal_clean = brutal.stopped_cleanly.clone();
    let polite = WorkerSpec::new("polite", &h.log);
    let polite_clean = polite.stopped_cleanly.clone();
    let children: Vec<Arc<dyn ChildSpec>> = vec![Arc::new(stubborn), Arc::new(brutal), Arc::new(polite)];
    let (sup, _) = Actor::spawn(None, Supervisor, h.args(Strategy::OneForOne, None, children))
        .await
        .unwrap();
    let started = h.starts(3).await;
    for id in ["stubborn", "brutal", "polite"] {
        assert!(ractor::call!(sup, SupervisorMsg::TerminateChild, id.to_string()).unwrap());
    }
    for (id, actor) in &started {
        assert_eq!(actor.get_status(), ractor::ActorStatus::Stopped, "{id}");
    }
    assert!(
        !brutal_clean.load(std::sync::atomic::Ordering::SeqCst),
        "a brutal kill skips post_stop"
    );
    assert!(
        polite_clean.load(std::sync::atomic::Ordering::SeqCst),
        "a timed stop runs post_stop"
    );
    assert!(ractor::call!(sup, SupervisorMsg::Children).unwrap().is_empty());
    assert_eq!(h.kinds_of("stubborn").await, ["WORKER_STARTED", "WORKER_STOPPED"]);
}

#[tokio::test]
async fn the_described_tree_shows_nested_supervisors_with_their_children() {
    let mut h = Harness::new();
    let mut children = h.workers(&["a"]);
    children.push(Nested::child(h.inner(None)));
    let (sup, _) = Actor::spawn(None, Supervisor, h.args(Strategy::RestForOne, Some(3), children))
        .await
        .unwrap();
    h.starts(2).await;
    let tree = ractor::call!(sup, SupervisorMsg::Describe).unwrap();
    assert_eq!((tree.name.as_str(), tree.strategy), ("test", Strategy::RestForOne));
    assert_eq!(tree.intensity.map(|i| i.max_restarts), Some(3));
    let ids: Vec<&str> = tree.children.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["a", "inner"]);
    let inner = tree.children[1].supervisor.as_ref().expect("inner described");
    assert_eq!(inner.strategy, Strategy::OneForAll);
    assert_eq!(inner.children[0].id, "leaf");
    assert_eq!(inner.children[0].owner, "inner");
    assert_eq!(inner.children[0].state, "RUNNING");
    assert_eq!(tree.children[1].kind, "SUPERVISOR");
}

#[tokio::test]
async fn a_child_that_dies_the_moment_it_starts_is_still_restarted_and_given_up_on() {
    let mut h = Harness::new();
    let mut doomed = WorkerSpec::new("doomed", &h.log);
    doomed.fail_at_once = true;
    doomed.intensity = Some(Intensity {
        max_restarts: 5,
        window: Duration::from_secs(60),
    });
    let mut args = h.args(Strategy::OneForOne, None, vec![Arc::new(doomed)]);
    args.start_order = StartOrder::Concurrent;
    let (sup, _) = Actor::spawn(None, Supervisor, args).await.unwrap();
    // The first start and every one of its five restarts happen; none is lost.
    assert_eq!(h.starts(6).await.len(), 6);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ractor::call!(sup, SupervisorMsg::Children).unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the doomed child was never given up on"
        );
        tokio::task::yield_now().await;
    }
    let kinds = h.kinds_of("doomed").await;
    assert_eq!(kinds.iter().filter(|k| *k == "WORKER_FAILED").count(), 6, "{kinds:?}");
}

/// A nested supervisor that makes one more worker at each start, as one that reads its
/// children from the store finds what was added since.
struct Growing {
    log: mpsc::UnboundedSender<Started>,
    store: Store,
    starts: Arc<std::sync::atomic::AtomicUsize>,
    running: Arc<std::sync::Mutex<Option<ActorRef<SupervisorMsg>>>>,
}

impl Nest for Growing {
    fn id(&self) -> &str {
        "growing"
    }

    fn args(&self) -> futures::future::BoxFuture<'static, Result<SupervisorArgs, ActorProcessingErr>> {
        let n = self.starts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let children = (0..n)
            .map(|i| Arc::new(WorkerSpec::new(&format!("w{i}"), &self.log)) as Arc<dyn ChildSpec>)
            .collect();
        let store = self.store.clone();
        Box::pin(async move {
            Ok(SupervisorArgs {
                name: "growing".into(),
                strategy: Strategy::OneForOne,
                intensity: None,
                backoff: Backoff {
                    base: Duration::from_millis(1),
                    max: Duration::from_millis(1),
                },
                children,
                start_order: StartOrder::Concurrent,
                store,
            })
        })
    }

    fn started(&self, supervisor: &ActorRef<SupervisorMsg>) -> futures::future::BoxFuture<'static, ()> {
        *self.running.lock().unwrap() = Some(supervisor.clone());
        Box::pin(async {})
    }
}

#[tokio::test]
async fn a_nested_supervisor_makes_its_children_afresh_at_each_restart_and_says_where_it_runs() {
    let mut h = Harness::new();
    let running = Arc::new(std::sync::Mutex::new(None));
    let growing = Growing {
        log: h.log.clone(),
        store: h.store.clone(),
        starts: Arc::default(),
        running: running.clone(),
    };
    let (_sup, _) = Actor::spawn(
        None,
        Supervisor,
        h.args(Strategy::OneForOne, Some(3), vec![Nested::child(growing)]),
    )
    .await
    .unwrap();
    assert_eq!(h.starts(1).await[0].0, "w0");
    let first = running.lock().unwrap().clone().expect("told where it runs");
    first.get_cell().kill();
    let mut again: Vec<String> = h.starts(2).await.into_iter().map(|(id, _)| id).collect();
    again.sort();
    assert_eq!(again, ["w0", "w1"]);
    let second = running.lock().unwrap().clone().expect("told again");
    assert_ne!(first.get_id(), second.get_id());
    assert_eq!(
        h.kinds_of("growing").await,
        ["SUPERVISOR_STARTED", "SUPERVISOR_RESTARTED"]
    );
}

mod chore;
mod fault;
mod intensity;

#[tokio::test]
async fn a_lifecycle_record_the_cluster_refuses_does_not_fail_the_supervisor() {
    let mut h = Harness::new();
    // Fenced on a condition that never holds: every record is refused as stale, as a node's
    // are once the cluster has declared it down.
    const FENCE: crate::store::Table = crate::store::Table::new("fence");
    h.store.fence(Some((FENCE, "epoch".into(), Some(b"1".to_vec()))));
    let args = h.args(Strategy::OneForOne, Some(5), h.workers(&["a"]));
    let (sup, _) = Actor::spawn(None, Supervisor, args).await.unwrap();
    let first = h.starts(1).await;
    first[0].1.cast(WorkerMsg::Fail).unwrap();
    // Restarted, its records refused each time, and the supervisor goes on.
    h.starts(1).await;
    h.store.flush().await.unwrap();
    let held = ractor::call!(sup, SupervisorMsg::Children).expect("the supervisor is alive");
    assert_eq!(held, vec![("a".to_string(), true)]);
    assert!(h.kinds_of("a").await.is_empty(), "no record was written");
}

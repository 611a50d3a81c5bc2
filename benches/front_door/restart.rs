//! Agent restart, crash to serving again, on the real pieces: the runtime's supervisor and an
//! agent's child spec and actor (a builtin `panic` agent). The clock starts when the crashing
//! assignment is sent and stops when the restarted agent registers with the scheduler, the
//! moment it can take tasks again. A stand-in scheduler receives that registration. The
//! backoff is set to zero: this measures the restart itself, not the crash-loop brake.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;
use tokio::sync::mpsc;
use troupe_actors::agent::Slots;
use troupe_actors::agent::{
    AgentChild, AgentMsg, AgentPolicy, AgentSpec, AgentState, AgentStatus, BackendSpec, BuiltinKind, Desired, Owner,
};
use troupe_actors::scheduler::SchedulerMsg;
use troupe_actors::task::Assignment;
use troupe_runtime::store::Store;
use troupe_runtime::supervision::{
    Backoff, ChildSpec, Intensity, Shutdown, StartOrder, Strategy, Supervisor, SupervisorArgs,
};

use crate::{report_latency, Unit};

const RESTARTS: usize = 2_000;

/// Hands each registering agent incarnation to the driver, with when it registered.
struct Registrar(mpsc::UnboundedSender<(Instant, ActorRef<AgentMsg>)>);

impl Actor for Registrar {
    type Msg = SchedulerMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<SchedulerMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(&self, _: ActorRef<SchedulerMsg>, msg: SchedulerMsg, _: &mut ()) -> Result<(), ActorProcessingErr> {
        if let SchedulerMsg::AgentUp { actor, .. } = msg {
            let _ = self.0.send((Instant::now(), actor));
        }
        Ok(())
    }
}

pub async fn restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("bench.redb")).expect("store");
    let (tx, mut up) = mpsc::unbounded_channel();
    let (registrar, _) = Actor::spawn(None, Registrar(tx), ()).await.expect("registrar");
    let slots = Slots::default();
    slots.scheduler.set(registrar);
    let policy = AgentPolicy {
        intensity: Intensity {
            max_restarts: u32::MAX,
            window: Duration::from_secs(1),
        },
        shutdown: Shutdown::Timeout(Duration::from_secs(5)),
        stop_grace: Duration::from_secs(5),
        checkpoints_kept: 1,
        secrets: Default::default(),
        prices: Default::default(),
        logs: Default::default(),
        deltas: Default::default(),
        http: troupe_actors::agent::http_client(),
    };
    let spec = AgentSpec {
        id: "crasher@bench".into(),
        name: "crasher".into(),
        node: "bench".into(),
        backend: BackendSpec::Builtin(BuiltinKind::Panic),
        capabilities: vec![],
        max_concurrent_tasks: 1,
        owner: Owner::Node,
        desired: Desired::Running,
        created_at: chrono::Utc::now(),
        project: "bench".into(),
        labels: Default::default(),
        limits: Default::default(),
        restart: None,
        proficiency: Default::default(),
        weight: 1.0,
        topics: Vec::new(),
        placement: Default::default(),
    };
    let child: Arc<dyn ChildSpec> = Arc::new(AgentChild::new(
        spec,
        AgentStatus::new(AgentState::Starting),
        slots,
        store.clone(),
        policy,
    ));
    let args = SupervisorArgs {
        name: "agents".into(),
        strategy: Strategy::OneForOne,
        intensity: None,
        backoff: Backoff {
            base: Duration::ZERO,
            max: Duration::ZERO,
        },
        children: vec![child],
        start_order: StartOrder::Concurrent,
        store,
    };
    let (supervisor, _) = Actor::spawn(None, Supervisor, args).await.expect("supervisor");
    let (_, mut agent) = up.recv().await.expect("first start");
    let mut latencies = Histogram::<u64>::new(3).expect("histogram");
    // Panics print; keep the run's output readable.
    std::panic::set_hook(Box::new(|_| {}));
    for n in 0..RESTARTS {
        let crash = Assignment {
            task_id: format!("t{n}"),
            attempt: 1,
            payload: json!({}),
            timeout_ms: None,
        };
        let t = Instant::now();
        agent
            .cast(AgentMsg::Run(crash))
            .expect("the agent takes the assignment");
        let (at, next) = up.recv().await.expect("a restart");
        latencies
            .record(at.duration_since(t).as_nanos() as u64)
            .expect("record");
        agent = next;
    }
    let _ = std::panic::take_hook();
    supervisor.stop(None);
    println!("agent restart, crash -> serving again ({RESTARTS} restarts, one_for_one, no backoff)");
    report_latency("  restart", &latencies, Unit::Nanos);
}

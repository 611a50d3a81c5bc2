use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;
use tokio::sync::mpsc;

use super::*;
use crate::agent::spec::{BackendSpec, BuiltinKind, Owner};

/// Stands in for the scheduler: hands every finished attempt to the test, and every
/// start handed back to the second channel, if any.
struct Collector(
    mpsc::UnboundedSender<(String, u32)>,
    Option<mpsc::UnboundedSender<(String, u32)>>,
);

impl Actor for Collector {
    type Msg = Report;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Report>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(&self, _: ActorRef<Report>, msg: Report, _: &mut ()) -> Result<(), ActorProcessingErr> {
        match msg {
            Report::Finished { task_id, attempt, .. } => {
                let _ = self.0.send((task_id, attempt));
            }
            Report::Declined { task_id, attempt, .. } => {
                if let Some(declined) = &self.1 {
                    let _ = declined.send((task_id, attempt));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn sleeper() -> Arc<AgentSpec> {
    Arc::new(AgentSpec {
        name: "sleeper".into(),
        node: "test".into(),
        backend: BackendSpec::Builtin(BuiltinKind::Sleep),
        max_concurrent_tasks: 2,
        ..AgentSpec::example("a1@test", Owner::Node)
    })
}

fn run(attempt: u32) -> AgentMsg {
    AgentMsg::Run(Assignment {
        task_id: "t1".into(),
        attempt,
        payload: json!({ "ms": 1000 }),
        timeout_ms: None,
    })
}

#[tokio::test(start_paused = true)]
async fn a_late_done_of_an_earlier_attempt_leaves_the_current_attempt_cancellable() {
    let (tx, mut finished) = mpsc::unbounded_channel();
    let (scheduler, _) = Actor::spawn(None, Collector(tx, None), ()).await.unwrap();
    let actor = AgentActor {
        spec: sleeper(),
        reports: scheduler.get_derived(),
        report: Arc::new(|_, _, _| {}),
        discovered: Arc::new(|_| {}),
        outbox: None,
        lent: Default::default(),
    };
    let (agent, _) = Actor::spawn(None, actor, None).await.unwrap();
    agent.cast(run(1)).unwrap();
    agent.cast(run(2)).unwrap();
    // Attempt 1's end is reported late, after attempt 2 began; then attempt 2 is cancelled.
    agent
        .cast(AgentMsg::Done {
            task_id: "t1".into(),
            attempt: 1,
        })
        .unwrap();
    agent
        .cast(AgentMsg::Cancel {
            task_id: "t1".into(),
            attempt: 2,
        })
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(finished.try_recv().ok(), None, "the cancelled attempt ran to its end");
}

#[tokio::test(start_paused = true)]
async fn a_start_that_reaches_a_paused_or_stopping_agent_is_handed_back_not_run() {
    let (tx, mut finished) = mpsc::unbounded_channel();
    let (back, mut declined) = mpsc::unbounded_channel();
    let (scheduler, _) = Actor::spawn(None, Collector(tx, Some(back)), ()).await.unwrap();
    let actor = AgentActor {
        spec: sleeper(),
        reports: scheduler.get_derived(),
        report: Arc::new(|_, _, _| {}),
        discovered: Arc::new(|_| {}),
        outbox: None,
        lent: Default::default(),
    };
    let (agent, _) = Actor::spawn(None, actor, None).await.unwrap();
    // The scheduler cast the start before it learnt of the pause.
    ractor::call!(agent, AgentMsg::Pause, true).unwrap().unwrap();
    agent.cast(run(1)).unwrap();
    let back = tokio::time::timeout(Duration::from_secs(30), declined.recv()).await;
    assert_eq!(
        back.ok().flatten(),
        Some(("t1".to_string(), 1)),
        "the start was not handed back"
    );
    ractor::call!(agent, AgentMsg::Pause, false).unwrap().unwrap();
    ractor::call!(agent, AgentMsg::Drain).unwrap();
    agent.cast(run(2)).unwrap();
    let back = tokio::time::timeout(Duration::from_secs(30), declined.recv()).await;
    assert_eq!(
        back.ok().flatten(),
        Some(("t1".to_string(), 2)),
        "the start was not handed back"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(finished.try_recv().ok(), None, "a handed-back start ran");
}

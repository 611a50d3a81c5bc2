use serde_json::json;

use super::*;

/// A `Live` with no process behind it: the test plays the process, reading the lines sent
/// to it and answering through the reader's routing.
fn detached() -> (Arc<Live>, mpsc::UnboundedReceiver<String>) {
    let (lines, sent) = mpsc::unbounded_channel();
    let live = Arc::new(Live {
        logs: Default::default(),
        agent: "a@test".into(),
        // No group: signals to it are ignored.
        pgid: 0,
        lines,
        tasks: Mutex::new(HashMap::new()),
        requests: Mutex::new(HashMap::new()),
        seen_ms: AtomicU64::new(0),
        epoch: Instant::now(),
        paused: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
        killed_for: Mutex::new(None),
        next_request: AtomicU64::new(1),
    });
    (live, sent)
}

fn backend(live: Arc<Live>) -> Process {
    let spec = ProcessBackend {
        command: vec!["unused".into()],
        env: vec![],
        timeout_ms: None,
        heartbeat_ms: ProcessBackend::DEFAULT_HEARTBEAT_MS,
        missed_heartbeats: ProcessBackend::DEFAULT_MISSED,
        ready_timeout_ms: ProcessBackend::DEFAULT_READY_TIMEOUT_MS,
    };
    let mut process = Process::new(spec, "a@test".into(), Limits::default());
    process.live = Some(live);
    process
}

/// Answers the next request line after `after`, with a `reply` line.
fn answer_after(live: &Arc<Live>, mut sent: mpsc::UnboundedReceiver<String>, after: Duration) {
    let live = live.clone();
    tokio::spawn(async move {
        let line: Value = serde_json::from_str(&sent.recv().await.unwrap_or_default()).unwrap_or_default();
        tokio::time::sleep(after).await;
        let reply = json!({ "type": "reply", "id": line["id"], "payload": "answered" });
        io::route(&live, reply, &mut None, &Link::detached());
    });
}

#[tokio::test(start_paused = true)]
async fn a_message_waits_for_its_reply_as_long_as_its_own_timeout() {
    let (live, sent) = detached();
    let mut process = backend(live.clone());
    // Slower than the 10 s a checkpoint gets, within the message's minute.
    answer_after(&live, sent, Duration::from_secs(25));
    let answer = process.message(None, json!("hi"), Duration::from_secs(60)).await;
    assert_eq!(answer, Ok(json!("answered")));
}

#[tokio::test(start_paused = true)]
async fn a_message_gives_up_at_its_own_timeout() {
    let (live, sent) = detached();
    let mut process = backend(live.clone());
    answer_after(&live, sent, Duration::from_secs(25));
    let answer = process.message(None, json!("hi"), Duration::from_secs(2)).await;
    assert_eq!(
        answer,
        Err("the process did not answer message within 2000 ms".to_string())
    );
}

/// Starts attempt `attempt` of task t1 and waits until the process was told.
async fn started(
    process: &mut Process,
    sent: &mut mpsc::UnboundedReceiver<String>,
    attempt: u32,
) -> tokio::task::JoinHandle<Outcome> {
    let work = process.run(Assignment {
        task_id: "t1".into(),
        attempt,
        payload: json!(null),
        timeout_ms: None,
    });
    let running = tokio::spawn(work);
    let line = sent.recv().await.unwrap_or_default();
    assert!(line.contains("\"type\":\"task\""), "{line}");
    running
}

fn result(live: &Arc<Live>, line: Value) {
    io::route(live, line, &mut None, &Link::detached());
}

#[tokio::test]
async fn a_late_result_of_an_earlier_attempt_does_not_complete_the_running_one() {
    let (live, mut sent) = detached();
    let mut process = backend(live.clone());
    let running = started(&mut process, &mut sent, 2).await;
    result(
        &live,
        json!({ "type": "result", "id": "t1", "attempt": 1, "ok": true, "value": "old" }),
    );
    assert!(
        live.lock_tasks().contains_key("t1"),
        "attempt 2 was completed by attempt 1's result"
    );
    result(
        &live,
        json!({ "type": "result", "id": "t1", "attempt": 2, "ok": true, "value": "new" }),
    );
    assert_eq!(running.await.ok(), Some(Ok(json!("new"))));
}

#[tokio::test]
async fn a_result_without_an_attempt_completes_the_running_one() {
    let (live, mut sent) = detached();
    let mut process = backend(live.clone());
    let running = started(&mut process, &mut sent, 3).await;
    result(
        &live,
        json!({ "type": "result", "id": "t1", "ok": false, "error": "no" }),
    );
    assert_eq!(running.await.ok(), Some(Err("no".to_string())));
}

/// Stands in for the agent: hands the name of every signal of its backend to the test.
struct Agent(mpsc::UnboundedSender<&'static str>);

impl ractor::Actor for Agent {
    type Msg = crate::agent::AgentMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ractor::ActorRef<Self::Msg>, _: ()) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ractor::ActorRef<Self::Msg>,
        msg: Self::Msg,
        _: &mut (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        if let crate::agent::AgentMsg::Signal(signal) = msg {
            let _ = self.0.send(match signal {
                Signal::Unhealthy(_) => "unhealthy",
                Signal::Healthy => "healthy",
                Signal::Lost(_) => "lost",
                Signal::Errand(_) => "errand",
                Signal::Progress { .. } => "progress",
                Signal::CapabilitiesChanged => "capabilities",
            });
        }
        Ok(())
    }
}

/// A process heard just now, watched with `heartbeat_ms` and `missed` heartbeats: its
/// state, and the names of the signals its watchdog sends the agent.
async fn watched(heartbeat_ms: u64, missed: u32) -> (Arc<Live>, mpsc::UnboundedReceiver<&'static str>) {
    let (live, _sent) = detached();
    let (tx, signals) = mpsc::unbounded_channel();
    let (agent, _) = ractor::Actor::spawn(None, Agent(tx), ())
        .await
        .expect("a stand-in agent");
    let spec = ProcessBackend {
        command: vec!["unused".into()],
        env: vec![],
        timeout_ms: None,
        heartbeat_ms,
        missed_heartbeats: missed,
        ready_timeout_ms: ProcessBackend::DEFAULT_READY_TIMEOUT_MS,
    };
    live.touch();
    tokio::spawn(watchdog(live.clone(), spec, Link(Some(agent))));
    (live, signals)
}

#[tokio::test(start_paused = true)]
async fn a_silent_process_is_unhealthy_after_an_interval_and_a_half_then_hung_after_its_missed_intervals() {
    let start = Instant::now();
    let (_live, mut signals) = watched(1000, 3).await;
    assert_eq!(signals.recv().await, Some("unhealthy"));
    let late = start.elapsed();
    assert!(
        late >= Duration::from_millis(1500) && late < Duration::from_millis(2000),
        "{late:?}"
    );
    assert_eq!(signals.recv().await, Some("lost"), "a hung process is lost");
    let hung = start.elapsed();
    assert!(
        hung >= Duration::from_millis(3000) && hung < Duration::from_millis(3500),
        "{hung:?}"
    );
}

/// The attempts a hung process was running end saying it hung, not only that it exited:
/// the kill's exit may reach them before the agent's own failure does.
#[tokio::test(start_paused = true)]
async fn an_attempt_a_hung_process_was_running_ends_saying_it_hung() {
    let (live, mut sent) = detached();
    let mut process = backend(live.clone());
    let (tx, mut signals) = mpsc::unbounded_channel();
    let (agent, _) = ractor::Actor::spawn(None, Agent(tx), ())
        .await
        .expect("a stand-in agent");
    let running = started(&mut process, &mut sent, 1).await;
    let spec = ProcessBackend {
        command: vec!["unused".into()],
        env: vec![],
        timeout_ms: None,
        heartbeat_ms: 100,
        missed_heartbeats: 3,
        ready_timeout_ms: ProcessBackend::DEFAULT_READY_TIMEOUT_MS,
    };
    live.touch();
    tokio::spawn(watchdog(live.clone(), spec, Link(Some(agent))));
    while signals.recv().await != Some("lost") {}
    // What the process's exit does to the attempts it was running.
    live.lock_tasks().clear();
    let outcome = running.await.expect("the attempt ends");
    assert!(outcome.as_ref().is_err_and(|e| e.contains("hung")), "{outcome:?}");
}

/// A node that did not run for longer than the missed intervals (stopped by SIGSTOP, then
/// thawed) counts its process's silence from its thaw: the heartbeats the process wrote
/// meanwhile wait in its pipe, read a moment later. It was killed as hung at once.
#[tokio::test(start_paused = true)]
async fn a_process_is_judged_from_the_nodes_thaw_not_from_before_its_pause() {
    let (live, mut signals) = watched(1000, 3).await;
    // Heard every half interval for a while: nothing to say.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        live.touch();
    }
    // The node stops for 20 s: every timer is due at once when it runs again, before the
    // heartbeats waiting in the pipe are read.
    tokio::time::advance(Duration::from_secs(20)).await;
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
    live.touch();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        live.touch();
    }
    assert_eq!(signals.try_recv().ok(), None, "a signal for a process that was heard");
    // Silent from here: judged as ever.
    assert_eq!(signals.recv().await, Some("unhealthy"));
    assert_eq!(signals.recv().await, Some("lost"));
}

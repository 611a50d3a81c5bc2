//! Tasks whose end is on its way to the log, or landed a moment ago, when they are asked
//! for again: enqueued, requeued or adopted. Each must run again if it is queued, and never
//! twice while its end is still on its way.

use super::*;

#[tokio::test]
async fn a_task_queued_in_the_store_whose_enqueue_never_came_is_queued_once_asked_and_never_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    let s = with_an_agent(&store).await;
    // Written QUEUED, and its enqueue lost (the submit's outcome was unknown to its caller).
    let t1 = spec("t1");
    durable(&store, &t1, &TaskStatus::queued()).await;
    s.cast(SchedulerMsg::EnsureQueued("t1".into())).unwrap();
    let seen = next_events(&store, 0, &["TASK_SUCCEEDED"], 1).await;
    assert_eq!(seen[0].subject.as_deref(), Some("t1"));
    // Asked again once it ran (a second replay), it is not run again.
    s.cast(SchedulerMsg::EnsureQueued("t1".into())).unwrap();
    s.cast(SchedulerMsg::EnsureQueued("unknown".into())).unwrap();
    let running = ractor::call!(s, SchedulerMsg::Running).unwrap();
    store.flush().await.unwrap();
    assert_eq!(running, 0);
    let started = starts(&store).await;
    assert_eq!(started, 1, "ran once");
}

#[tokio::test]
async fn a_task_requeued_a_moment_after_it_ended_here_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    let s = with_an_agent(&store).await;
    let t1 = spec("t1");
    durable(&store, &t1, &TaskStatus::queued()).await;
    s.cast(SchedulerMsg::Enqueue(Box::new((t1.clone(), TaskStatus::queued()))))
        .unwrap();
    next_events(&store, 0, &["TASK_SUCCEEDED"], 1).await;
    // Requeued as `requeueTask` does: written QUEUED with its attempts so far, then handed
    // over, while the scheduler may not know yet that the end it wrote landed.
    let mut again = TaskStatus::queued();
    again.attempts = 1;
    durable(&store, &t1, &again).await;
    s.cast(SchedulerMsg::Enqueue(Box::new((t1, again)))).unwrap();
    let seen = next_events(&store, 0, &["TASK_SUCCEEDED"], 2).await;
    assert_eq!(seen.len(), 2, "ran again");
}

/// Holds the store's writer before each batch that closes a task (deletes its open-task
/// row) while armed, and says when it holds one.
#[derive(Clone)]
struct EndGate {
    armed: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    holding: Arc<tokio::sync::watch::Sender<bool>>,
}

impl EndGate {
    fn new() -> Self {
        Self {
            armed: Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new())),
            holding: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    fn hook(&self) -> FaultHook {
        let gate = self.clone();
        Arc::new(move |batch: &Batch| {
            let closes = batch.ops().iter().any(
                |op| matches!(op, troupe_runtime::store::Op::Delete { table, .. } if table.name() == OPEN_TASKS.name()),
            );
            let (lock, turned) = &*gate.armed;
            let mut armed = lock.lock().unwrap();
            if closes && *armed {
                gate.holding.send_replace(true);
                while *armed {
                    armed = turned.wait(armed).unwrap();
                }
            }
            None
        })
    }

    fn set(&self, on: bool) {
        let (lock, turned) = &*self.armed;
        *lock.lock().unwrap() = on;
        turned.notify_all();
    }

    async fn holds_one(&self) {
        self.holding.subscribe().wait_for(|h| *h).await.unwrap();
    }
}

#[tokio::test]
async fn a_task_that_ran_here_before_its_adoption_came_is_not_run_again_while_its_end_is_on_its_way() {
    let dir = tempfile::tempdir().unwrap();
    let gate = EndGate::new();
    let store = open(&dir, Some(gate.hook()));
    let s = with_an_agent(&store).await;
    // Placed here by a peer's submit, whose answer was given again before this node heard of
    // the placement: `EnsureQueued` comes before the placement's `Adopt`.
    let first = spec("t1@maker");
    durable(&store, &first, &TaskStatus::queued()).await;
    placed_here(&store, &first.id, 1).await;
    let second = spec("t2@maker");
    durable(&store, &second, &TaskStatus::queued()).await;
    placed_here(&store, &second.id, 1).await;
    gate.set(true);
    s.cast(SchedulerMsg::EnsureQueued(first.id.clone())).unwrap();
    // It ran, and its end is held on its way to the store, which still says it is open.
    gate.holds_one().await;
    s.cast(SchedulerMsg::Adopt(vec![first.id.clone(), second.id.clone()]))
        .unwrap();
    // A call behind the cast: the adoption was handled (taken, or put off) meanwhile, and
    // did not wait on the end held back (which a task read as still running elsewhere does:
    // its requeue is written and waited for).
    let handled = tokio::time::timeout(Duration::from_secs(10), async {
        ractor::call!(s, SchedulerMsg::Running)
    })
    .await;
    gate.set(false);
    handled.expect("the adoption was handled at once").unwrap();
    // The other task adopted with it ran: the adoption was carried out.
    let filter = EventFilter {
        kinds: Some(["TASK_SUCCEEDED".to_string()].into()),
        subject: Some(second.id.clone()),
    };
    let done = events::subscribe(&store, 0, filter)
        .take(1)
        .map(Result::unwrap)
        .collect::<Vec<_>>();
    tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .expect("the second task succeeded within 10 s");
    ractor::call!(s, SchedulerMsg::Running).unwrap();
    store.flush().await.unwrap();
    let events = store.events_after(0, 100).await.unwrap();
    let started = |id: &str| {
        events
            .iter()
            .filter(|e| e.kind == "TASK_STARTED" && e.subject.as_deref() == Some(id))
            .count()
    };
    assert_eq!(
        started(&first.id),
        1,
        "the task that ran before its adoption came ran once"
    );
    assert_eq!(started(&second.id), 1);
}

#[tokio::test]
async fn adopting_takes_the_open_tasks_moved_here_whichever_node_made_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    let s = with_an_agent(&store).await;
    // Made on "maker", handed to "lost" (no agent of maker's served it), which was lost:
    // the failover moves it here and says it came from "lost".
    let moved = spec("t9@maker");
    durable(&store, &moved, &TaskStatus::queued()).await;
    placed_here(&store, &moved.id, 2).await;
    // Told with an id it does not hold and one that is not open: neither is taken.
    let closed = spec("t8@maker");
    store
        .write(Batch::new().put(TASKS, closed.id.clone(), enc(&closed)))
        .await
        .unwrap();
    placed_here(&store, &closed.id, 2).await;
    let elsewhere = spec("t7@maker");
    durable(&store, &elsewhere, &TaskStatus::queued()).await;
    s.cast(SchedulerMsg::Adopt(vec![
        moved.id.clone(),
        closed.id.clone(),
        elsewhere.id.clone(),
    ]))
    .unwrap();
    let seen = next_events(&store, 0, &["TASK_SUCCEEDED"], 1).await;
    assert_eq!(seen[0].subject.as_deref(), Some("t9@maker"));
    ractor::call!(s, SchedulerMsg::Running).unwrap();
    store.flush().await.unwrap();
    let started: Vec<Option<String>> = store
        .events_after(0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "TASK_STARTED")
        .map(|e| e.subject)
        .collect();
    assert_eq!(
        started,
        [Some("t9@maker".to_owned())],
        "only the open task held here ran"
    );
}

#[tokio::test]
async fn adopting_while_a_tasks_end_is_on_its_way_to_the_log_does_not_run_it_again() {
    // The end of a task (the batch that takes it out of the open tasks) is slow to commit;
    // the hook says when it reached the writer.
    let (seen, mut reached) = tokio::sync::watch::channel(false);
    let hook: FaultHook = Arc::new(move |b: &Batch| {
        let ends = b
            .ops()
            .iter()
            .any(|op| matches!(op, troupe_runtime::store::Op::Delete { table, .. } if *table == OPEN_TASKS));
        ends.then(|| {
            seen.send_replace(true);
            Fault::Delay(Duration::from_secs(2))
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, Some(hook));
    let s = with_an_agent(&store).await;
    let t1 = spec("t1");
    durable(&store, &t1, &TaskStatus::queued()).await;
    s.cast(SchedulerMsg::Enqueue(Box::new((t1, TaskStatus::queued()))))
        .unwrap();
    reached.wait_for(|r| *r).await.unwrap();
    // A move to this node (a failover, a hand-off) while that end is not in the log yet: the
    // task is not read back as open, and the one that moved here runs.
    let moved = spec("t2@maker");
    durable(&store, &moved, &TaskStatus::queued()).await;
    placed_here(&store, &moved.id, 1).await;
    s.cast(SchedulerMsg::Adopt(vec![moved.id.clone()])).unwrap();
    let ended = next_events(&store, 0, &["TASK_SUCCEEDED"], 2).await;
    ractor::call!(s, SchedulerMsg::Running).unwrap();
    store.flush().await.unwrap();
    let mut ended: Vec<Option<String>> = ended.into_iter().map(|e| e.subject.clone()).collect();
    ended.sort();
    assert_eq!(ended, [Some("t1".to_owned()), Some("t2@maker".to_owned())]);
    let started = starts(&store).await;
    assert_eq!(started, 2, "each ran once");
}

use super::*;
use crate::events::NewEvent;
use serde_json::json;

const AGENTS: Table = Table::new("agents");
const TASKS: Table = Table::new("tasks");

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    (dir, store)
}

#[tokio::test]
async fn a_write_is_readable_once_acknowledged() {
    let (_d, store) = open();
    store
        .write(Batch::new().put(AGENTS, "a1", b"x".to_vec()))
        .await
        .unwrap();
    assert_eq!(store.get(AGENTS, "a1").await.unwrap(), Some(b"x".to_vec()));
    store.write(Batch::new().delete(AGENTS, "a1")).await.unwrap();
    assert_eq!(store.get(AGENTS, "a1").await.unwrap(), None);
}

#[tokio::test]
async fn concurrent_writers_get_distinct_increasing_sequence_numbers() {
    let (_d, store) = open();
    let tickets: Vec<_> = (0..500)
        .map(|i| store.submit(Batch::new().event(NewEvent::new("T", Some(format!("s{i}")), json!({"i": i})))))
        .collect();
    let mut seqs = Vec::new();
    for t in tickets {
        seqs.extend(t.durable().await.unwrap());
    }
    // Submission order is commit order, so the numbers come back sorted and dense.
    assert_eq!(seqs, (1..=500).collect::<Vec<u64>>());
    let log = store.events_after(0, 1000).await.unwrap();
    assert_eq!(log.len(), 500);
    assert_eq!(log[7].data, json!({"i": 7}));
}

#[tokio::test]
async fn sequence_numbers_continue_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let store = Store::open(&path).unwrap();
        store
            .write(Batch::new().event(NewEvent::new("A", None, json!(null))))
            .await
            .unwrap();
    }
    // The writer thread holds the database until its channel closes; give it a moment.
    let store = loop {
        match Store::open(&path) {
            Ok(s) => break s,
            Err(StoreError::Locked) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            Err(e) => panic!("{e}"),
        }
    };
    let seqs = store
        .write(Batch::new().event(NewEvent::new("B", None, json!(null))))
        .await
        .unwrap();
    assert_eq!(seqs, vec![2]);
}

#[tokio::test]
async fn scan_pages_in_key_order_and_filters() {
    let (_d, store) = open();
    let mut batch = Batch::new();
    for k in ["c", "a", "b", "d"] {
        batch = batch.put(TASKS, k, k.as_bytes().to_vec());
    }
    store.write(batch).await.unwrap();
    let page = store.scan(TASKS, None, 2, |_| true).await.unwrap();
    assert_eq!(page.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    let page = store.scan(TASKS, Some("b".into()), 10, |v| v != b"c").await.unwrap();
    assert_eq!(page.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["d"]);
}

#[tokio::test]
async fn a_prefix_scan_reads_one_owners_keys_from_the_first_and_stops_past_the_last() {
    let (_d, store) = open();
    let mut batch = Batch::new();
    for k in ["ag", "ag/", "ag/1", "ag/2", "ag0", "agent/1", "b/1"] {
        batch = batch.put(TASKS, k, k.as_bytes().to_vec());
    }
    store.write(batch).await.unwrap();
    let keys = |prefix: &'static str, first: usize| {
        store.view(move |v| {
            let mut out = Vec::new();
            v.scan_prefix(TASKS, prefix, |k, value| {
                assert_eq!(k.as_bytes(), value);
                out.push(k.to_owned());
                Ok(out.len() < first)
            })?;
            Ok(out)
        })
    };
    // The key equal to the prefix is one of its keys; "ag0" sorts past "ag/…" and ends it.
    assert_eq!(keys("ag/", 10).await.unwrap(), ["ag/", "ag/1", "ag/2"]);
    assert_eq!(keys("ag/", 2).await.unwrap(), ["ag/", "ag/1"]);
    assert_eq!(keys("agent/", 10).await.unwrap(), ["agent/1"]);
    assert_eq!(keys("c/", 10).await.unwrap(), Vec::<String>::new());
    assert_eq!(keys("", 100).await.unwrap().len(), 7);
    // A table never written holds no keys.
    let none = store
        .view(|v| {
            let mut n = 0;
            v.scan_prefix(crate::store::Table::new("never_written"), "", |_, _| {
                n += 1;
                Ok(true)
            })?;
            Ok(n)
        })
        .await
        .unwrap();
    assert_eq!(none, 0);
}

#[tokio::test]
async fn the_log_keeps_the_newest_events_and_a_too_old_cursor_is_an_error_not_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        &dir.path().join("db"),
        StoreOptions {
            event_retention: 10,
            ..Default::default()
        },
    )
    .unwrap();
    for i in 0..30 {
        store
            .write(Batch::new().event(NewEvent::new("E", None, json!(i))))
            .await
            .unwrap();
    }
    let err = store.events_after(0, 100).await.unwrap_err();
    let StoreError::Compacted { after: 0, oldest } = err else {
        panic!("{err}")
    };
    assert!((19..=21).contains(&oldest), "oldest kept {oldest}");
    let tail = store.events_after(oldest - 1, 100).await.unwrap();
    assert_eq!(tail.first().map(|e| e.seq), Some(oldest));
    assert_eq!(tail.last().map(|e| e.seq), Some(30));
    assert!(tail.len() <= 12, "kept {}", tail.len());
}

#[test]
fn trimming_waits_for_a_tenth_over_the_limit_and_keeps_exactly_the_limit() {
    let log = |oldest, next_seq| Log {
        oldest,
        next_seq,
        retention: 100,
        term: None,
    };
    assert_eq!(log(1, 111).cut(), None);
    assert_eq!(log(1, 112).cut(), Some(12));
    assert_eq!(
        Log {
            oldest: 1,
            next_seq: 10_000,
            retention: 0,
            term: None,
        }
        .cut(),
        None
    );
}

#[tokio::test]
async fn one_rejected_batch_fails_alone_and_the_rest_of_its_group_commits() {
    let dir = tempfile::tempdir().unwrap();
    let hook: FaultHook = Arc::new(|b: &Batch| b.touches(TASKS).then_some(Fault::Reject));
    let options = StoreOptions {
        fault: Some(hook),
        ..StoreOptions::default()
    };
    let store = Store::open_with(&dir.path().join("db"), options).unwrap();
    // Handed over together, so the writer folds them into one group.
    let tickets: Vec<_> = (0..20)
        .map(|i| {
            let table = if i == 7 { TASKS } else { AGENTS };
            store.submit(
                Batch::new()
                    .put(table, format!("k{i}"), vec![1])
                    .event(NewEvent::new("W", None, json!(i))),
            )
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tickets {
        outcomes.push(t.durable().await);
    }
    for (i, outcome) in outcomes.iter().enumerate() {
        if i == 7 {
            assert!(matches!(outcome, Err(StoreError::Rejected(_))), "{outcome:?}");
        } else {
            assert!(outcome.is_ok(), "batch {i}: {outcome:?}");
        }
    }
    assert_eq!(store.get(AGENTS, "k19").await.unwrap(), Some(vec![1]));
    assert_eq!(store.get(TASKS, "k7").await.unwrap(), None);
    // The rejected batch's event took no sequence number: the log stays dense.
    let seqs: Vec<u64> = store
        .events_after(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (1..=19).collect::<Vec<u64>>());
    assert!(store.failure().is_none());
}

#[tokio::test]
async fn a_failed_commit_stops_the_store_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = broken.clone();
    let hook: FaultHook =
        Arc::new(move |_: &Batch| flag.load(std::sync::atomic::Ordering::SeqCst).then_some(Fault::Fail));
    let options = StoreOptions {
        fault: Some(hook),
        ..StoreOptions::default()
    };
    let store = Store::open_with(&dir.path().join("db"), options).unwrap();
    store.write(Batch::new().put(AGENTS, "a", vec![1])).await.unwrap();
    broken.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = store.write(Batch::new().put(AGENTS, "b", vec![2])).await.unwrap_err();
    assert!(matches!(&err, StoreError::Failed(r) if r.contains("injected")), "{err}");
    let reason = tokio::time::timeout(std::time::Duration::from_secs(5), store.failed())
        .await
        .unwrap();
    assert!(reason.contains("injected"), "{reason}");
    assert!(store.failure().is_some());
    // Later writes are refused with the same reason instead of hanging.
    let later = store.write(Batch::new().put(AGENTS, "c", vec![3])).await.unwrap_err();
    assert!(matches!(later, StoreError::Failed(_)), "{later}");
    assert_eq!(store.get(AGENTS, "a").await.unwrap(), Some(vec![1]));
}

#[tokio::test]
async fn events_of_some_kinds_are_read_through_the_index_and_cursors_are_checked() {
    let (_d, store) = open();
    for i in 0..50u64 {
        let kind = if i % 10 == 3 { "RARE" } else { "COMMON" };
        store
            .write(Batch::new().event(NewEvent::new(kind, None, json!(i))))
            .await
            .unwrap();
    }
    let rare = store.events_of_kinds(0, vec!["RARE".into()], 100).await.unwrap();
    assert_eq!(rare.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 14, 24, 34, 44]);
    let page = store
        .events_of_kinds(14, vec!["RARE".into(), "NONE".into()], 2)
        .await
        .unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [24, 34]);
    let err = store.events_after(51, 10).await.unwrap_err();
    assert!(matches!(err, StoreError::FutureCursor { after: 51, last: 50 }), "{err}");
    assert!(err.is_bad_cursor());
    assert!(store.events_after(50, 10).await.unwrap().is_empty());
    // The newest of some kinds, or of all, oldest first.
    let seqs = |events: Vec<crate::events::Event>| events.iter().map(|e| e.seq).collect::<Vec<_>>();
    let last = store
        .last_events(Some(vec!["RARE".into(), "NONE".into()]), 2)
        .await
        .unwrap();
    assert_eq!(seqs(last), [34, 44]);
    assert_eq!(seqs(store.last_events(None, 3).await.unwrap()), [48, 49, 50]);
    assert_eq!(
        seqs(store.last_events(Some(vec!["RARE".into()]), 9).await.unwrap()).len(),
        5
    );
}

#[tokio::test]
async fn an_entitys_events_are_read_through_the_subject_index_however_many_came_after() {
    use crate::store::Window;
    let (dir, store) = open();
    let about = |subject: &str, i: u64| NewEvent::new("SAID", Some(subject.to_owned()), json!(i));
    store.write(Batch::new().event(about("x", 0))).await.unwrap();
    // Six thousand events about others after it (more than a reader would page through).
    for chunk in 0..6u64 {
        let mut batch = Batch::new();
        for i in 0..1000 {
            batch = batch.event(about("y", chunk * 1000 + i));
        }
        store.write(batch).await.unwrap();
    }
    store
        .write(
            Batch::new()
                .event(about("x", 1))
                .event(NewEvent::new("OTHER", Some("x".into()), json!(2))),
        )
        .await
        .unwrap();
    let seqs = |events: Vec<crate::events::Event>| events.iter().map(|e| e.seq).collect::<Vec<_>>();
    let last = Window::Last;
    assert_eq!(
        seqs(store.events_about("x".into(), last, None, 10).await.unwrap()),
        [1, 6002, 6003]
    );
    assert_eq!(
        seqs(store.events_about("x".into(), last, None, 2).await.unwrap()),
        [6002, 6003]
    );
    let said = Some(vec!["SAID".into()]);
    assert_eq!(
        seqs(store.events_about("x".into(), last, said.clone(), 10).await.unwrap()),
        [1, 6002]
    );
    let after = Window::After(1);
    assert_eq!(
        seqs(store.events_about("x".into(), after, None, 1).await.unwrap()),
        [6002]
    );
    assert!(store
        .events_about("nobody".into(), last, None, 10)
        .await
        .unwrap()
        .is_empty());
    let err = store
        .events_about("x".into(), Window::After(7000), None, 1)
        .await
        .unwrap_err();
    assert!(err.is_bad_cursor(), "{err}");

    // A store written before the index existed gets it at its next opening.
    drop(store);
    let path = dir.path().join("db");
    {
        // The writer thread holds the database until its channel closes.
        let db = loop {
            match redb::Database::create(&path) {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await
                }
                Err(e) => panic!("{e}"),
            }
        };
        let txn = db.begin_write().unwrap();
        txn.delete_table(crate::store::EVENT_SUBJECTS).unwrap();
        txn.commit().unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(
        seqs(store.events_about("x".into(), last, said, 10).await.unwrap()),
        [1, 6002]
    );
}

#[tokio::test]
async fn the_database_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let _store = Store::open(&path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn a_batch_whose_condition_fails_is_applied_not_at_all_and_alone() {
    let (_d, store) = open();
    let claim = |who: &str| {
        Batch::new()
            .require(AGENTS, "owner", None)
            .put(AGENTS, "owner", who.as_bytes().to_vec())
            .event(NewEvent::new("CLAIMED", Some(who.into()), json!(null)))
    };
    // Two claims of one key in one group commit: the first holds, the second is stale,
    // and a plain batch between them is applied as usual.
    let first = store.submit(claim("a"));
    let plain = store.submit(Batch::new().put(TASKS, "t", b"1".to_vec()));
    let second = store.submit(claim("b"));
    assert_eq!(first.durable().await.unwrap(), vec![1]);
    assert!(plain.durable().await.is_ok());
    assert!(matches!(second.durable().await, Err(StoreError::Stale(_))));
    assert_eq!(store.get(AGENTS, "owner").await.unwrap(), Some(b"a".to_vec()));
    let log = store.events_after(0, 10).await.unwrap();
    assert_eq!(log.len(), 1, "the stale batch's event was not recorded");
    // A fence makes every later batch carry a condition: it holds, then it no longer does.
    store.fence(Some((AGENTS, "owner".into(), Some(b"a".to_vec()))));
    store.write(Batch::new().put(TASKS, "t", b"2".to_vec())).await.unwrap();
    store
        .write(Batch::new().put(AGENTS, "owner", b"c".to_vec()))
        .await
        .unwrap();
    let refused = store.write(Batch::new().put(TASKS, "t", b"3".to_vec())).await;
    assert!(matches!(refused, Err(StoreError::Stale(_))), "{refused:?}");
    // Said so that a client knows nothing was written and what to do.
    let said = refused.unwrap_err().to_string();
    assert!(
        said.contains("nothing of it was written") && said.contains("send it again"),
        "{said}"
    );
    assert_eq!(store.get(TASKS, "t").await.unwrap(), Some(b"2".to_vec()));
    store.fence(None);
    store.write(Batch::new().put(TASKS, "t", b"4".to_vec())).await.unwrap();
    assert_eq!(store.get(TASKS, "t").await.unwrap(), Some(b"4".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_carries_the_fence_of_the_moment_it_was_handed_over_not_of_its_commit() {
    // The writer is held on a first batch; a second is handed over behind it, then the node
    // takes its new epoch, then a third: the second was decided under the old epoch.
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(Some((held_tx, go_rx)));
    let hook: FaultHook = Arc::new(move |b: &Batch| {
        if let Some((held, go)) = b.touches(TASKS).then(|| gate.lock().unwrap().take()).flatten() {
            held.send(()).unwrap();
            go.recv().unwrap();
        }
        None
    });
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        fault: Some(hook),
        ..StoreOptions::default()
    };
    let store = Store::open_with(&dir.path().join("db"), options).unwrap();
    // The cluster moved this node to epoch 2; the node still writes under epoch 1.
    store
        .write(Batch::new().put(AGENTS, "epoch", b"2".to_vec()))
        .await
        .unwrap();
    store.fence(Some((AGENTS, "epoch".into(), Some(b"1".to_vec()))));
    let first = store.submit(Batch::new().put(TASKS, "held", b"1".to_vec()));
    tokio::task::spawn_blocking(move || held_rx.recv().unwrap())
        .await
        .unwrap();
    let before = store.submit(Batch::new().put(AGENTS, "stopped", b"old copy".to_vec()));
    store.fence(Some((AGENTS, "epoch".into(), Some(b"2".to_vec()))));
    let after = store.submit(Batch::new().put(AGENTS, "started", b"again".to_vec()));
    go_tx.send(()).unwrap();
    assert!(matches!(first.durable().await, Err(StoreError::Stale(_))));
    let before = before.durable().await;
    assert!(matches!(before, Err(StoreError::Stale(_))), "{before:?}");
    after.durable().await.unwrap();
    assert_eq!(store.get(AGENTS, "stopped").await.unwrap(), None);
    assert_eq!(store.get(AGENTS, "started").await.unwrap(), Some(b"again".to_vec()));
}

fn with_armed() -> (tempfile::TempDir, Store, ArmedFaults) {
    let dir = tempfile::tempdir().unwrap();
    let armed = ArmedFaults::default();
    let options = StoreOptions {
        fault: Some(armed.hook(None)),
        ..StoreOptions::default()
    };
    let store = Store::open_with(&dir.path().join("db"), options).unwrap();
    (dir, store, armed)
}

fn far() -> std::time::Instant {
    std::time::Instant::now() + std::time::Duration::from_secs(600)
}

#[tokio::test]
async fn an_armed_full_disk_refuses_what_grows_the_store_until_disarmed_and_counts_it() {
    let (_d, store, armed) = with_armed();
    store.write(Batch::new().put(AGENTS, "a", vec![1])).await.unwrap();
    armed.arm("full", NodeFault::DiskFull, far());
    let refused = store.write(Batch::new().put(AGENTS, "b", vec![2])).await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::Unavailable(r) if r.contains("no space")),
        "{refused}"
    );
    let event = store.write(Batch::new().event(NewEvent::new("E", None, json!(1))));
    assert!(matches!(event.await, Err(StoreError::Unavailable(_))));
    // An experiment's record passes, as its events do: its report stays whole.
    let record = Batch::new()
        .put(super::EXPERIMENTS, "x@n", vec![3])
        .event(NewEvent::new("EXPERIMENT_FINISHED", None, json!(1)));
    store.write(record).await.unwrap();
    // Deleting makes room: it goes through, and the node's store is not failed.
    store.write(Batch::new().delete(AGENTS, "a")).await.unwrap();
    assert!(store.failure().is_none());
    let hits = armed.disarm("full").unwrap();
    assert_eq!(hits.hits, 2);
    assert!(hits.first.is_some());
    store.write(Batch::new().put(AGENTS, "b", vec![2])).await.unwrap();
    assert_eq!(store.get(AGENTS, "b").await.unwrap(), Some(vec![2]));
}

#[tokio::test]
async fn an_armed_rejection_takes_only_its_tables_and_an_expired_one_is_gone() {
    let (_d, store, armed) = with_armed();
    armed.arm(
        "tasks",
        NodeFault::Reject {
            tables: vec!["tasks".into()],
        },
        far(),
    );
    let refused = store.write(Batch::new().put(TASKS, "t", vec![1])).await.unwrap_err();
    assert!(matches!(refused, StoreError::Rejected(_)), "{refused}");
    store.write(Batch::new().put(AGENTS, "a", vec![1])).await.unwrap();
    // Armed until now: already expired, so nothing is refused and nothing is armed.
    armed.arm("tasks", NodeFault::Reject { tables: vec![] }, std::time::Instant::now());
    store.write(Batch::new().put(TASKS, "t", vec![1])).await.unwrap();
    assert!(armed.armed().is_empty());
    assert_eq!(armed.disarm("tasks"), None);
}

#[tokio::test]
async fn an_armed_slow_commit_holds_each_commit_at_least_its_delay() {
    let (_d, store, armed) = with_armed();
    let delay = std::time::Duration::from_millis(200);
    armed.arm("slow", NodeFault::SlowCommit { delay }, far());
    let started = std::time::Instant::now();
    store.write(Batch::new().put(AGENTS, "a", vec![1])).await.unwrap();
    assert!(started.elapsed() >= delay);
    assert_eq!(armed.disarm("slow").unwrap().hits, 1);
}

#[test]
fn a_cut_covers_only_its_peers() {
    let armed = ArmedFaults::default();
    armed.arm(
        "cut",
        NodeFault::Cut {
            peers: vec!["beta".into()],
        },
        far(),
    );
    assert!(armed.cut_off("beta"));
    assert!(!armed.cut_off("gamma"));
    assert_eq!(armed.hits("cut").unwrap().hits, 1);
    armed.disarm("cut");
    assert!(!armed.cut_off("beta"));
}

/// Whether the redb file at `path`, as it is on disk now, opens without a repair: a copy is
/// opened, so that the live database stays open as a process that ends without closing it
/// leaves it.
fn opens_without_a_repair(path: &std::path::Path) -> bool {
    let copy = path.with_extension("copy");
    std::fs::copy(path, &copy).unwrap();
    let opened = redb::Database::builder()
        .set_repair_callback(|session| session.abort())
        .open(&copy);
    let _ = std::fs::remove_file(&copy);
    match opened {
        Ok(_) => true,
        Err(redb::DatabaseError::RepairAborted) => false,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn a_store_persisted_for_its_stop_opens_again_without_a_repair() {
    let (dir, store) = open();
    for i in 0..50 {
        store
            .write(Batch::new().put(AGENTS, format!("a{i}"), vec![7; 4096]))
            .await
            .unwrap();
    }
    let tables = dir.path().join("db");
    // Left open after its writes, as a killed node leaves it, the tables' file needs a
    // repair: every page read again at the next start.
    assert!(!opens_without_a_repair(&tables));
    store.persist().await.unwrap();
    assert!(opens_without_a_repair(&tables));
}

#[tokio::test]
async fn a_leaders_decision_carries_no_fence_and_is_refused_for_another_term() {
    let (_dir, store) = open();
    let term = store.status().term;
    // This node's writes carry an epoch the cluster has moved past: its own writes are
    // refused, the decisions of the term it leads are not.
    store.fence(Some((AGENTS, "epoch".into(), Some(b"1".to_vec()))));
    let plain = store.write(Batch::new().put(TASKS, "plain", b"1".to_vec())).await;
    assert!(matches!(plain, Err(StoreError::Stale(_))), "{plain:?}");
    let decided = Batch::new().put(TASKS, "decided", b"1".to_vec()).led_in(term);
    assert!(decided.is_led());
    store.write(decided).await.unwrap();
    let earlier = Batch::new().put(TASKS, "earlier", b"1".to_vec()).led_in(term - 1);
    let earlier = store.write(earlier).await;
    assert!(matches!(earlier, Err(StoreError::Stale(_))), "{earlier:?}");
    assert_eq!(store.get(TASKS, "decided").await.unwrap(), Some(b"1".to_vec()));
    assert_eq!(store.get(TASKS, "earlier").await.unwrap(), None);
}

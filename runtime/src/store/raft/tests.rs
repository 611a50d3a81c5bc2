use std::sync::Arc;

use serde_json::json;

use crate::events::NewEvent;
use crate::store::{Batch, Store, StoreError, Table};

const THINGS: Table = Table::new("things");

#[tokio::test]
async fn a_fresh_store_is_a_one_node_cluster_that_leads_and_writes_without_log_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let metrics = store.raft().metrics().borrow().clone();
    assert_eq!(metrics.current_leader, Some(metrics.id));
    // Index 0 is the one-node membership, 1 the new leader's blank entry.
    let last = metrics.last_log_index;
    assert_eq!(last, Some(1));
    let seqs = store
        .write(
            Batch::new()
                .put(THINGS, "k", vec![7])
                .event(NewEvent::new("T", None, json!(null))),
        )
        .await
        .unwrap();
    assert_eq!(seqs, vec![1]);
    assert_eq!(store.get(THINGS, "k").await.unwrap(), Some(vec![7]));
    // Alone, the write is one durable transaction of the tables, with no entry of the log.
    assert_eq!(store.raft().metrics().borrow().last_log_index, last);
}

#[tokio::test]
async fn a_write_after_the_node_stopped_its_raft_member_is_closed_not_a_failure_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    store.write(Batch::new().put(THINGS, "before", vec![1])).await.unwrap();
    store.stop_raft().await;
    let late = store.write(Batch::new().put(THINGS, "late", vec![2])).await;
    assert!(matches!(late, Err(crate::store::StoreError::Closed)), "{late:?}");
    assert_eq!(store.failure(), None, "a stop on purpose is no failure");
    store.flush().await.unwrap();
    assert_eq!(store.get(THINGS, "before").await.unwrap(), Some(vec![1]));
}

#[tokio::test]
async fn a_stopped_member_answers_raft_messages_as_closed_without_asking_its_core() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let vote = openraft::raft::VoteRequest::new(openraft::Vote::new(9, 12345), None);
    let request = crate::codec::encode(&vote).unwrap();
    store.stop_raft().await;
    let answer = super::serve(&store, super::RpcKind::Vote, &request).await;
    assert!(matches!(answer, Err(crate::store::StoreError::Closed)), "{answer:?}");
}

#[tokio::test]
async fn a_reopened_store_keeps_its_raft_id_and_leads_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let id = {
        let store = Store::open(&path).unwrap();
        store.write(Batch::new().put(THINGS, "k", vec![1])).await.unwrap();
        store.raft().metrics().borrow().id
    };
    let store = loop {
        match Store::open(&path) {
            Ok(s) => break s,
            Err(crate::store::StoreError::Locked) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            Err(e) => panic!("{e}"),
        }
    };
    let metrics = store.raft().metrics().borrow().clone();
    assert_eq!(metrics.id, id);
    assert_eq!(metrics.current_leader, Some(id));
    store.write(Batch::new().put(THINGS, "k2", vec![2])).await.unwrap();
    assert_eq!(store.get(THINGS, "k").await.unwrap(), Some(vec![1]));
}

/// Stores of one process that reach each other by name, with links a test can cut, and
/// forwarded groups a test can hold and let go in the order it chooses.
#[derive(Default)]
struct Router {
    stores: std::sync::Mutex<std::collections::HashMap<String, Store>>,
    cut: std::sync::Mutex<std::collections::HashSet<String>>,
    /// While `Some`, the forwarded groups (`RpcKind::Propose`) held on the way.
    held: std::sync::Mutex<Option<Vec<Parked>>>,
    /// How many groups were held so far.
    parked: tokio::sync::watch::Sender<usize>,
    /// Members whose appends each take this long to arrive (a busy machine's).
    slow: std::sync::Mutex<std::collections::HashMap<String, std::time::Duration>>,
    /// Per member, the highest commit index an append carried to it, and how many appends
    /// of no entries moved it.
    commits: std::sync::Mutex<std::collections::HashMap<String, (u64, usize)>>,
}

type Answer = Result<Vec<u8>, super::network::SendError>;

/// The largest message the router carries: ractor_cluster's frame limit, the smaller of the
/// two transports a node has.
const FRAME_LIMIT: usize = 16 << 20;

/// A forwarded group held on the way, and where its answer goes.
struct Parked {
    to: String,
    request: Vec<u8>,
    answer: tokio::sync::oneshot::Sender<Answer>,
}

impl Router {
    /// Holds every forwarded group from now on.
    fn hold(&self) {
        *self.held.lock().unwrap() = Some(Vec::new());
    }

    /// Waits (at most 10 s) until `n` groups were held.
    async fn parked_at_least(&self, n: usize) {
        let mut parked = self.parked.subscribe();
        let waited = tokio::time::timeout(std::time::Duration::from_secs(10), parked.wait_for(|held| *held >= n))
            .await
            .is_ok();
        assert!(waited, "{} group(s) held, not {n}", *parked.borrow());
    }

    /// Stops holding; the groups held, in the order they came.
    fn release(&self) -> Vec<Parked> {
        self.held.lock().unwrap().take().unwrap_or_default()
    }

    /// Delivers a held group to its member and passes the answer back.
    async fn deliver(&self, parked: Parked) {
        let store = self.stores.lock().unwrap().get(&parked.to).cloned().unwrap();
        let answer = super::serve(&store, super::RpcKind::Propose, &parked.request)
            .await
            .map_err(|e| super::network::SendError::Lost(e.to_string()));
        let _ = parked.answer.send(answer);
    }
}

impl super::Transport for Router {
    fn send(
        &self,
        to: &str,
        kind: super::RpcKind,
        request: Vec<u8>,
        within: std::time::Duration,
    ) -> futures::future::BoxFuture<'static, Result<Vec<u8>, super::network::SendError>> {
        if kind == super::RpcKind::Propose {
            if let Some(held) = self.held.lock().unwrap().as_mut() {
                let (answer, answered) = tokio::sync::oneshot::channel();
                held.push(Parked {
                    to: to.to_owned(),
                    request,
                    answer,
                });
                self.parked.send_modify(|n| *n += 1);
                return Box::pin(async move {
                    let lost = || super::network::SendError::Lost("dropped by the test".into());
                    answered.await.unwrap_or_else(|_| Err(lost()))
                });
            }
        }
        if request.len() > FRAME_LIMIT {
            // As ractor_cluster's link does: such a message never leaves.
            let why = format!("a message of {} bytes is over the frame limit", request.len());
            return Box::pin(async move { Err(super::network::SendError::NotSent(why)) });
        }
        let store = if self.cut.lock().unwrap().contains(to) {
            None
        } else {
            self.stores.lock().unwrap().get(to).cloned()
        };
        let slow = match kind {
            super::RpcKind::Append => self.slow.lock().unwrap().get(to).copied(),
            _ => None,
        };
        if kind == super::RpcKind::Append && store.is_some() {
            let (rpc, _) = super::network::addressed::<openraft::raft::AppendEntriesRequest<super::Troupe>>(&request)
                .expect("an append");
            let mut commits = self.commits.lock().unwrap();
            let (told, alone) = commits.entry(to.to_owned()).or_default();
            let commit = rpc.leader_commit.map_or(0, |c| c.index);
            if commit > *told {
                *told = commit;
                *alone += usize::from(rpc.entries.is_empty());
            }
        }
        let to = to.to_owned();
        Box::pin(async move {
            use super::network::SendError;
            let store: Store = store.ok_or_else(|| SendError::NotSent(format!("{to} is not reachable")))?;
            if let Some(slow) = slow {
                tokio::time::sleep(slow).await;
            }
            tokio::time::timeout(within, super::serve(&store, kind, &request))
                .await
                .map_err(|_| SendError::Lost(format!("{to} did not answer")))?
                .map_err(|e| SendError::Lost(e.to_string()))
        })
    }
}

#[test]
fn a_member_the_snapshot_rule_counts_as_being_sent_the_rest_loses_no_entry_not_yet_sent() {
    // The rule (`snapshots::due`) counts a member within CAUGHT_UP_WITHIN_ENTRIES of the
    // leader as being sent the rest; openraft purges behind a snapshot all but what is kept
    // and what is on its way. So what is kept must reach back that far, however often
    // snapshots are taken.
    for every in [1, 40, 100, 1_280, 20_000, 1_000_000] {
        let timing = super::Timing {
            snapshot_every: every,
            ..super::Timing::default()
        };
        let keep = super::keep_behind_snapshot(&timing);
        assert!(keep >= super::CAUGHT_UP_WITHIN_ENTRIES, "every {every}: {keep} kept");
        assert!(keep <= super::KEEP_BEHIND_SNAPSHOT, "every {every}: {keep} kept");
    }
    let default = super::keep_behind_snapshot(&super::Timing::default());
    assert_eq!(default, 1_000, "a twentieth of the default 20,000");
}

fn fast() -> super::Timing {
    super::Timing {
        heartbeat: std::time::Duration::from_millis(50),
        election_min: std::time::Duration::from_millis(300),
        election_max: std::time::Duration::from_millis(600),
        ..Default::default()
    }
}

/// A store named `name` on `router`: alone (the first), or waiting to be admitted.
fn member(router: &Arc<Router>, dir: &tempfile::TempDir, name: &str, start: super::Start) -> Store {
    member_with(router, dir, name, start, fast(), None)
}

/// [`member`], with its timing and the writer's fault hook.
fn member_with(
    router: &Arc<Router>,
    dir: &tempfile::TempDir,
    name: &str,
    start: super::Start,
    timing: super::Timing,
    fault: Option<crate::store::FaultHook>,
) -> Store {
    let options = crate::store::StoreOptions {
        identity: super::Identity {
            name: name.into(),
            timing,
            start,
        },
        fault,
        ..Default::default()
    };
    let store = Store::open_with(&dir.path().join(name), options).unwrap();
    store.transport().set(router.clone());
    router.stores.lock().unwrap().insert(name.into(), store.clone());
    store
}

/// a, alone at first, then b and c admitted as voters.
async fn three_voters(router: &Arc<Router>, dir: &tempfile::TempDir) -> [Store; 3] {
    let a = member(router, dir, "a", super::Start::Alone);
    let b = member(router, dir, "b", super::Start::Join);
    let c = member(router, dir, "c", super::Start::Join);
    a.admit(b.raft_id(), "b", 3).await.unwrap();
    a.admit(c.raft_id(), "c", 3).await.unwrap();
    [a, b, c]
}

async fn events_of(store: &Store) -> Vec<(u64, String)> {
    store
        .events_after(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.seq, e.kind))
        .collect()
}

/// Waits (at most 20 s) until `store` holds exactly these events.
async fn has_events(store: &Store, expected: &[(u64, String)]) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut live = store.live();
    loop {
        let now = events_of(store).await;
        if now == expected {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{now:?} is not {expected:?}");
        // Woken by the next event this store applies (or re-read after a lagged receiver).
        let _ = tokio::time::timeout_at(deadline, live.recv()).await;
    }
}

/// The last index in `store`'s log, copied out of its metrics (a borrow of them held across
/// an await would block its Raft core when it next publishes them).
fn last_log(store: &Store) -> u64 {
    store.raft().metrics().borrow().last_log_index.unwrap_or(0)
}

/// Waits until `store` has applied everything up to `index`.
async fn caught_up(store: &Store, index: u64) {
    store
        .raft()
        .wait(Some(std::time::Duration::from_secs(20)))
        .applied_index_at_least(Some(index), "caught up")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_apply_every_write_in_one_order_wherever_it_was_made() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let a = member(&router, &dir, "a", super::Start::Alone);
    a.write(
        Batch::new()
            .put(THINGS, "before", vec![0])
            .event(NewEvent::new("BEFORE", None, json!(null))),
    )
    .await
    .unwrap();
    let b = member(&router, &dir, "b", super::Start::Join);
    let c = member(&router, &dir, "c", super::Start::Join);
    // A member waiting to be admitted takes no write of its own.
    assert!(matches!(
        b.write(Batch::new().put(THINGS, "early", vec![1])).await,
        Err(crate::store::StoreError::NotLeader { .. })
    ));
    assert_eq!(a.admit(b.raft_id(), "b", 3).await.unwrap(), super::Role::Voter);
    assert_eq!(a.admit(c.raft_id(), "c", 3).await.unwrap(), super::Role::Voter);
    // Writes made on a follower go through the leader and are readable there at once.
    let on_b = b
        .write(
            Batch::new()
                .put(THINGS, "from-b", vec![2])
                .event(NewEvent::new("FROM_B", None, json!(null))),
        )
        .await
        .unwrap();
    assert_eq!(b.get(THINGS, "from-b").await.unwrap(), Some(vec![2]));
    let on_c = c
        .write(Batch::new().event(NewEvent::new("FROM_C", None, json!(null))))
        .await
        .unwrap();
    let on_a = a
        .write(Batch::new().event(NewEvent::new("FROM_A", None, json!(null))))
        .await
        .unwrap();
    assert_eq!(
        (on_b, on_c, on_a),
        (vec![2], vec![3], vec![4]),
        "one sequence for the cluster"
    );
    let expected = vec![
        (1, "BEFORE".to_owned()),
        (2, "FROM_B".to_owned()),
        (3, "FROM_C".to_owned()),
        (4, "FROM_A".to_owned()),
    ];
    for store in [&a, &b, &c] {
        // A follower applies the last write a moment after the leader answered it.
        has_events(store, &expected).await;
        assert_eq!(store.get(THINGS, "before").await.unwrap(), Some(vec![0]));
        assert_eq!(store.get(THINGS, "from-b").await.unwrap(), Some(vec![2]));
        assert_eq!(store.leader().as_deref(), Some("a"));
    }
    // A fourth member past the three voters learns the log without voting.
    let d = member(&router, &dir, "d", super::Start::Join);
    assert_eq!(a.admit(d.raft_id(), "d", 3).await.unwrap(), super::Role::Learner);
    has_events(&d, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_is_cut_off_the_others_elect_one_and_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let [a, b, c] = three_voters(&router, &dir).await;
    let acked = a.write(Batch::new().put(THINGS, "acked", vec![1])).await.unwrap();
    assert!(acked.is_empty());
    // Cut the leader off both ways: it can neither reach nor be reached.
    router.cut.lock().unwrap().insert("a".into());
    router.stores.lock().unwrap().remove("a");
    a.transport().set(Arc::new(Router::default()));
    let new_leader = b
        .raft()
        .wait(Some(std::time::Duration::from_secs(20)))
        .metrics(
            |m| m.current_leader.is_some() && m.current_leader != Some(a.raft_id()),
            "another leader",
        )
        .await
        .unwrap()
        .current_leader
        .unwrap();
    assert!([b.raft_id(), c.raft_id()].contains(&new_leader));
    // The majority side takes writes and still holds what was acknowledged before.
    c.write(Batch::new().put(THINGS, "after", vec![2])).await.unwrap();
    for store in [&b, &c] {
        // Each applies the new leader's entries a moment after they commit: polled against
        // a deadline, as the log writes no event here.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        while store.get(THINGS, "acked").await.unwrap().is_none() {
            assert!(tokio::time::Instant::now() < deadline, "the acknowledged write is lost");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    // The cut-off old leader cannot commit alone: its write is not acknowledged.
    let alone = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        a.write(Batch::new().put(THINGS, "lost", vec![3])),
    )
    .await;
    assert!(!matches!(alone, Ok(Ok(_))), "{alone:?}");
    assert_eq!(b.get(THINGS, "lost").await.unwrap(), None);
}

/// A decision of the leader of one term ([`Batch::led_in`]) that reaches the log in the
/// next, forwarded by a member that led no longer, is refused on every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_of_a_deposed_leader_is_refused_when_the_next_leader_commits_it() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let [a, b, c] = three_voters(&router, &dir).await;
    let term = a.status().term;
    a.write(Batch::new().put(THINGS, "decided", vec![1]).led_in(term))
        .await
        .unwrap();
    router.cut.lock().unwrap().insert("a".into());
    router.stores.lock().unwrap().remove("a");
    a.transport().set(Arc::new(Router::default()));
    b.raft()
        .wait(Some(std::time::Duration::from_secs(20)))
        .metrics(
            |m| m.current_leader.is_some() && m.current_leader != Some(a.raft_id()),
            "another leader",
        )
        .await
        .unwrap();
    let now = b.status().term;
    assert!(now > term, "{now} after {term}");
    for store in [&b, &c] {
        let late = store
            .write(Batch::new().put(THINGS, "late", vec![2]).led_in(term))
            .await;
        assert!(matches!(late, Err(StoreError::Stale(_))), "{late:?}");
    }
    c.write(Batch::new().put(THINGS, "now", vec![3]).led_in(now))
        .await
        .unwrap();
    caught_up(&b, c.status().commit_index).await;
    for store in [&b, &c] {
        assert_eq!(store.get(THINGS, "decided").await.unwrap(), Some(vec![1]));
        assert_eq!(store.get(THINGS, "late").await.unwrap(), None);
        assert_eq!(store.get(THINGS, "now").await.unwrap(), Some(vec![3]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_answers_at_once_when_no_majority_is_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let a = member(&router, &dir, "a", super::Start::Alone);
    let b = member(&router, &dir, "b", super::Start::Join);
    assert_eq!(a.admit(b.raft_id(), "b", 3).await.unwrap(), super::Role::Voter);
    a.write(Batch::new().put(THINGS, "k", vec![1])).await.unwrap();
    router.cut.lock().unwrap().insert("b".into());
    // Nothing to commit: a node that cannot reach its majority still flushes (its start
    // and its scheduler's recovery flush before they read).
    tokio::time::timeout(std::time::Duration::from_secs(2), a.flush())
        .await
        .expect("the flush waited for a majority")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_reads_every_acknowledged_write_after_it_linearizes() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let [a, b, _c] = three_voters(&router, &dir).await;
    // b receives nothing: a and c commit without it.
    router.cut.lock().unwrap().insert("b".into());
    a.write(Batch::new().put(THINGS, "fresh", vec![1])).await.unwrap();
    assert_eq!(b.get(THINGS, "fresh").await.unwrap(), None, "b lags");
    let reading = {
        let b = b.clone();
        tokio::spawn(async move { b.linearize().await })
    };
    router.cut.lock().unwrap().remove("b");
    reading.await.unwrap().unwrap();
    assert_eq!(b.get(THINGS, "fresh").await.unwrap(), Some(vec![1]));
    // A one-member cluster reads its own state at once.
    let alone = Store::open(&dir.path().join("alone")).unwrap();
    alone.linearize().await.unwrap();
}

mod bytes;
mod commit_hold;
mod durable;
mod flight;
mod installing;
mod membership;
mod prevote;
mod projections;
mod quorum;
mod storage;
mod succession;
mod tokens;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_nobody_waits_for_share_the_entry_of_the_next_write_somebody_waits_for() {
    const RECORDS: Table = Table::new("records");
    // The hook says when the writer took the record nobody waits for.
    let (taken_tx, taken_rx) = std::sync::mpsc::channel::<()>();
    let taken = std::sync::Mutex::new(taken_tx);
    let hook: crate::store::FaultHook = Arc::new(move |b: &Batch| {
        if b.touches(RECORDS) {
            let _ = taken.lock().unwrap().send(());
        }
        None
    });
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    // Held for as long as the test takes, not 1 ms: the sharing is then certain, not a race
    // between the hold and the scheduler of a busy machine.
    let holding = super::Timing {
        hold_unawaited: std::time::Duration::from_secs(3600),
        ..fast()
    };
    let a = member_with(&router, &dir, "a", super::Start::Alone, holding, Some(hook));
    let b = member(&router, &dir, "b", super::Start::Join);
    a.admit(b.raft_id(), "b", 3).await.unwrap();
    a.write(Batch::new().put(THINGS, "first", vec![0])).await.unwrap();
    let last = || a.raft().metrics().borrow().last_log_index.unwrap_or_default();
    let before = last();
    // A task's RUNNING record, say: taken by the writer before the next submission comes.
    a.submit_watched(Batch::new().put(RECORDS, "running", vec![1]), |e| panic!("{e}"));
    let taken_rx = Arc::new(std::sync::Mutex::new(taken_rx));
    let taken = move || {
        let rx = taken_rx.clone();
        tokio::task::spawn_blocking(move || rx.lock().unwrap().recv().unwrap())
    };
    taken().await.unwrap();
    assert_eq!(last(), before, "held, not written yet");
    a.write(Batch::new().put(THINGS, "submitted", vec![2])).await.unwrap();
    assert_eq!(last(), before + 1, "both writes in one log entry");
    assert_eq!(a.get(RECORDS, "running").await.unwrap(), Some(vec![1]));
    // A flush waits for what is held.
    a.submit_watched(Batch::new().put(RECORDS, "result", vec![3]), |e| panic!("{e}"));
    taken().await.unwrap();
    a.flush().await.unwrap();
    assert_eq!(a.get(RECORDS, "result").await.unwrap(), Some(vec![3]));
    assert_eq!(last(), before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_nobody_waits_for_with_nothing_behind_it_is_written_a_moment_later() {
    const RECORDS: Table = Table::new("records");
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let a = member(&router, &dir, "a", super::Start::Alone);
    let b = member(&router, &dir, "b", super::Start::Join);
    a.admit(b.raft_id(), "b", 3).await.unwrap();
    let mut live = a.live();
    let result = Batch::new()
        .put(RECORDS, "result", vec![3])
        .event(NewEvent::new("RESULT", None, json!(null)));
    a.submit_watched(result, |e| panic!("{e}"));
    let written = async { while live.recv().await.unwrap().kind != "RESULT" {} };
    tokio::time::timeout(std::time::Duration::from_secs(20), written)
        .await
        .expect("written within 20 s");
    assert_eq!(a.get(RECORDS, "result").await.unwrap(), Some(vec![3]));
}

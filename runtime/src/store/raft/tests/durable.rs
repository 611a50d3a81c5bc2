//! A member's log tells openraft an append is done once its entries are readable, and its
//! writer makes them durable meanwhile: what leaves the member waits until the entries it
//! speaks for are durable (see `log::writer`). Each test holds what a member's log is handed
//! out of its files for a while.

use std::sync::Arc;
use std::time::Duration;

use super::{last_log, three_voters, Router, THINGS};
use crate::store::{Batch, Store};

/// Keeps what `store`'s log is handed out of its files until the guard is dropped.
fn hold_log(store: &Store) -> crate::store::raft::log::Held {
    store.inner.log.hold()
}

/// The leader of three voters with one write made, and its two followers.
async fn leader_and_followers(router: &Arc<Router>, dir: &tempfile::TempDir) -> (Store, Store, Store) {
    let [a, b, c] = three_voters(router, dir).await;
    a.write(Batch::new().put(THINGS, "k", vec![1])).await.unwrap();
    let leader = a.raft().metrics().borrow().current_leader;
    let mut all = vec![a, b, c];
    let at = all.iter().position(|s| Some(s.raft_id()) == leader).expect("a leader");
    let leader = all.remove(at);
    let second = all.pop().unwrap();
    (leader, all.pop().unwrap(), second)
}

/// Waits until `store`'s Raft core took its log up to `index` (the log's writer may not
/// have written it yet).
async fn took(store: &Store, index: u64) {
    store
        .raft()
        .wait(Some(Duration::from_secs(20)))
        .log_index_at_least(Some(index), "the entry appended")
        .await
        .unwrap();
}

/// A write that is not acknowledged for a second: the window checks only that it is not
/// acknowledged early; with the change nothing can acknowledge it while the logs are held.
async fn not_acknowledged<T: std::fmt::Debug>(write: &mut tokio::task::JoinHandle<T>) {
    let early = tokio::time::timeout(Duration::from_secs(1), write).await;
    assert!(
        early.is_err(),
        "acknowledged while no majority held it durably: {early:?}"
    );
}

/// Writes `k` = 2 on `store`, in a task of its own.
fn write_on(store: &Store) -> tokio::task::JoinHandle<Result<Vec<u64>, crate::store::StoreError>> {
    let store = store.clone();
    tokio::spawn(async move { store.write(Batch::new().put(THINGS, "k", vec![2])).await })
}

/// Waits (at most 20 s) until `write` is acknowledged, as it must be `when`.
async fn acknowledged(write: tokio::task::JoinHandle<Result<Vec<u64>, crate::store::StoreError>>, when: &str) {
    tokio::time::timeout(Duration::from_secs(20), write)
        .await
        .unwrap_or_else(|_| panic!("not acknowledged {when}"))
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followers_answer_leaves_it_once_the_entries_are_durable_there() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let (leader, one, other) = leader_and_followers(&router, &dir).await;
    let index = last_log(&leader) + 1;
    let (held_one, held_other) = (hold_log(&one), hold_log(&other));
    let mut write = write_on(&leader);
    // Both followers' cores took the entry; neither file holds it.
    took(&one, index).await;
    took(&other, index).await;
    not_acknowledged(&mut write).await;
    drop(held_one);
    acknowledged(write, "once one follower's file holds it").await;
    drop(held_other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_commits_only_once_the_leader_holds_it_durably_too() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let (leader, free, other) = leader_and_followers(&router, &dir).await;
    let index = last_log(&leader) + 1;
    let (held_leader, held_other) = (hold_log(&leader), hold_log(&other));
    let mut write = write_on(&leader);
    // The free follower holds it durably, and the leader's core counted its own copy.
    took(&leader, index).await;
    took(&free, index).await;
    free.inner.log.covering(index).await.unwrap();
    not_acknowledged(&mut write).await;
    let counted = leader.raft().metrics().borrow().replication.clone().unwrap_or_default();
    let counted = counted.get(&free.raft_id()).cloned().flatten().map_or(0, |l| l.index);
    assert!(
        counted < index,
        "the leader counted the follower's copy before its own was durable"
    );
    assert_eq!(
        free.get(THINGS, "k").await.unwrap(),
        Some(vec![1]),
        "applied before it committed"
    );
    drop(held_leader);
    acknowledged(write, "once the leader's file holds it").await;
    drop(held_other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_the_leader_alone_is_a_majority_nothing_applies_before_its_file_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let a = super::member(&router, &dir, "a", super::super::Start::Alone);
    let b = super::member(&router, &dir, "b", super::super::Start::Join);
    // One voter, and a learner the log is sent to.
    assert_eq!(a.admit(b.raft_id(), "b", 1).await.unwrap(), super::super::Role::Learner);
    a.write(Batch::new().put(THINGS, "k", vec![1])).await.unwrap();
    let index = last_log(&a) + 1;
    let held = hold_log(&a);
    let mut write = write_on(&a);
    // Its core took it (and, a majority alone, committed it); the learner is sent the
    // entry with the commit once the leader's file holds it.
    took(&a, index).await;
    not_acknowledged(&mut write).await;
    let applied = |s: &Store| s.raft().metrics().borrow().last_applied.map_or(0, |l| l.index);
    assert!(applied(&a) < index, "the leader applied it");
    assert!(applied(&b) < index, "the learner applied it");
    drop(held);
    acknowledged(write, "once the leader's file holds it").await;
    super::caught_up(&b, index).await;
    assert_eq!(b.get(THINGS, "k").await.unwrap(), Some(vec![2]));
}

/// How far `leader` counts `member` as holding the log.
fn counted(leader: &Store, member: u64) -> u64 {
    let replication = leader.raft().metrics().borrow().replication.clone().unwrap_or_default();
    replication.get(&member).cloned().flatten().map_or(0, |l| l.index)
}

/// Waits (at most `within`) until `leader` counts `member` past `index`.
async fn counted_past(leader: &Store, member: u64, index: u64, within: Duration) -> bool {
    let past = async {
        while counted(leader, member) <= index {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(within, past).await.is_ok()
}

/// A member far behind, answering with its writer held.
struct Behind {
    leader: Store,
    member: Store,
    /// Where the leader counted the member before it was given the log back.
    before: u64,
    /// The leader's last entry.
    index: u64,
    held: crate::store::raft::log::Held,
}

/// a, b and c, with c cut off while 40 writes commit on a and b, then given the log back
/// with its writer held: returns once a counts c past where it was, c's file lacking those
/// entries (a full request or more behind the commit index, c's answers did not wait for
/// its writer).
async fn answering_early(router: &Arc<Router>, dir: &tempfile::TempDir) -> Behind {
    let [a, _b, c] = super::three_voters(router, dir).await;
    router.cut.lock().unwrap().insert("c".into());
    for i in 0..40u8 {
        a.write(Batch::new().put(THINGS, "k", vec![i])).await.unwrap();
    }
    let index = last_log(&a);
    let before = counted(&a, c.raft_id());
    assert!(
        index >= before + 2 * super::super::MAX_PAYLOAD_ENTRIES,
        "c is {before} of {index}"
    );
    let held = hold_log(&c);
    router.cut.lock().unwrap().remove("c");
    assert!(
        counted_past(&a, c.raft_id(), before, Duration::from_secs(10)).await,
        "the leader counted the committed entries only once c's file held them"
    );
    Behind {
        leader: a,
        member: c,
        before,
        index,
        held,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_catching_up_answers_for_committed_entries_before_its_file_holds_them() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let Behind {
        leader: a,
        member: c,
        before,
        index,
        held,
    } = answering_early(&router, &dir).await;
    // Its answers for the last few wait, as a member's that keeps up with the log: the
    // window checks only that they are not counted early.
    assert!(
        !counted_past(&a, c.raft_id(), index - 1, Duration::from_secs(1)).await,
        "counted the entries near the commit index before c's file held them"
    );
    // c applies nothing its file does not hold.
    let applied = c.raft().metrics().borrow().last_applied.map_or(0, |l| l.index);
    assert!(
        applied <= before,
        "applied {applied} of {index} before its file held them"
    );
    drop(held);
    super::caught_up(&c, index).await;
    assert_eq!(c.get(THINGS, "k").await.unwrap(), Some(vec![39]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_pre_vote_compares_is_the_last_entry_the_core_took_not_the_files_last() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let (leader, follower, _other) = leader_and_followers(&router, &dir).await;
    let index = last_log(&leader) + 1;
    let held = hold_log(&follower);
    let write = write_on(&leader);
    took(&follower, index).await;
    // The follower's file lacks the entry its core took: the last entry it compares waits
    // for its writer, and is then that entry.
    let mut compared = tokio::spawn({
        let follower = follower.clone();
        async move { follower.last_log_id().await.unwrap().map(|l| l.index) }
    });
    let early = tokio::time::timeout(Duration::from_secs(1), &mut compared).await;
    assert!(early.is_err(), "compared the file's last entry: {early:?}");
    drop(held);
    assert_eq!(compared.await.unwrap(), Some(index));
    acknowledged(write, "once the follower's file holds it").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_lost_entries_it_answered_for_early_is_sent_them_again() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let Behind {
        leader: a,
        member: c,
        before,
        index,
        held,
    } = answering_early(&router, &dir).await;
    // c's files as they are now, without the entries it answered for: as after a crash of
    // c before its writer wrote them. c starts again from them.
    router.cut.lock().unwrap().insert("c".into());
    let lost = dir.path().join("c-lost");
    std::fs::copy(dir.path().join("c"), &lost).unwrap();
    let (from, to) = (
        crate::store::raft::log_path(&dir.path().join("c")),
        crate::store::raft::log_path(&lost),
    );
    std::fs::create_dir(&to).unwrap();
    for file in std::fs::read_dir(&from).unwrap() {
        let file = file.unwrap();
        std::fs::copy(file.path(), to.join(file.file_name())).unwrap();
    }
    router.stores.lock().unwrap().remove("c");
    drop(held);
    c.stop_raft().await;
    drop(c);
    let options = crate::store::StoreOptions {
        identity: super::super::Identity {
            name: "c".into(),
            timing: super::fast(),
            start: super::super::Start::Join,
        },
        ..Default::default()
    };
    let c = Store::open_with(&lost, options).unwrap();
    assert!(last_log(&c) <= before, "c's log holds {} of {index}", last_log(&c));
    c.transport().set(router.clone());
    router.stores.lock().unwrap().insert("c".into(), c.clone());
    router.cut.lock().unwrap().remove("c");
    // The leader finds c's log behind what c answered for, and sends it the entries again.
    super::caught_up(&c, index).await;
    assert_eq!(c.get(THINGS, "k").await.unwrap(), Some(vec![39]));
    a.write(Batch::new().put(THINGS, "k", vec![40])).await.unwrap();
}

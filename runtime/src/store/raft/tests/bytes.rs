//! Bytes bound what goes through the log: a group of big writes becomes several entries, a
//! member that fell behind by big entries is sent them a few at a time, and a write too big
//! for an entry is refused alone.

use std::sync::Arc;

use super::{member_with, three_voters, Router, THINGS};
use crate::store::{Batch, StoreError, Table};

const MIB: usize = 1 << 20;

fn big(key: usize) -> Batch {
    Batch::new().put(THINGS, format!("big-{key}"), vec![key as u8; MIB])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_of_big_writes_is_cut_into_entries_of_a_few_mib() {
    const GATE: Table = Table::new("gate");
    // The writer stops on the gate's batch until the test has queued the big ones behind it.
    let (taken_tx, taken_rx) = std::sync::mpsc::channel::<()>();
    let (open_tx, open_rx) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Mutex::new((taken_tx, open_rx));
    let hook: crate::store::FaultHook = Arc::new(move |b: &Batch| {
        if b.touches(GATE) {
            let gate = gate.lock().unwrap();
            let _ = gate.0.send(());
            let _ = gate.1.recv();
        }
        None
    });
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let a = member_with(
        &router,
        &dir,
        "a",
        super::super::Start::Alone,
        super::fast(),
        Some(hook),
    );
    let b = super::member(&router, &dir, "b", super::super::Start::Join);
    a.admit(b.raft_id(), "b", 3).await.unwrap();
    let last = || a.raft().metrics().borrow().last_log_index.unwrap_or_default();
    let before = last();
    let gated = a.submit(Batch::new().put(GATE, "g", vec![1]));
    tokio::task::spawn_blocking(move || taken_rx.recv().unwrap())
        .await
        .unwrap();
    let queued: Vec<_> = (0..10).map(|i| a.submit(big(i))).collect();
    open_tx.send(()).unwrap();
    gated.durable().await.unwrap();
    for ticket in queued {
        ticket.durable().await.unwrap();
    }
    // 10 MiB taken at once, in entries that take no batch past a little under 4 MiB: four
    // entries of three, three, three and one MiB (and the gate's), not one of 10 MiB, nor
    // entries just over 4 MiB (which redb stores in 8 MiB of pages).
    let entries = last() - before;
    assert_eq!(entries, 5, "entries for the gate and 10 MiB");
    assert_eq!(a.get(THINGS, "big-9").await.unwrap().map(|v| v.len()), Some(MIB));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_by_big_entries_catches_up_a_few_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let [a, b, c] = three_voters(&router, &dir).await;
    router.cut.lock().unwrap().insert("c".into());
    // Written through b, a follower: every group is forwarded to the leader whole.
    for round in 0..3 {
        let writes: Vec<_> = (0..8).map(|i| b.write(big(round * 8 + i))).collect();
        for w in futures::future::join_all(writes).await {
            w.unwrap();
        }
    }
    let behind = a.raft().metrics().borrow().last_log_index.unwrap_or_default();
    assert!(behind >= 9, "24 MiB in {behind} entries");
    // c missed 24 MiB: the entries it missed in one request would be over the frame limit.
    router.cut.lock().unwrap().remove("c");
    let caught_up = async {
        loop {
            if c.get(THINGS, "big-23").await.unwrap().is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), caught_up)
        .await
        .expect("c caught up with the big entries");
}

#[tokio::test]
async fn a_write_too_big_for_a_log_entry_is_refused_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(&dir.path().join("db")).unwrap();
    let huge = Batch::new().put(THINGS, "huge", vec![0; crate::store::MAX_BATCH_BYTES + 1]);
    let (huge, small) = tokio::join!(store.write(huge), store.write(big(1)));
    assert!(
        matches!(huge, Err(StoreError::Rejected(ref why)) if why.contains("larger than a log entry")),
        "{huge:?}"
    );
    small.unwrap();
    assert_eq!(store.get(THINGS, "huge").await.unwrap(), None);
}

#[test]
fn an_append_carries_entries_up_to_its_bytes_and_at_least_one() {
    use crate::store::raft::network::entries_that_fit;
    use crate::store::raft::Proposal;
    let entry = |index: u64, mib: usize| openraft::Entry::<crate::store::raft::Troupe> {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 0), index),
        payload: openraft::EntryPayload::Normal(Proposal::new(vec![Batch::new().put(THINGS, "k", vec![0; mib * MIB])])),
    };
    let small: Vec<_> = (0..16).map(|i| entry(i, 0)).collect();
    assert_eq!(entries_that_fit(&small, 8 * MIB), None);
    let big: Vec<_> = (0..16).map(|i| entry(i, 3)).collect();
    assert_eq!(entries_that_fit(&big, 8 * MIB), Some(2));
    let huge: Vec<_> = (0..2).map(|i| entry(i, 12)).collect();
    assert_eq!(entries_that_fit(&huge, 8 * MIB), Some(1));
    assert_eq!(entries_that_fit(&huge[..1], 8 * MIB), None);
}

#[test]
fn the_last_chunk_of_a_snapshot_may_take_its_install() {
    use crate::store::raft::network::chunk_within;
    use crate::store::raft::{SNAPSHOT_INSTALL_AT_MOST, SNAPSHOT_TIMEOUT};
    use std::time::Duration;
    // Every chunk but the last: a busy link's few seconds.
    assert_eq!(chunk_within(false, 1 << 30), SNAPSHOT_TIMEOUT);
    // The last one is answered once the member installed it all: a gigabyte took a debug
    // build 35-40 s, past the 10 s every chunk had, and the last chunk was sent again.
    assert!(chunk_within(true, 1 << 30) >= Duration::from_secs(120));
    assert!(chunk_within(true, 1 << 20) >= SNAPSHOT_TIMEOUT * 2);
    assert_eq!(chunk_within(true, u64::MAX / 2), SNAPSHOT_INSTALL_AT_MOST);
    // openraft's own bound on a chunk is not the shorter.
    let config = super::super::config(&Default::default()).unwrap();
    assert!(config.install_snapshot_timeout() >= SNAPSHOT_INSTALL_AT_MOST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_between_snapshots_and_behind_one_is_bounded_in_bytes_however_few_its_entries() {
    // A snapshot every million entries or 8 MiB (or twice the tables); behind one, at most
    // 8 MiB / 20 is kept.
    let timing = crate::store::raft::Timing {
        snapshot_every: 1_000_000,
        snapshot_every_bytes: 8 * MIB as u64,
        ..super::fast()
    };
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let start = |name, start| member_with(&router, &dir, name, start, timing.clone(), None);
    let a = start("a", super::super::Start::Alone);
    let b = start("b", super::super::Start::Join);
    a.admit(b.raft_id(), "b", 3).await.unwrap();
    // The snapshot b was admitted with is before this.
    let before = a.raft().metrics().borrow().last_log_index.unwrap_or_default();
    // 24 MiB in 24 entries of a little over 1 MiB each, far from a million entries. Each
    // puts a MiB and takes it out again: the log grows, the tables do not (the log may take
    // twice what they do: their file is about 5 MiB here).
    for i in 0..24 {
        a.write(big(i).delete(THINGS, format!("big-{i}"))).await.unwrap();
    }
    a.write(Batch::new().put(THINGS, "last", vec![1])).await.unwrap();
    for store in [&a, &b] {
        // Each member snapshots once 8 MiB are past its last snapshot, and purges what is
        // behind the snapshot: any entry of 1 MiB is over what is kept (openraft alone
        // would keep the last 1,000 entries, whatever their bytes).
        let snapshotted = store
            .raft()
            .wait(Some(std::time::Duration::from_secs(20)))
            .metrics(
                |m| match (m.snapshot, m.purged) {
                    (Some(s), Some(p)) => s.index > before && p.index + 1 >= s.index,
                    _ => false,
                },
                "a snapshot, and the log behind it purged",
            )
            .await;
        let m = store.raft().metrics().borrow().clone();
        assert!(
            snapshotted.is_ok(),
            "snapshot at {:?} (writes from {before}), purged through {:?}, last entry {:?}, tables of {} bytes",
            m.snapshot,
            m.purged,
            m.last_log_index,
            std::fs::metadata(dir.path().join(if std::ptr::eq(store, &a) { "a" } else { "b" })).map_or(0, |f| f.len())
        );
    }
    super::caught_up(&b, super::last_log(&a)).await;
    assert_eq!(b.get(THINGS, "last").await.unwrap(), Some(vec![1]));
    assert_eq!(b.get(THINGS, "big-23").await.unwrap(), None);
}

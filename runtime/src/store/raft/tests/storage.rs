//! The storage on its own: openraft's suite, the log's file, the log's encoding.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use serde_json::json;

use super::THINGS;
use crate::events::NewEvent;
use crate::store::apply::Tables;
use crate::store::raft::log::LogStore;
use crate::store::raft::machine::Machine;
use crate::store::raft::{NodeId, Proposal, Troupe};
use crate::store::Batch;

struct Builder;

impl StoreBuilder<Troupe, LogStore, Machine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, Machine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(redb::Database::create(dir.path().join("db")).unwrap());
        let (live, _) = tokio::sync::broadcast::channel(16);
        let log = crate::store::raft::log::files::open(&dir.path().join("db"), &db).unwrap();
        let tables = Arc::new(Tables::open(db, live, 0).unwrap());
        let logs = LogStore::new(log, tables.clone(), Default::default());
        let machine = Machine::new(tables, dir.path().join("db.snapshots"))
            .unwrap()
            .gated_by(logs.durable());
        Ok((dir, logs, machine))
    }
}

type TheSuite = Suite<Troupe, LogStore, Machine, Builder, tempfile::TempDir>;

/// openraft's own storage suite (`Suite::test_all` but one test): log, vote, purge,
/// truncate, membership and snapshots.
#[test]
fn the_log_and_state_machine_pass_openrafts_storage_suite() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut failed = Vec::new();
    macro_rules! one {
        ($name:ident) => {
            let result = rt.block_on(async {
                let (_dir, store, sm) = Builder.build().await?;
                TheSuite::$name(store, sm).await
            });
            if let Err(e) = result {
                failed.push(format!("{}: {e}", stringify!($name)));
            }
        };
    }
    one!(last_membership_in_log_initial);
    one!(last_membership_in_log);
    one!(last_membership_in_log_multi_step);
    one!(get_membership_initial);
    one!(get_membership_from_log_and_empty_sm);
    one!(get_membership_from_empty_log_and_sm);
    one!(get_membership_from_log_le_sm_last_applied);
    one!(get_membership_from_log_gt_sm_last_applied_1);
    one!(get_membership_from_log_gt_sm_last_applied_2);
    one!(get_initial_state_without_init);
    // Not `get_initial_state_membership_from_log_and_sm`: it appends an entry below the
    // index the log was purged to (at start-up, up to what the state machine applied), which
    // openraft's core never does and the log's files refuse ("log id cannot be reversed").
    one!(get_initial_state_with_state);
    one!(get_initial_state_last_log_gt_sm);
    one!(get_initial_state_last_log_lt_sm);
    one!(get_initial_state_log_ids);
    one!(get_initial_state_re_apply_committed);
    one!(save_vote);
    one!(get_log_entries);
    one!(limited_get_log_entries);
    one!(try_get_log_entry);
    one!(initial_logs);
    one!(get_log_state);
    one!(get_log_id);
    one!(last_id_in_log);
    one!(last_applied_state);
    one!(purge_logs_upto_0);
    one!(purge_logs_upto_5);
    one!(purge_logs_upto_20);
    one!(delete_logs_since_11);
    one!(delete_logs_since_0);
    one!(append_to_log);
    one!(snapshot_meta);
    one!(apply_single);
    one!(apply_multiple);
    if let Err(e) = rt.block_on(TheSuite::transfer_snapshot(&Builder)) {
        failed.push(format!("transfer_snapshot: {e}"));
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// An entry as an earlier build's log held it: encoded, by index.
fn earlier_entry(index: u64) -> (u64, Vec<u8>) {
    let entry: openraft::Entry<Troupe> = openraft::Entry {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(2, 9), index),
        payload: openraft::EntryPayload::Blank,
    };
    (index, crate::codec::encode(&entry).unwrap())
}

#[test]
fn a_log_an_earlier_build_kept_in_redb_moves_into_the_logs_files_once_whole() {
    use crate::store::raft::{log, RAFT_LOG, RAFT_STATE};
    use redb::ReadableDatabase;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let tables = redb::Database::create(&path).unwrap();
    // The earliest layout: the log in the tables' file.
    let txn = tables.begin_write().unwrap();
    {
        let mut state = txn.open_table(RAFT_STATE).unwrap();
        let put = |state: &mut redb::Table<&str, &[u8]>, key, bytes: Vec<u8>| {
            state.insert(key, bytes.as_slice()).unwrap();
        };
        put(&mut state, log::ID, crate::codec::encode(&42u64).unwrap());
        let purged = openraft::LogId::new(openraft::CommittedLeaderId::new(1, 9), 3);
        put(&mut state, log::PURGED, crate::codec::encode(&purged).unwrap());
        let vote = openraft::Vote::new_committed(2, 9);
        put(&mut state, log::VOTE, crate::codec::encode(&vote).unwrap());
        let committed = Some(openraft::LogId::new(openraft::CommittedLeaderId::new(2, 9), 5));
        put(&mut state, log::COMMITTED, crate::codec::encode(&committed).unwrap());
        let mut entries = txn.open_table(RAFT_LOG).unwrap();
        for (index, bytes) in [earlier_entry(4), earlier_entry(5), earlier_entry(6)] {
            entries.insert(index, bytes.as_slice()).unwrap();
        }
    }
    txn.commit().unwrap();
    let check = |wal: &log::Wal| {
        let mut wal = wal.lock().unwrap();
        assert_eq!(wal.node_id().unwrap(), 42);
        assert_eq!(wal.purged().map(|p| p.index), Some(3));
        assert_eq!(wal.vote(), Some(openraft::Vote::new_committed(2, 9)));
        assert_eq!(wal.committed().map(|c| c.index), Some(5));
        assert_eq!(wal.held(), Some((4, 6)));
        let read: Vec<u64> = wal.read(0, 10).unwrap().iter().map(|e| e.log_id.index).collect();
        assert_eq!(read, vec![4, 5, 6]);
    };
    let wal = log::files::open(&path, &tables).unwrap();
    check(&wal);
    drop(wal);
    let txn = tables.begin_read().unwrap();
    assert!(
        matches!(txn.open_table(RAFT_STATE), Err(redb::TableError::TableDoesNotExist(_))),
        "the tables' file keeps no copy"
    );
    drop(txn);
    assert!(!log::files::redb_path(&path).exists(), "the redb file is gone");
    // Opened again: nothing left to move, nothing changes.
    check(&log::files::open(&path, &tables).unwrap());
}

#[test]
fn a_move_of_the_log_cut_short_before_it_was_in_place_starts_again_from_the_earlier_file() {
    use crate::store::raft::{log, RAFT_LOG, RAFT_STATE};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let tables = redb::Database::create(&path).unwrap();
    let earlier = redb::Database::create(log::files::redb_path(&path)).unwrap();
    let txn = earlier.begin_write().unwrap();
    {
        let mut state = txn.open_table(RAFT_STATE).unwrap();
        state
            .insert(log::ID, crate::codec::encode(&7u64).unwrap().as_slice())
            .unwrap();
        let mut entries = txn.open_table(RAFT_LOG).unwrap();
        let (index, bytes) = earlier_entry(1);
        entries.insert(index, bytes.as_slice()).unwrap();
    }
    txn.commit().unwrap();
    drop(earlier);
    // A copy begun beside and never moved into place, holding a part of it.
    std::fs::create_dir(path.with_extension("raftlog.new")).unwrap();
    std::fs::write(path.with_extension("raftlog.new").join("junk"), b"half").unwrap();
    let wal = log::files::open(&path, &tables).unwrap();
    let mut held = wal.lock().unwrap();
    assert_eq!(held.node_id().unwrap(), 7);
    assert_eq!(held.held(), Some((1, 1)));
    assert!(!path.with_extension("raftlog.new").exists());
    assert!(!log::files::redb_path(&path).exists());
}

#[test]
fn a_proposal_round_trips_through_its_log_encoding() {
    let batch = Batch::new()
        .put(THINGS, "a", vec![0, 1, 255])
        .delete(THINGS, "b")
        .event(NewEvent::new(
            "THING_MADE",
            Some("a".into()),
            json!({"n": 1, "nested": {"x": [1, 2]}}),
        ));
    let mut sealed = batch.clone();
    sealed.seal().unwrap();
    let bytes = crate::codec::encode(&Proposal::new(vec![sealed])).unwrap();
    let back: Proposal = crate::codec::decode(&bytes).unwrap();
    let ops = back.batches[0].ops();
    assert_eq!(ops.len(), 3);
    assert!(
        matches!(&ops[0], crate::store::Op::Put { table, key, value } if *table == THINGS && key == "a" && value == &vec![0, 1, 255])
    );
    assert!(matches!(&ops[1], crate::store::Op::Delete { table, key } if *table == THINGS && key == "b"));
    match &ops[2] {
        crate::store::Op::Event(e) => {
            assert_eq!(e.kind, "THING_MADE");
            assert_eq!(e.data, json!({"n": 1, "nested": {"x": [1, 2]}}));
        }
        other => panic!("{other:?}"),
    }
    // Byte strings travel as msgpack bin (0xc4, length, bytes), not one number per byte.
    assert!(bytes.windows(5).any(|w| w == [0xc4, 3, 0, 1, 255]), "{bytes:?}");
}

#[tokio::test]
async fn applying_nothing_keeps_what_was_applied() {
    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
    let (_dir, _log, mut machine) = Builder.build().await.unwrap();
    let blank = Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
        payload: EntryPayload::Blank,
    };
    machine.apply(vec![blank]).await.unwrap();
    machine.apply(Vec::<Entry<Troupe>>::new()).await.unwrap();
    let (applied, _) = machine.applied_state().await.unwrap();
    assert_eq!(applied.map(|id| id.index), Some(1));
}

/// A state machine on fresh tables in `dir`, with its snapshots in `dir/db.snapshots`.
fn machine_in(dir: &std::path::Path) -> (Arc<Tables>, Machine, std::path::PathBuf) {
    let db = Arc::new(redb::Database::create(dir.join("db")).unwrap());
    let (live, _) = tokio::sync::broadcast::channel(16);
    let tables = Arc::new(Tables::open(db, live, 0).unwrap());
    let snapshots = dir.join("db.snapshots");
    (
        tables.clone(),
        Machine::new(tables, snapshots.clone()).unwrap(),
        snapshots,
    )
}

/// The row `key` of the table `things`, as `tables` hold it.
fn thing(tables: &Tables, key: &str) -> Option<Vec<u8>> {
    use redb::ReadableDatabase;
    let read = tables.db.begin_read().unwrap();
    let things = read
        .open_table(redb::TableDefinition::<&str, &[u8]>::new(THINGS.name()))
        .unwrap();
    let value = things.get(key).unwrap().map(|v| v.value().to_vec());
    value
}

fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir).unwrap().map(|f| f.unwrap().path()).collect()
}

#[tokio::test]
async fn a_snapshot_is_a_file_of_its_own_the_newest_alone_is_kept_and_one_cut_short_is_refused() {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let here = tempfile::tempdir().unwrap();
    let (_, mut machine, snapshots) = machine_in(here.path());
    let mut batch = Batch::new().put(THINGS, "k", vec![7, 0, 255]).event(NewEvent::new(
        "THING_MADE",
        Some("k".into()),
        json!({"n": 1}),
    ));
    batch.seal().unwrap();
    let entry = Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
        payload: EntryPayload::Normal(Proposal::new(vec![batch])),
    };
    machine.apply(vec![entry]).await.unwrap();
    let mut builder = machine.get_snapshot_builder().await;
    builder.build_snapshot().await.unwrap();
    let mut newest = builder.build_snapshot().await.unwrap();
    // One snapshot, the newest, with its meta beside it, owner-only, in an owner-only
    // directory.
    let mut held = files(&snapshots);
    held.sort();
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(held[1].to_string_lossy().ends_with(".snapshot.meta"), "{held:?}");
    assert_eq!(
        std::fs::metadata(&snapshots).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for file in &held {
        assert_eq!(std::fs::metadata(file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let mut bytes = Vec::new();
    newest.snapshot.read_to_end(&mut bytes).await.unwrap();

    // Another member receives it chunk by chunk and installs it.
    let there = tempfile::tempdir().unwrap();
    let (tables, mut other, other_snapshots) = machine_in(there.path());
    let mut receiving = other.begin_receiving_snapshot().await.unwrap();
    for chunk in bytes.chunks(5) {
        receiving.write_all(chunk).await.unwrap();
    }
    other.install_snapshot(&newest.meta, receiving).await.unwrap();
    assert_eq!(thing(&tables, "k"), Some(vec![7, 0, 255]));
    let (applied, _) = other.applied_state().await.unwrap();
    assert_eq!(applied.map(|id| id.index), Some(1));
    assert_eq!(
        files(&other_snapshots).len(),
        2,
        "the installed snapshot is kept to send on"
    );
    let sent_on = other.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(sent_on.meta.snapshot_id, newest.meta.snapshot_id);

    // A file cut short is refused, and the tables stay as they were.
    let mut receiving = other.begin_receiving_snapshot().await.unwrap();
    receiving.write_all(&bytes[..bytes.len() - 1]).await.unwrap();
    let err = other.install_snapshot(&newest.meta, receiving).await.unwrap_err();
    assert!(err.to_string().contains("snapshot"), "{err}");
    assert_eq!(thing(&tables, "k"), Some(vec![7, 0, 255]));
    assert_eq!(
        files(&other_snapshots).len(),
        2,
        "the refused file is gone, the held one stays"
    );

    // A start over the same tables holds the snapshot again: openraft builds none (a copy
    // of the whole state written before the node serves). One cut short is not held.
    drop(other);
    let mut again = Machine::new(tables.clone(), other_snapshots.clone()).unwrap();
    let kept = again.get_current_snapshot().await.unwrap().map(|s| s.meta.snapshot_id);
    assert_eq!(kept, Some(newest.meta.snapshot_id.clone()));
    drop(again);
    let snapshot_file = files(&other_snapshots)
        .into_iter()
        .find(|f| f.extension().is_some_and(|e| e == "snapshot"))
        .unwrap();
    std::fs::write(other_snapshots.join("receiving-x.snapshot"), b"part").unwrap();
    let cut = std::fs::OpenOptions::new().write(true).open(&snapshot_file).unwrap();
    cut.set_len(cut.metadata().unwrap().len() - 1).unwrap();
    let mut again = Machine::new(tables.clone(), other_snapshots.clone()).unwrap();
    assert!(again.get_current_snapshot().await.unwrap().is_none());
    assert!(files(&other_snapshots).is_empty(), "{:?}", files(&other_snapshots));

    // A start over tables that did not apply what the snapshot holds empties the directory:
    // the snapshot is built again when one is needed.
    drop(machine);
    let db = Arc::new(redb::Database::create(here.path().join("db2")).unwrap());
    let (live, _) = tokio::sync::broadcast::channel(16);
    let mut again = Machine::new(Arc::new(Tables::open(db, live, 0).unwrap()), snapshots.clone()).unwrap();
    assert!(files(&snapshots).is_empty());
    assert!(again.get_current_snapshot().await.unwrap().is_none());
}

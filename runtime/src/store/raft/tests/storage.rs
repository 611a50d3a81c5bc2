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
        let log = Arc::new(redb::Database::create(dir.path().join("db.log.redb")).unwrap());
        let tables = Arc::new(Tables::open(db, live, 0).unwrap());
        Ok((dir, LogStore::new(log, tables.clone()), Machine::new(tables)))
    }
}

/// openraft's own storage suite: log, vote, purge, truncate, membership and snapshots.
#[test]
fn the_log_and_state_machine_pass_openrafts_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

#[test]
fn a_log_an_earlier_build_kept_in_the_tables_file_moves_to_a_file_of_its_own_once() {
    use crate::store::raft::{log, RAFT_LOG, RAFT_STATE};
    use redb::{ReadableDatabase, ReadableTableMetadata};
    let dir = tempfile::tempdir().unwrap();
    let tables = redb::Database::create(dir.path().join("db")).unwrap();
    let old_layout = |id: u64| {
        let txn = tables.begin_write().unwrap();
        {
            let mut state = txn.open_table(RAFT_STATE).unwrap();
            state
                .insert(log::ID, crate::codec::encode(&id).unwrap().as_slice())
                .unwrap();
            let mut entries = txn.open_table(RAFT_LOG).unwrap();
            entries.insert(1, b"one".as_slice()).unwrap();
            entries.insert(2, b"two".as_slice()).unwrap();
        }
        txn.commit().unwrap();
    };
    let gone = |db: &redb::Database| {
        let txn = db.begin_read().unwrap();
        matches!(txn.open_table(RAFT_STATE), Err(redb::TableError::TableDoesNotExist(_)))
            && matches!(txn.open_table(RAFT_LOG), Err(redb::TableError::TableDoesNotExist(_)))
    };
    old_layout(42);
    let logs = redb::Database::create(crate::store::raft::log_path(&dir.path().join("db"))).unwrap();
    log::adopt(&tables, &logs).unwrap();
    assert_eq!(
        crate::store::raft::read_state::<NodeId>(&logs, RAFT_STATE, log::ID).unwrap(),
        Some(42)
    );
    let txn = logs.begin_read().unwrap();
    assert_eq!(txn.open_table(RAFT_LOG).unwrap().len().unwrap(), 2);
    drop(txn);
    assert!(gone(&tables), "the tables' file keeps no copy");
    // A crash after the copy left the old one too: the log's own file wins, the old copy goes.
    old_layout(7);
    log::adopt(&tables, &logs).unwrap();
    assert_eq!(
        crate::store::raft::read_state::<NodeId>(&logs, RAFT_STATE, log::ID).unwrap(),
        Some(42)
    );
    assert!(gone(&tables));
    // Nothing left to move: nothing changes.
    log::adopt(&tables, &logs).unwrap();
    assert_eq!(
        crate::store::raft::read_state::<NodeId>(&logs, RAFT_STATE, log::ID).unwrap(),
        Some(42)
    );
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

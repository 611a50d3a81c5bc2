use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use serde_json::json;

use super::log::LogStore;
use super::machine::Machine;
use super::{NodeId, Proposal, Troupe};
use crate::events::NewEvent;
use crate::store::{Batch, Store, Table};

const THINGS: Table = Table::new("things");

struct Builder;

impl StoreBuilder<Troupe, LogStore, Machine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, Machine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(redb::Database::create(dir.path().join("db")).unwrap());
        let (live, _) = tokio::sync::broadcast::channel(16);
        let machine = Machine::open(db.clone(), live, 0).unwrap();
        Ok((dir, LogStore::new(db), machine))
    }
}

/// openraft's own storage suite: log, vote, purge, truncate, membership and snapshots.
#[test]
fn the_log_and_state_machine_pass_openrafts_storage_suite() {
    Suite::test_all(Builder).unwrap();
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
    let bytes = crate::codec::encode(&Proposal { batches: vec![sealed] }).unwrap();
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
async fn a_fresh_store_is_a_one_node_cluster_that_leads_and_commits_through_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let metrics = store.raft().metrics().borrow().clone();
    assert_eq!(metrics.current_leader, Some(metrics.id));
    let seqs = store
        .write(
            Batch::new()
                .put(THINGS, "k", vec![7])
                .event(NewEvent::new("T", None, json!(null))),
        )
        .await
        .unwrap();
    assert_eq!(seqs, vec![1]);
    // Index 0 is the one-node membership, 1 the new leader's blank entry, 2 this write.
    store
        .raft()
        .wait(Some(std::time::Duration::from_secs(10)))
        .applied_index(Some(2), "the write is one applied log entry")
        .await
        .unwrap();
    assert_eq!(store.get(THINGS, "k").await.unwrap(), Some(vec![7]));
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

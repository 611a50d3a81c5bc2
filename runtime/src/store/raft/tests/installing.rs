//! A member installing a snapshot answers nothing else until it installed it (openraft's
//! core answers each request in turn, the install's first): the leader must count it as
//! catching up meanwhile, however long that takes, or it takes the next snapshot, purges the
//! log the member needs after the one it installs, and sends it another.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::InstallSnapshotRequest;
use openraft::{BasicNode, SnapshotMeta, Vote};
use tokio::sync::watch;

use crate::store::apply::Tables;
use crate::store::raft::log::LogStore;
use crate::store::raft::network::{Network, SendError, Transport, TransportSlot};
use crate::store::raft::snapshots::Seen;
use crate::store::raft::RpcKind;

/// Holds every snapshot chunk until the gate opens, then loses it.
struct Gated(watch::Receiver<bool>);

impl Transport for Gated {
    fn send(&self, _: &str, kind: RpcKind, _: Vec<u8>, _: Duration) -> BoxFuture<'static, Result<Vec<u8>, SendError>> {
        let mut open = self.0.clone();
        Box::pin(async move {
            if kind == RpcKind::Snapshot {
                let _ = open.wait_for(|open| *open).await;
            }
            Err(SendError::Lost("dropped by the test".into()))
        })
    }
}

#[tokio::test]
async fn a_member_sent_the_last_chunk_of_a_snapshot_is_catching_up_until_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (live, _) = tokio::sync::broadcast::channel(16);
    let db = Arc::new(redb::Database::create(dir.path().join("db")).unwrap());
    let log = crate::store::raft::log::files::open(&dir.path().join("db"), &db).unwrap();
    let tables = Arc::new(Tables::open(db, live, 0).unwrap());
    let seen = Arc::new(Seen::default());
    let durable = LogStore::new(log, tables, seen.clone()).durable();
    let (open, gate) = watch::channel(false);
    let slot = TransportSlot::default();
    slot.set(Arc::new(Gated(gate)));
    let mut network = Network::new(slot, durable, seen.clone(), Duration::ZERO);
    let member = 7;
    let mut client = network.new_client(member, &BasicNode::new("gamma")).await;
    let option = RPCOption::new(Duration::from_secs(60));
    let chunk = |done: bool| InstallSnapshotRequest {
        vote: Vote::new_committed(1, 1),
        meta: SnapshotMeta::default(),
        offset: 0,
        data: vec![1; 16],
        done,
    };
    // Long after its last answer (it answered none here).
    let later = || Instant::now() + Duration::from_secs(60);

    // A chunk before the last is answered at once by a member that takes it: one whose
    // answer does not come is not installing anything.
    {
        let mut first = std::pin::pin!(client.install_snapshot(chunk(false), option.clone()));
        assert!(futures::poll!(first.as_mut()).is_pending());
        assert!(!seen.catching_up(member, later()));
        open.send_replace(true);
        assert!(first.await.is_err());
    }
    open.send_replace(false);

    // The last one is answered once the member installed the snapshot.
    let mut last = std::pin::pin!(client.install_snapshot(chunk(true), option));
    assert!(futures::poll!(last.as_mut()).is_pending());
    assert!(
        seen.catching_up(member, later()),
        "a member installing a snapshot counts as gone"
    );
    assert!(!seen.catching_up(member + 1, later()));
    open.send_replace(true);
    assert!(last.await.is_err());
    assert!(
        !seen.catching_up(member, later()),
        "the send gave up, and the member still counts"
    );
}

//! The Raft lane between nodes: a member's log messages (append, vote, snapshot chunks,
//! a follower's forwarded writes) carried over ractor_cluster to the member named in the
//! log's membership, and answered there by the store's own Raft.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_bytes::ByteBuf;
use troupe_runtime::store::raft::{self, RpcKind, SendError, Transport};
use troupe_runtime::store::Store;

use crate::cluster::remote::{self, service, Call, Located, Service};
use crate::cluster::Cluster;
use crate::error::ApiError;

service! {
    service RaftService as "raft" (RaftMsg, RaftRequest, RaftResponse, RaftLocal);
    /// One encoded Raft message for this node's member; `within_ms` is how long the sender
    /// waits for the answer.
    call Rpc => rpc(kind: RpcKind, within_ms: u64, request: ByteBuf) -> ByteBuf,
        within Duration::from_millis(*within_ms);
}

#[derive(Clone)]
pub struct RaftService {
    pub(crate) cluster: Cluster,
    pub(crate) store: Store,
}

impl Located for RaftService {
    fn cluster(&self) -> &Cluster {
        &self.cluster
    }
}

impl RaftLocal for RaftService {
    async fn rpc(&self, kind: RpcKind, _within_ms: u64, request: ByteBuf) -> Result<ByteBuf, ApiError> {
        raft::serve(&self.store, kind, &request)
            .await
            .map(ByteBuf::from)
            .map_err(ApiError::from)
    }
}

impl Transport for RaftService {
    fn send(
        &self,
        to: &str,
        kind: RpcKind,
        request: Vec<u8>,
        within: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, SendError>> {
        let to = to.to_owned();
        Box::pin(async move {
            // Straight to the member, bounded by the log's own deadline (not a peer call's
            // usual five seconds): openraft retries on its own schedule.
            let call = Call {
                key: None,
                request: RaftRequest::Rpc {
                    kind,
                    within_ms: within.as_millis().max(1) as u64,
                    request: ByteBuf::from(request),
                },
            };
            if !remote::is_connected(RaftService::ROLE, &to) {
                return Err(SendError::NotSent(format!("node {to} is not connected")));
            }
            match remote::call::<RaftService>(&to, &call, within).await {
                Ok(RaftResponse::Rpc(answer)) => Ok(answer.into_vec()),
                Err(e) => Err(SendError::Lost(e.to_string())),
            }
        })
    }
}

impl RaftService {
    /// Hands this service to the store as the way its Raft member reaches the others.
    pub(crate) fn carry(&self) {
        self.store.transport().set(Arc::new(self.clone()));
    }
}

//! The Raft lane between nodes: a member's log messages (append, vote, snapshot chunks,
//! a follower's forwarded writes) carried to the member named in the log's membership, and
//! answered there by the store's own Raft. They travel on a connection of their own
//! ([`lane`]), learnt over ractor_cluster; over ractor_cluster itself when the other member
//! does not say where its lane is.

pub mod lane;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_bytes::ByteBuf;
use tokio::sync::watch;
use troupe_runtime::store::raft::{self, RpcKind, SendError, Transport};
use troupe_runtime::store::Store;
use troupe_runtime::tls::ClusterTls;

use crate::cluster::remote::{self, service, Call, Located, Service};
use crate::cluster::Cluster;
use crate::error::ApiError;
use lane::{LaneInfo, Lanes, Listener};

/// How long a member waits for another to say where its lane is.
const LANE_ASKED_WITHIN: Duration = Duration::from_secs(2);

service! {
    service RaftService as "raft" (RaftMsg, RaftRequest, RaftResponse, RaftLocal);
    /// One encoded Raft message for this node's member; `within_ms` is how long the sender
    /// waits for the answer.
    call Rpc => rpc(kind: RpcKind, within_ms: u64, request: ByteBuf) -> ByteBuf,
        within Duration::from_millis(*within_ms);
    /// Where this member's Raft lane listens, and the key a connection presents.
    call Lane => lane() -> LaneInfo, within LANE_ASKED_WITHIN;
}

#[derive(Clone)]
pub struct RaftService {
    pub(crate) cluster: Cluster,
    pub(crate) store: Store,
    pub(crate) lane: Arc<LaneEnds>,
}

/// This member's lane, once listening, and the lanes of the others it learnt.
#[derive(Default)]
pub struct LaneEnds {
    listener: tokio::sync::OnceCell<Listener>,
    lanes: std::sync::OnceLock<Lanes>,
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

    async fn lane(&self) -> Result<LaneInfo, ApiError> {
        match self.lane.listener.get() {
            Some(listener) => Ok(listener.info.clone()),
            None => Err(ApiError::Unavailable(
                "this node's Raft lane is not listening yet".into(),
            )),
        }
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
        let (to, service) = (to.to_owned(), self.clone());
        Box::pin(async move {
            if remote::raft_cut_off(&to) {
                return Err(SendError::Lost(format!(
                    "node {to} is cut off from this node (injected partition)"
                )));
            }
            if !remote::is_connected(RaftService::ROLE, &to) {
                return Err(SendError::NotSent(format!("node {to} is not connected")));
            }
            if let Some(lanes) = service.lanes() {
                let ask = || service.ask_lane(lanes, &to, within);
                if let Some(sent) = lanes.send_on_lane(&to, kind, &request, within, ask).await {
                    metrics::counter!("troupe_raft_messages_total", "way" => "lane").increment(1);
                    return sent;
                }
            }
            metrics::counter!("troupe_raft_messages_total", "way" => "link").increment(1);
            service.send_on_link(&to, kind, request, within).await
        })
    }
}

impl RaftService {
    /// Hands this service to the store as the way its Raft member reaches the others, with
    /// its lane listening at `addr` (once; a restarted link keeps it), whose requests wait
    /// while `held`.
    pub(crate) async fn carry(
        &self,
        addr: std::net::SocketAddr,
        advertise: Option<&str>,
        tls: Option<&ClusterTls>,
        held: watch::Receiver<bool>,
    ) -> Result<(), String> {
        let listener = self
            .lane
            .listener
            .get_or_try_init(|| Listener::start(self.store.clone(), addr, advertise, tls))
            .await
            .map_err(|e| format!("the Raft lane cannot listen on {addr}: {e}"))?;
        listener.hold_with(held);
        let _ = self.lane.lanes.set(Lanes::new(tls));
        self.store.transport().set(Arc::new(self.clone()));
        Ok(())
    }

    fn lanes(&self) -> Option<&Lanes> {
        self.lane.lanes.get()
    }

    /// Asks `to` where its lane is; false when it does not say (it is not listening yet).
    async fn ask_lane(&self, lanes: &Lanes, to: &str, within: Duration) -> bool {
        let call = Call {
            key: None,
            request: RaftRequest::Lane {},
        };
        match remote::call::<RaftService>(to, &call, within.min(LANE_ASKED_WITHIN)).await {
            Ok(RaftResponse::Lane(mut info)) => {
                let members = self.cluster.members();
                let address = members.iter().find(|m| m.name == to).map(|m| m.address.as_str());
                info.addr = lane::reachable(&info.addr, address);
                lanes.learn(to, info);
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::debug!(node = %to, error = %e, "no Raft lane learnt; the link carries the message");
                false
            }
        }
    }

    /// Sends one message over the ractor_cluster link.
    async fn send_on_link(
        &self,
        to: &str,
        kind: RpcKind,
        request: Vec<u8>,
        within: Duration,
    ) -> Result<Vec<u8>, SendError> {
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
        match remote::call::<RaftService>(to, &call, within).await {
            Ok(RaftResponse::Rpc(answer)) => Ok(answer.into_vec()),
            Ok(_) => Err(SendError::Lost(format!("node {to} answered another request"))),
            Err(e) => Err(SendError::Lost(e.to_string())),
        }
    }
}

//! Talking to peers: find a node's router by name, ask one or all of them, list members.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use ractor::rpc::CallResult;
use ractor::{ActorCell, ActorRef};
use serde::{Deserialize, Serialize};

use super::router::{PeerRequest, PeerResponse, RouterMsg};
use crate::error::ApiError;

pub(crate) const ROUTERS: &str = "troupe.routers";
const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a cluster-wide list waits for each peer's part.
const GATHER_TIMEOUT: Duration = Duration::from_secs(2);
/// How often each peer is asked whether it is there.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);
/// Silence after which a peer is reported DOWN.
const SUSPECT_AFTER: Duration = Duration::from_secs(3);

pub(crate) fn node_group(name: &str) -> String {
    format!("troupe.router.{name}")
}

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub name: String,
    pub cluster_address: String,
    pub gateway_address: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberStatus {
    Up,
    Down,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub address: String,
    pub status: MemberStatus,
}

/// This node's view of the cluster.
#[derive(Clone)]
pub struct Cluster {
    me: Arc<Mutex<PeerInfo>>,
    /// Every peer heard from since start, by name: its address and when it last answered.
    seen: Arc<Mutex<BTreeMap<String, (String, Instant)>>>,
}

impl Cluster {
    pub fn new(me: PeerInfo) -> Self {
        Self {
            me: Arc::new(Mutex::new(me)),
            seen: Arc::default(),
        }
    }

    pub fn me(&self) -> PeerInfo {
        self.me
            .lock()
            .map(|m| m.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn set_gateway_address(&self, addr: String) {
        if let Ok(mut me) = self.me.lock() {
            me.gateway_address = Some(addr);
        }
    }

    fn remote_routers() -> Vec<ActorCell> {
        ractor::pg::get_members(&ROUTERS.to_string())
            .into_iter()
            .filter(|c| !c.get_id().is_local())
            .collect()
    }

    /// Whether a peer of that name is connected now.
    pub fn is_connected(&self, node: &str) -> bool {
        !ractor::pg::get_members(&node_group(node)).is_empty()
    }

    /// Asks the node named `node`.
    pub async fn call(&self, node: &str, request: &PeerRequest) -> Result<PeerResponse, ApiError> {
        let cell = ractor::pg::get_members(&node_group(node))
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::Unavailable(format!("node {node} is not connected")))?;
        call_cell(cell, request).await
    }

    /// Asks every connected peer at once and returns the first answer `pick` accepts.
    pub async fn find<T>(&self, request: &PeerRequest, pick: impl Fn(PeerResponse) -> Option<T>) -> Option<T> {
        let calls = Self::remote_routers().into_iter().map(|c| call_cell(c, request));
        futures::future::join_all(calls)
            .await
            .into_iter()
            .filter_map(Result::ok)
            .find_map(pick)
    }

    /// Asks every connected peer at once and keeps the answers `pick` accepts, waiting at
    /// most [`GATHER_TIMEOUT`] for each: a list must not hang on one frozen peer.
    pub async fn gather<T>(&self, request: &PeerRequest, pick: impl Fn(PeerResponse) -> Option<T>) -> Vec<T> {
        let calls = Self::remote_routers()
            .into_iter()
            .map(|c| tokio::time::timeout(GATHER_TIMEOUT, call_cell(c, request)));
        futures::future::join_all(calls)
            .await
            .into_iter()
            .filter_map(|r| match r {
                Ok(Ok(answer)) => pick(answer),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "a peer's part of a list is missing");
                    None
                }
                Err(_) => {
                    tracing::warn!("a peer did not answer a list in time; its part is missing");
                    None
                }
            })
            .collect()
    }

    /// Asks every connected peer at once. The first real answer wins; NOT_FOUND answers
    /// (peers that do not own the entity) yield `None` unless some peer failed otherwise.
    pub async fn ask_all(&self, request: &PeerRequest) -> Result<Option<PeerResponse>, ApiError> {
        let calls = Self::remote_routers().into_iter().map(|c| call_cell(c, request));
        let mut failure = None;
        for answer in futures::future::join_all(calls).await {
            match answer {
                Ok(r) => return Ok(Some(r)),
                Err(ApiError::NotFound(_)) => {}
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        failure.map_or(Ok(None), Err)
    }

    /// Asks every connected peer who it is, once per [`HEARTBEAT`], and records who answered.
    /// A frozen peer keeps its TCP session, so only its silence tells it apart.
    pub(crate) async fn heartbeat(self) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let calls = Self::remote_routers()
                .into_iter()
                .map(|c| tokio::time::timeout(HEARTBEAT, call_cell(c, &PeerRequest::Hello)));
            let answers = futures::future::join_all(calls).await;
            let now = Instant::now();
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            for answer in answers {
                if let Ok(Ok(PeerResponse::Hello(info))) = answer {
                    seen.insert(info.name, (info.cluster_address, now));
                }
            }
        }
    }

    /// This node and every peer it has heard from since it started: UP when the peer answered
    /// a heartbeat within [`SUSPECT_AFTER`], else DOWN.
    pub fn members(&self) -> Vec<Member> {
        let me = self.me();
        let now = Instant::now();
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Member> = seen
            .iter()
            .filter(|(name, _)| **name != me.name)
            .map(|(name, (address, last))| Member {
                name: name.clone(),
                address: address.clone(),
                status: if now.duration_since(*last) <= SUSPECT_AFTER {
                    MemberStatus::Up
                } else {
                    MemberStatus::Down
                },
            })
            .collect();
        out.push(Member {
            name: me.name,
            address: me.cluster_address,
            status: MemberStatus::Up,
        });
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

async fn call_cell(cell: ActorCell, request: &PeerRequest) -> Result<PeerResponse, ApiError> {
    let bytes = troupe_runtime::codec::encode(request)?;
    let router: ActorRef<RouterMsg> = cell.into();
    match router
        .call(|reply| RouterMsg::Call(bytes, reply), Some(PEER_TIMEOUT))
        .await
    {
        Ok(CallResult::Success(reply)) => match troupe_runtime::codec::decode::<PeerResponse>(&reply)? {
            PeerResponse::Error(e) => Err(e),
            other => Ok(other),
        },
        Ok(CallResult::Timeout) => Err(ApiError::Unavailable("a peer did not answer in time".into())),
        Ok(CallResult::SenderError) | Err(_) => Err(ApiError::Unavailable("a peer went away".into())),
    }
}

//! This node's view of the cluster: who is there, who answered lately, and asking every
//! reachable peer at once while saying which ones could not be asked.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::remote::{self, Service};
use crate::error::ApiError;
use crate::service::node::{NodeRequest, NodeResponse, NodeService};

/// How often each peer is asked whether it is there.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);
/// Silence after which a peer is reported DOWN.
const SUSPECT_AFTER: Duration = Duration::from_secs(3);
/// How long a cluster-wide list waits for each peer's part.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(2);

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

/// Answers gathered from peers, and the peers whose part is missing.
#[derive(Debug, Clone)]
pub struct Gathered<T> {
    pub answers: Vec<T>,
    /// Names of known peers that are down, disconnected or did not answer in time.
    pub missing: Vec<String>,
}

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
        self.me.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn name(&self) -> String {
        self.me().name
    }

    pub fn set_gateway_address(&self, addr: String) {
        self.me.lock().unwrap_or_else(|p| p.into_inner()).gateway_address = Some(addr);
    }

    /// Peers whose node service is connected now.
    fn connected(&self) -> BTreeSet<String> {
        let me = self.name();
        let prefix = remote::group(NodeService::ROLE, "");
        ractor::pg::which_groups()
            .into_iter()
            .filter_map(|g| g.strip_prefix(&prefix).map(str::to_owned))
            .filter(|name| *name != me && remote::is_connected(NodeService::ROLE, name))
            .collect()
    }

    /// UP if the node answered a heartbeat lately (or is this node), DOWN if it did before
    /// and has gone quiet, `None` if it was never heard from.
    pub fn status(&self, name: &str) -> Option<MemberStatus> {
        if name == self.name() {
            return Some(MemberStatus::Up);
        }
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(name).map(|(_, last)| {
            if last.elapsed() <= SUSPECT_AFTER {
                MemberStatus::Up
            } else {
                MemberStatus::Down
            }
        })
    }

    /// Fails at once for a peer known to be down: a frozen peer must not cost every caller
    /// a full timeout.
    pub fn ensure_reachable(&self, name: &str) -> Result<(), ApiError> {
        if self.status(name) == Some(MemberStatus::Down) {
            return Err(ApiError::Unavailable(format!("node {name} is down")));
        }
        Ok(())
    }

    /// The peers connected now.
    pub fn peers(&self) -> Vec<String> {
        let me = self.name();
        self.connected().into_iter().filter(|n| *n != me).collect()
    }

    /// Asks every reachable peer's `S` service at once, waiting at most [`GATHER_TIMEOUT`]
    /// for each. Peers that are down, gone or too slow are named in `missing`.
    pub async fn gather<S: Service>(&self, request: &S::Request) -> Gathered<S::Response> {
        let connected = self.connected();
        let known: BTreeSet<String> = {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.keys().cloned().collect()
        };
        let me = self.name();
        let mut missing = Vec::new();
        let mut ask = Vec::new();
        for name in connected.union(&known).filter(|n| **n != me) {
            if self.status(name) == Some(MemberStatus::Down) || !connected.contains(name) {
                missing.push(name.clone());
            } else {
                ask.push(name.clone());
            }
        }
        let call = remote::Call {
            key: None,
            request: request.clone(),
        };
        let calls = ask.iter().map(|name| remote::call::<S>(name, &call, GATHER_TIMEOUT));
        let mut answers = Vec::new();
        for (name, answer) in ask.iter().zip(futures::future::join_all(calls).await) {
            match answer {
                Ok(a) => answers.push(a),
                Err(e) => {
                    tracing::warn!(peer = %name, error = %e, "a peer's part of a cluster answer is missing");
                    missing.push(name.clone());
                }
            }
        }
        missing.sort();
        Gathered { answers, missing }
    }

    /// Asks every connected peer who it is, once per [`HEARTBEAT`], and records who
    /// answered. A frozen peer keeps its TCP session, so only its silence tells it apart.
    pub(crate) async fn heartbeat(self) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let peers: Vec<String> = self.connected().into_iter().collect();
            let hello = remote::Call {
                key: None,
                request: NodeRequest::Hello {},
            };
            let calls = peers.iter().map(|p| remote::call::<NodeService>(p, &hello, HEARTBEAT));
            let answers = futures::future::join_all(calls).await;
            let now = Instant::now();
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            for answer in answers {
                if let Ok(NodeResponse::Hello(info)) = answer {
                    seen.insert(info.name, (info.cluster_address, now));
                }
            }
        }
    }

    /// This node and every peer it has heard from since it started.
    pub fn members(&self) -> Vec<Member> {
        let me = self.me();
        let seen: Vec<(String, String)> = {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.iter().map(|(n, (a, _))| (n.clone(), a.clone())).collect()
        };
        let mut out: Vec<Member> = seen
            .into_iter()
            .filter(|(name, _)| *name != me.name)
            .map(|(name, address)| Member {
                status: self.status(&name).unwrap_or(MemberStatus::Down),
                name,
                address,
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

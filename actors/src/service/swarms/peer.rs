//! The swarms service between nodes: what a peer may ask of this node's swarms, and how it is
//! answered.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::Swarms;
use crate::cluster::remote::{envelope, Call, Located, Service, Within};
use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::swarm::memory::{Entry, Write};
use crate::swarm::{CreateSwarmRequest, SwarmTask, SwarmTaskMode, SwarmView, Topology};

envelope!(SwarmsMsg);

/// A request to a peer's swarms service: each names one of [`Swarms`]' methods.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SwarmsRequest {
    Create(Box<CreateSwarmRequest>),
    Get(String),
    List,
    Scale {
        id: String,
        size: u32,
        reason: String,
    },
    SetTopology {
        id: String,
        topology: Topology,
    },
    Destroy(String),
    CrashCoordinator(String),
    MemoryGet {
        id: String,
        key: String,
    },
    MemoryList {
        id: String,
        prefix: String,
        first: u32,
    },
    MemoryWrite {
        id: String,
        key: String,
        write: Write,
        expect: Option<u64>,
    },
    SubmitTask {
        id: String,
        mode: Box<SwarmTaskMode>,
    },
    Task(String),
    Tasks {
        id: String,
        first: u32,
    },
    Queue(String),
    Adopt {
        id: String,
        agent: String,
    },
    Release {
        id: String,
        agent: String,
    },
}

impl Within for SwarmsRequest {
    /// How long the peer may take: members start or stop in some.
    fn within(&self) -> Duration {
        match self {
            Self::Create(_) | Self::Scale { .. } | Self::Destroy(_) | Self::Adopt { .. } | Self::Release { .. } => {
                SLOW_PEER_TIMEOUT
            }
            _ => crate::cluster::remote::PEER_TIMEOUT,
        }
    }
}

/// How long a peer may take over a request that starts or stops members.
const SLOW_PEER_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SwarmsResponse {
    Swarm(Box<SwarmView>),
    Swarms(Vec<SwarmView>),
    Task(Box<SwarmTask>),
    FoundTask(Option<Box<SwarmTask>>),
    Tasks(Vec<SwarmTask>),
    Entry(Option<Entry>),
    Entries(Vec<Entry>),
    Queue(u32, u32),
    Done,
}

impl Service for Swarms {
    const ROLE: &'static str = "swarms";
    type Request = SwarmsRequest;
    type Response = SwarmsResponse;
    type Msg = SwarmsMsg;

    fn cluster(&self) -> &Cluster {
        &self.ctx.cluster
    }

    /// A peer's request, answered here: the ids it names are this node's.
    fn serve(&self, call: Call<SwarmsRequest>) -> BoxFuture<'static, Result<SwarmsResponse, ApiError>> {
        let me = self.clone();
        let request = call.request;
        Box::pin(async move {
            let swarm = |v: SwarmView| SwarmsResponse::Swarm(Box::new(v));
            Ok(match request {
                SwarmsRequest::Create(req) => swarm(me.create(*req).await?),
                SwarmsRequest::Get(id) => swarm(me.get(&id).await?),
                SwarmsRequest::List => SwarmsResponse::Swarms(me.list_local().await?),
                SwarmsRequest::Scale { id, size, reason } => swarm(me.scale(&id, size, &reason).await?),
                SwarmsRequest::SetTopology { id, topology } => swarm(me.set_topology(&id, topology).await?),
                SwarmsRequest::Destroy(id) => swarm(me.destroy(&id).await?),
                SwarmsRequest::CrashCoordinator(id) => {
                    me.crash_coordinator(&id).await?;
                    SwarmsResponse::Done
                }
                SwarmsRequest::MemoryGet { id, key } => SwarmsResponse::Entry(me.memory_get(&id, &key).await?),
                SwarmsRequest::MemoryList { id, prefix, first } => {
                    SwarmsResponse::Entries(me.memory_list(&id, &prefix, first.min(1000) as usize).await?)
                }
                SwarmsRequest::MemoryWrite { id, key, write, expect } => {
                    SwarmsResponse::Entry(me.memory_write(&id, &key, write, expect).await?)
                }
                SwarmsRequest::SubmitTask { id, mode } => {
                    SwarmsResponse::Task(Box::new(me.submit_task(&id, *mode).await?))
                }
                SwarmsRequest::Task(id) => SwarmsResponse::FoundTask(me.task(&id).await?.map(Box::new)),
                SwarmsRequest::Tasks { id, first } => {
                    SwarmsResponse::Tasks(me.tasks(&id, first.min(10_000) as usize).await?)
                }
                SwarmsRequest::Queue(id) => {
                    let (running, slots) = me.queue(&id).await?;
                    SwarmsResponse::Queue(running, slots)
                }
                SwarmsRequest::Adopt { id, agent } => swarm(me.adopt(&id, &agent).await?),
                SwarmsRequest::Release { id, agent } => swarm(me.release(&id, &agent).await?),
            })
        })
    }
}

impl Located for Swarms {
    fn cluster(&self) -> &Cluster {
        &self.ctx.cluster
    }
}

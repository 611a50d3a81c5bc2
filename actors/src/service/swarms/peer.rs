//! The swarms service between nodes: the changes a peer may ask of this node's swarms (reads
//! are answered from the asking node's replica). Each request is answered by the [`Swarms`]
//! method of the same name, run on the node that holds the swarm (the method's first line
//! routes there, through `on_peer!`).

use std::time::Duration;

use super::Swarms;
use crate::cluster::remote::{service, Located};
use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::swarm::memory::{Entry, Write};
use crate::swarm::{CreateSwarmRequest, SwarmTask, SwarmTaskMode, SwarmView, Topology};

/// How long a peer may take over a request that starts or stops members.
const SLOW_PEER_TIMEOUT: Duration = Duration::from_secs(120);

service! {
    service Swarms as "swarms" (SwarmsMsg, SwarmsRequest, SwarmsResponse, SwarmsLocal);
    call Create => create(request: Box<CreateSwarmRequest>) -> SwarmView, within SLOW_PEER_TIMEOUT;
    call Scale => scale(id: String, size: u32, reason: String) -> SwarmView, within SLOW_PEER_TIMEOUT;
    call SetTopology => set_topology(id: String, topology: Topology) -> SwarmView;
    call Destroy => destroy(id: String) -> SwarmView, within SLOW_PEER_TIMEOUT;
    call CrashCoordinator => crash_coordinator(id: String) -> ();
    call MemoryWrite => memory_write(id: String, key: String, write: Write, expect: Option<u64>) -> Option<Entry>;
    call SubmitTask => submit_task(id: String, mode: Box<SwarmTaskMode>) -> SwarmTask;
    call Adopt => adopt(id: String, agent: String) -> SwarmView, within SLOW_PEER_TIMEOUT;
    call Release => release(id: String, agent: String) -> SwarmView, within SLOW_PEER_TIMEOUT;
}

impl Located for Swarms {
    fn cluster(&self) -> &Cluster {
        &self.ctx.cluster
    }
}

/// A peer's request, answered here: the ids it names are this node's.
impl SwarmsLocal for Swarms {
    async fn create(&self, request: Box<CreateSwarmRequest>) -> Result<SwarmView, ApiError> {
        Swarms::create(self, *request).await
    }

    async fn scale(&self, id: String, size: u32, reason: String) -> Result<SwarmView, ApiError> {
        Swarms::scale(self, &id, size, &reason).await
    }

    async fn set_topology(&self, id: String, topology: Topology) -> Result<SwarmView, ApiError> {
        Swarms::set_topology(self, &id, topology).await
    }

    async fn destroy(&self, id: String) -> Result<SwarmView, ApiError> {
        Swarms::destroy(self, &id).await
    }

    async fn crash_coordinator(&self, id: String) -> Result<(), ApiError> {
        Swarms::crash_coordinator(self, &id).await
    }

    async fn memory_write(
        &self,
        id: String,
        key: String,
        write: Write,
        expect: Option<u64>,
    ) -> Result<Option<Entry>, ApiError> {
        Swarms::memory_write(self, &id, &key, write, expect).await
    }

    async fn submit_task(&self, id: String, mode: Box<SwarmTaskMode>) -> Result<SwarmTask, ApiError> {
        Swarms::submit_task(self, &id, *mode).await
    }

    async fn adopt(&self, id: String, agent: String) -> Result<SwarmView, ApiError> {
        Swarms::adopt(self, &id, &agent).await
    }

    async fn release(&self, id: String, agent: String) -> Result<SwarmView, ApiError> {
        Swarms::release(self, &id, &agent).await
    }
}

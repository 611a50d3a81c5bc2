//! The node service: what a peer asks a node about itself (the heartbeat's hello).

use crate::cluster::remote::{service, Located};
use crate::cluster::{Cluster, PeerInfo};
use crate::error::ApiError;

service! {
    service NodeService as "node" (NodeMsg, NodeRequest, NodeResponse, NodeLocal);
    /// Who this node is and where it listens.
    call Hello => hello() -> PeerInfo;
}

#[derive(Clone)]
pub struct NodeService {
    pub(crate) cluster: Cluster,
}

impl Located for NodeService {
    fn cluster(&self) -> &Cluster {
        &self.cluster
    }
}

impl NodeLocal for NodeService {
    async fn hello(&self) -> Result<PeerInfo, ApiError> {
        Ok(self.cluster.me())
    }
}

//! The node service: what a peer asks a node about itself (the heartbeat's hello).

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::cluster::remote::{envelope, Service};
use crate::cluster::{Cluster, PeerInfo};
use crate::error::ApiError;

envelope!(NodeMsg);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NodeRequest {
    Hello,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NodeResponse {
    Hello(PeerInfo),
}

#[derive(Clone)]
pub struct NodeService {
    pub(crate) cluster: Cluster,
    pub(crate) name: String,
}

impl Service for NodeService {
    const ROLE: &'static str = "node";
    type Request = NodeRequest;
    type Response = NodeResponse;
    type Msg = NodeMsg;

    fn node_name(&self) -> &str {
        &self.name
    }

    fn serve(&self, request: NodeRequest) -> BoxFuture<'static, Result<NodeResponse, ApiError>> {
        let me = self.cluster.me();
        Box::pin(async move {
            match request {
                NodeRequest::Hello => Ok(NodeResponse::Hello(me)),
            }
        })
    }
}

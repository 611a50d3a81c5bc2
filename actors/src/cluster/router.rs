//! The router: this node's one remotable actor. Each request is served in its own task so a
//! slow one never holds up the others.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use super::peers::{node_group, PeerInfo, ROUTERS};
use crate::agent::{AgentView, SpawnAgentRequest};
use crate::api::Api;
use crate::error::ApiError;
use crate::task::{SubmitTaskRequest, TaskRecord, TaskState};

#[derive(RactorClusterMessage)]
pub enum RouterMsg {
    /// An rmp-serde [`PeerRequest`]; the reply is an rmp-serde [`PeerResponse`].
    #[rpc]
    Call(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerRequest {
    Hello,
    SpawnAgent(SpawnAgentRequest),
    StopAgent(String),
    GetAgent(String),
    SubmitTask(SubmitTaskRequest),
    CancelTask(String),
    GetTask(String),
    /// One page of the peer's own agents after the cursor, in id order.
    ListAgents {
        after: Option<String>,
        first: u32,
    },
    /// One page of the peer's own tasks after the cursor, in id order, filtered.
    ListTasks {
        state: Option<TaskState>,
        agent: Option<String>,
        after: Option<String>,
        first: u32,
    },
    CountAgents,
    CountTasks {
        state: Option<TaskState>,
        agent: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerResponse {
    Hello(PeerInfo),
    Agent(Option<AgentView>),
    Task(Option<TaskRecord>),
    Agents(Vec<AgentView>, bool),
    Tasks(Vec<TaskRecord>, bool),
    Count(u64),
    Error(ApiError),
}

#[derive(Debug, Default)]
pub struct Router;

impl Actor for Router {
    type Msg = RouterMsg;
    type State = Api;
    type Arguments = Api;

    async fn pre_start(&self, myself: ActorRef<RouterMsg>, api: Api) -> Result<Api, ActorProcessingErr> {
        ractor::pg::join(ROUTERS.to_string(), vec![myself.get_cell()]);
        ractor::pg::join(node_group(api.node_name()), vec![myself.get_cell()]);
        Ok(api)
    }

    async fn handle(
        &self,
        _myself: ActorRef<RouterMsg>,
        msg: RouterMsg,
        api: &mut Api,
    ) -> Result<(), ActorProcessingErr> {
        let RouterMsg::Call(bytes, reply) = msg;
        let api = api.clone();
        tokio::spawn(async move {
            let response = match troupe_runtime::codec::decode::<PeerRequest>(&bytes) {
                Ok(request) => api.serve_peer(request).await,
                Err(e) => PeerResponse::Error(ApiError::invalid(format!("undecodable peer request: {e}"))),
            };
            match troupe_runtime::codec::encode(&response) {
                Ok(bytes) => {
                    let _ = reply.send(bytes);
                }
                Err(e) => tracing::error!(error = %e, "cannot encode a peer response"),
            }
        });
        Ok(())
    }
}

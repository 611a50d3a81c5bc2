//! The API as peers see it: what a node answers when another node's router asks. Only local
//! operations run here, so a request never bounces between nodes.

use super::Api;
use crate::agent::AgentView;
use crate::cluster::{PeerRequest, PeerResponse};
use crate::error::ApiError;
use crate::task::TaskRecord;

pub(super) fn agent(r: PeerResponse) -> Option<AgentView> {
    match r {
        PeerResponse::Agent(a) => a,
        _ => None,
    }
}

pub(super) fn task(r: PeerResponse) -> Option<TaskRecord> {
    match r {
        PeerResponse::Task(t) => t,
        _ => None,
    }
}

impl Api {
    /// Answers a peer's request from this node's own state.
    pub async fn serve_peer(&self, request: PeerRequest) -> PeerResponse {
        let answer = match request {
            PeerRequest::Hello => return PeerResponse::Hello(self.cluster().me()),
            PeerRequest::SpawnAgent(mut req) => {
                req.node = None;
                self.spawn_local(req).await.map(|a| PeerResponse::Agent(Some(a)))
            }
            PeerRequest::StopAgent(id) => self.stop_local(&id).await.map(|a| PeerResponse::Agent(Some(a))),
            PeerRequest::GetAgent(id) => match self.local_agent(&id).await {
                Ok(Some(r)) => Ok(PeerResponse::Agent(Some(self.view(r).await))),
                Ok(None) => Ok(PeerResponse::Agent(None)),
                Err(e) => Err(e.into()),
            },
            PeerRequest::SubmitTask(req) => self.submit_local(req).await.map(|t| PeerResponse::Task(Some(t))),
            PeerRequest::CancelTask(id) => self.cancel_local(&id).await.map(|t| PeerResponse::Task(Some(t))),
            PeerRequest::GetTask(id) => self
                .local_task(&id)
                .await
                .map(PeerResponse::Task)
                .map_err(ApiError::from),
        };
        answer.unwrap_or_else(PeerResponse::Error)
    }

    /// Sends a request to every peer; the one that owns the entity answers. Peers that do
    /// not know it answer NOT_FOUND, which only counts if nobody else answers.
    pub(super) async fn on_peers<T>(
        &self,
        request: PeerRequest,
        pick: fn(PeerResponse) -> Option<T>,
        missing: impl FnOnce() -> String,
    ) -> Result<T, ApiError> {
        match self.cluster().ask_all(&request).await {
            Ok(Some(answer)) => pick(answer).ok_or_else(|| ApiError::Internal("unexpected peer answer".into())),
            Ok(None) => Err(ApiError::NotFound(missing())),
            Err(e) => Err(e),
        }
    }
}

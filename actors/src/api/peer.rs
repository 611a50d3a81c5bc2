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

/// Merges pages that each hold one node's items after the same cursor, sorted by id, into
/// the cluster's page: the first `first` of them, and whether more follow anywhere.
pub(super) fn merge_pages<T>(pages: Vec<(Vec<T>, bool)>, first: usize, id: impl Fn(&T) -> &str) -> (Vec<T>, bool) {
    let mut more = false;
    let mut all = Vec::new();
    for (items, page_more) in pages {
        more |= page_more;
        all.extend(items);
    }
    all.sort_by(|a, b| id(a).cmp(id(b)));
    more |= all.len() > first;
    all.truncate(first);
    (all, more)
}

pub(super) fn count(r: PeerResponse) -> Option<u64> {
    match r {
        PeerResponse::Count(n) => Some(n),
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
            PeerRequest::ListAgents { after, first } => self
                .local_agents(after, first as usize)
                .await
                .map(|(v, more)| PeerResponse::Agents(v, more)),
            PeerRequest::ListTasks {
                state,
                agent,
                after,
                first,
            } => self
                .local_tasks(state, agent, after, first as usize)
                .await
                .map(|(v, more)| PeerResponse::Tasks(v, more)),
            PeerRequest::CountAgents => self.local_count_agents().await.map(PeerResponse::Count),
            PeerRequest::CountTasks { state, agent } => {
                self.local_count_tasks(state, agent).await.map(PeerResponse::Count)
            }
        };
        answer.unwrap_or_else(PeerResponse::Error)
    }

    /// `local` unless it is NOT_FOUND; then asks every peer, and the one that owns the entity
    /// answers. Peers that do not know it answer NOT_FOUND, which only counts if nobody else
    /// answers.
    pub(super) async fn or_on_peers<T>(
        &self,
        local: Result<T, ApiError>,
        request: PeerRequest,
        pick: fn(PeerResponse) -> Option<T>,
    ) -> Result<T, ApiError> {
        let Err(ApiError::NotFound(missing)) = local else {
            return local;
        };
        match self.cluster().ask_all(&request).await {
            Ok(Some(answer)) => pick(answer).ok_or_else(|| ApiError::Internal("unexpected peer answer".into())),
            Ok(None) => Err(ApiError::NotFound(missing)),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::merge_pages;

    #[test]
    fn merged_pages_keep_id_order_and_know_when_more_follow() {
        let a = (vec!["01", "04", "05"], true);
        let b = (vec!["02", "03"], false);
        let (page, more) = merge_pages(vec![a.clone(), b.clone()], 3, |s| s);
        assert_eq!((page, more), (vec!["01", "02", "03"], true));
        let (page, more) = merge_pages(vec![(vec!["01"], false), b], 3, |s| s);
        assert_eq!((page, more), (vec!["01", "02", "03"], false));
    }
}

//! The agents service: spawn, stop, look up, list and count agents, wherever they live. An
//! agent's id names its node; requests for a peer's agent go to that node's agents service.

mod local;

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::context::Context;
use super::listing::{merge_pages, Counted, Listing};
use crate::agent::{AgentView, SpawnAgentRequest};
use crate::cluster::remote::{envelope, Service};
use crate::error::ApiError;

envelope!(AgentsMsg);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AgentsRequest {
    Spawn { request: SpawnAgentRequest, key: String },
    Stop { id: String, key: Option<String> },
    Get(String),
    List { after: Option<String>, first: u32 },
    Count,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AgentsResponse {
    Agent(AgentView),
    Found(Option<AgentView>),
    Page(Vec<AgentView>, bool),
    Count(u64),
}

#[derive(Clone)]
pub struct Agents {
    pub(crate) ctx: Arc<Context>,
}

fn unexpected(what: &str) -> ApiError {
    ApiError::Internal(format!("a peer answered {what} with something else"))
}

impl Agents {
    /// Spawns an agent on this node, or on `request.node`.
    pub async fn spawn(&self, request: SpawnAgentRequest, key: Option<String>) -> Result<AgentView, ApiError> {
        request.validate()?;
        match request.node.clone().filter(|n| *n != self.ctx.node_name) {
            Some(node) => {
                let mut request = request;
                request.node = None;
                match self
                    .ctx
                    .forward::<Agents>(
                        &node,
                        |key| AgentsRequest::Spawn {
                            request: request.clone(),
                            key,
                        },
                        key,
                    )
                    .await?
                {
                    AgentsResponse::Agent(view) => Ok(view),
                    _ => Err(unexpected("spawnAgent")),
                }
            }
            None => self.spawn_local(request, key.as_deref()).await,
        }
    }

    /// Stops an agent for good; its running tasks go back to the queue.
    pub async fn stop(&self, id: &str, key: Option<String>) -> Result<AgentView, ApiError> {
        match self.ctx.peer_holding(id) {
            Some(node) => {
                let request = AgentsRequest::Stop { id: id.to_owned(), key };
                match self.ctx.cluster.call::<Agents>(node, &request).await? {
                    AgentsResponse::Agent(view) => Ok(view),
                    _ => Err(unexpected("stopAgent")),
                }
            }
            None => self.stop_local(id, key.as_deref()).await,
        }
    }

    /// An agent of this node or of the peer its id names.
    pub async fn get(&self, id: &str) -> Result<Option<AgentView>, ApiError> {
        match self.ctx.peer_holding(id) {
            Some(node) => match self
                .ctx
                .cluster
                .call::<Agents>(node, &AgentsRequest::Get(id.to_owned()))
                .await?
            {
                AgentsResponse::Found(view) => Ok(view),
                _ => Err(unexpected("agent")),
            },
            None => self.get_local(id).await,
        }
    }

    /// The cluster's agents in id order after the cursor: this node's and every reachable
    /// peer's.
    pub async fn list(&self, after: Option<String>, first: usize) -> Result<Listing<AgentView>, ApiError> {
        let mut pages = vec![self.list_local(after.clone(), first).await?];
        let request = AgentsRequest::List {
            after,
            first: first as u32,
        };
        let gathered = self.ctx.cluster.gather::<Agents>(&request).await;
        pages.extend(gathered.answers.into_iter().filter_map(|a| match a {
            AgentsResponse::Page(items, more) => Some((items, more)),
            _ => None,
        }));
        let (items, more) = merge_pages(pages, first, |a| a.spec.id.as_str());
        Ok(Listing {
            items,
            more,
            missing: gathered.missing,
        })
    }

    /// How many agents the cluster has.
    pub async fn count(&self) -> Result<Counted, ApiError> {
        let local = self.count_local().await?;
        let gathered = self.ctx.cluster.gather::<Agents>(&AgentsRequest::Count).await;
        let remote: u64 = gathered
            .answers
            .into_iter()
            .filter_map(|a| match a {
                AgentsResponse::Count(n) => Some(n),
                _ => None,
            })
            .sum();
        Ok(Counted {
            total: local + remote,
            missing: gathered.missing,
        })
    }
}

impl Service for Agents {
    const ROLE: &'static str = "agents";
    type Request = AgentsRequest;
    type Response = AgentsResponse;
    type Msg = AgentsMsg;

    fn node_name(&self) -> &str {
        &self.ctx.node_name
    }

    fn serve(&self, request: AgentsRequest) -> BoxFuture<'static, Result<AgentsResponse, ApiError>> {
        let agents = self.clone();
        Box::pin(async move {
            match request {
                // A peer's request is checked like a local one.
                AgentsRequest::Spawn { request, key } => {
                    request.validate()?;
                    agents.spawn_local(request, Some(&key)).await.map(AgentsResponse::Agent)
                }
                AgentsRequest::Stop { id, key } => {
                    agents.stop_local(&id, key.as_deref()).await.map(AgentsResponse::Agent)
                }
                AgentsRequest::Get(id) => agents.get_local(&id).await.map(AgentsResponse::Found),
                AgentsRequest::List { after, first } => {
                    let (items, more) = agents.list_local(after, first.min(1000) as usize).await?;
                    Ok(AgentsResponse::Page(items, more))
                }
                AgentsRequest::Count => agents.count_local().await.map(AgentsResponse::Count),
            }
        })
    }
}

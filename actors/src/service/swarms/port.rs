//! What the swarm room's [`crate::swarm::Port`] asks of this node's agents and tasks: the
//! agents service holds a swarm's members, the tasks service its subtasks.

use futures::future::BoxFuture;

use crate::agent::{AgentView, Owner, SpawnAgentRequest};
use crate::error::ApiError;
use crate::service::{AgentAction, Agents, Tasks};
use crate::swarm::{Members, Subtasks};
use crate::task::{GraphTask, SubmitTaskRequest, TaskRecord};

impl Members for Agents {
    fn of(&self, swarm: &str) -> BoxFuture<'_, Result<Vec<AgentView>, ApiError>> {
        let owner = Owner::Swarm(swarm.to_owned());
        Box::pin(async move { self.owned(&owner).await })
    }

    fn get<'a>(&'a self, agent: &'a str) -> BoxFuture<'a, Result<Option<AgentView>, ApiError>> {
        Box::pin(Agents::get(self, agent))
    }

    fn owner<'a>(&'a self, agent: &'a str) -> BoxFuture<'a, Result<Option<Owner>, ApiError>> {
        Box::pin(Agents::owner(self, agent))
    }

    fn start<'a>(&'a self, swarm: &'a str, req: SpawnAgentRequest) -> BoxFuture<'a, Result<AgentView, ApiError>> {
        Box::pin(self.create_local(req, Owner::Swarm(swarm.to_owned()), None))
    }

    fn remove<'a>(&'a self, agent: &'a str) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move { self.act_local(agent, AgentAction::Remove, None).await.map(drop) })
    }

    fn move_to<'a>(&'a self, agent: &'a str, owner: Owner, capability: &'a str) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(Agents::move_to(self, agent, owner, capability))
    }

    fn holder(&self, agent: &str) -> Option<String> {
        self.ctx.peer_holding(agent)
    }
}

impl Subtasks for Tasks {
    fn submit(&self, request: SubmitTaskRequest, key: String) -> BoxFuture<'_, Result<TaskRecord, ApiError>> {
        Box::pin(async move { Tasks::submit(self, request, Some(key)).await })
    }

    fn submit_graph(&self, graph: Vec<GraphTask>, key: String) -> BoxFuture<'_, Result<Vec<TaskRecord>, ApiError>> {
        Box::pin(async move { Tasks::submit_graph(self, graph, Some(key)).await })
    }

    fn get<'a>(&'a self, task: &'a str) -> BoxFuture<'a, Result<Option<TaskRecord>, ApiError>> {
        Box::pin(Tasks::get(self, task))
    }

    fn cancel<'a>(&'a self, task: &'a str) -> BoxFuture<'a, Result<TaskRecord, ApiError>> {
        Box::pin(Tasks::cancel(self, task, None))
    }
}

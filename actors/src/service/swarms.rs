//! The swarms service: create, scale, retopologise and destroy swarms, their memory and their
//! tasks. A swarm lives on one node, members and coordinator included (its id says which);
//! a request about a peer's swarm is sent to that peer's swarms service, and `swarms` lists
//! the whole cluster's.

use std::sync::Arc;

use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::Batch;
use troupe_runtime::supervision::SupervisorMsg;

use super::agents::{AgentAction, Agents};
use super::context::{ask, Context};
use super::Api;
use crate::agent::Owner;
use crate::error::ApiError;
use crate::swarm::memory;
use crate::swarm::{CoordinatorMsg, CreateSwarmRequest, Lead, SwarmSpec, SwarmStatus, SwarmTask, SwarmView, Topology};
use crate::tables::{SWARMS, SWARM_STATUS, SWARM_TASKS, SWARM_TEAMS};

/// Answers from the peer holding `$id` when it is one: the answer `$pat` gives `$out`.
macro_rules! on_peer {
    ($self:ident, $id:expr, $request:expr, $pat:pat => $out:expr) => {
        if let Some(node) = $self.ctx.peer_holding($id) {
            return match crate::cluster::remote::ask($self, &node, $request).await? {
                $pat => Ok($out),
                _ => Err(ApiError::Internal(format!(
                    "node {node} answered a swarms request with something else"
                ))),
            };
        }
    };
}

mod peer;
mod work;

pub use peer::{SwarmsRequest, SwarmsResponse};

#[derive(Clone)]
pub struct Swarms {
    pub(crate) ctx: Arc<Context>,
}

impl Swarms {
    /// Whether this node holds the swarm (or swarm task) with this id.
    pub fn holds(&self, id: &str) -> bool {
        self.ctx.holds(id)
    }

    /// Refuses an agent of a peer: a swarm's members live on its node.
    fn local(&self, agent: &str) -> Result<(), ApiError> {
        match self.ctx.peer_holding(agent) {
            Some(node) => Err(ApiError::invalid(format!(
                "agent {agent} lives on node {node}: a swarm's members live on the swarm's node"
            ))),
            None => Ok(()),
        }
    }

    fn agents(&self) -> Agents {
        Agents { ctx: self.ctx.clone() }
    }

    fn api(&self) -> Api {
        Api::from_context(self.ctx.clone())
    }

    /// Creates a swarm: adopts the agents named, starts its subtree, and answers once its
    /// coordinator has started the members its templates make.
    pub async fn create(&self, req: CreateSwarmRequest) -> Result<SwarmView, ApiError> {
        req.validate()?;
        let node = match &req.lead {
            // A sub-team runs where its parent does.
            Some(lead) => {
                let home = self
                    .ctx
                    .peer_holding(&lead.swarm)
                    .unwrap_or_else(|| self.ctx.node_name.clone());
                if let Some(asked) = req.node.as_deref().filter(|n| *n != home) {
                    return Err(ApiError::invalid(format!(
                        "a sub-team runs on its parent's node ({home}), not on {asked}"
                    )));
                }
                Some(home.to_owned())
            }
            None => req.node.clone(),
        }
        .filter(|n| *n != self.ctx.node_name);
        if let Some(node) = node {
            let mut req = req;
            req.node = None;
            let request = SwarmsRequest::Create(Box::new(req));
            return match crate::cluster::remote::ask(self, &node, request).await? {
                SwarmsResponse::Swarm(v) => Ok(*v),
                _ => Err(ApiError::Internal(format!(
                    "node {node} answered createSwarm with something else"
                ))),
            };
        }
        self.ctx.ensure_serving()?;
        let (min_agents, max_agents) = req.bounds();
        let made: u32 = req.templates.iter().map(|t| t.count).sum();
        let id = crate::ids::new_id(&self.ctx.node_name);
        let spec = SwarmSpec {
            id: id.clone(),
            name: req.name.clone(),
            node: self.ctx.node_name.clone(),
            topology: req.topology,
            templates: req.templates.iter().map(|t| t.agent.clone()).collect(),
            min_agents,
            max_agents,
            size: (made + req.members.len() as u32).max(min_agents),
            strategy: req.strategy,
            autoscale: req.autoscale,
            memory_limit_bytes: req
                .memory_limit_bytes
                .unwrap_or(crate::swarm::spec::DEFAULT_MEMORY_LIMIT),
            lead: req.lead.clone(),
            created_at: troupe_runtime::clock::now(),
        };
        if let Some(lead) = &req.lead {
            self.check_lead(lead).await?;
        }
        for member in &req.members {
            self.local(member)?;
            let view = self
                .api()
                .agents()
                .get(member)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("no agent {member} to adopt")))?;
            if view.spec.owner != Owner::Node {
                return Err(ApiError::Conflict(format!("agent {member} already belongs to a swarm")));
            }
        }
        let status = SwarmStatus::new(spec.topology);
        let mut data = json!({ "name": spec.name, "topology": spec.topology.as_str(), "size": spec.size });
        if let Some(lead) = &spec.lead {
            data["parent"] = json!(lead.swarm);
            data["leader"] = json!(lead.agent);
        }
        let mut batch = Batch::new()
            .put(SWARMS, id.clone(), troupe_runtime::codec::encode(&spec)?)
            .put(SWARM_STATUS, id.clone(), troupe_runtime::codec::encode(&status)?)
            .event(NewEvent::new("SWARM_CREATED", Some(id.clone()), data));
        if let Some(lead) = &spec.lead {
            batch = batch.put(
                SWARM_TEAMS,
                crate::swarm::team_key(lead, &id),
                lead.agent.as_bytes().to_vec(),
            );
        }
        self.ctx.store.write(batch).await?;
        for member in &req.members {
            self.agents()
                .move_to(member, Owner::Swarm(id.clone()), &spec.queue_capability())
                .await?;
        }
        let supervisor = self.parent_supervisor(&spec)?;
        let child = crate::swarm::swarm_child(&self.api(), id.clone());
        ask(
            &supervisor,
            |r| SupervisorMsg::StartChild(child, r),
            "the swarm's supervisor",
        )
        .await?
        .map_err(|e| ApiError::Internal(format!("swarm {id} did not start: {e}")))?;
        self.get(&id).await
    }

    /// A swarm of this node with its members.
    pub async fn get(&self, id: &str) -> Result<SwarmView, ApiError> {
        on_peer!(self, id, SwarmsRequest::Get(id.to_owned()), SwarmsResponse::Swarm(v) => *v);
        let spec = crate::swarm::load_spec(&self.ctx.store, id).await?;
        let status = crate::swarm::load_status(&self.ctx.store, id).await?;
        let members = self
            .api()
            .agents()
            .owned(&Owner::Swarm(id.to_owned()))
            .await?
            .into_iter()
            .map(|v| v.spec.id)
            .collect();
        let teams = crate::swarm::teams_of(&self.ctx.store, Some(id)).await?;
        Ok(SwarmView {
            spec,
            status,
            members,
            teams,
        })
    }

    /// The supervisor a swarm's subtree runs under: its parent swarm's for a sub-team, else
    /// the node's `swarms`.
    fn parent_supervisor(&self, spec: &SwarmSpec) -> Result<ractor::ActorRef<SupervisorMsg>, ApiError> {
        match &spec.lead {
            Some(lead) => {
                self.ctx.slots.swarm_supervisors.get(&lead.swarm).ok_or_else(|| {
                    ApiError::Unavailable(format!("the supervisor of swarm {} is not running", lead.swarm))
                })
            }
            None => self
                .ctx
                .slots
                .swarms
                .get()
                .ok_or_else(|| ApiError::Unavailable("the swarms supervisor is not running".into())),
        }
    }

    /// A sub-team's lead: its parent is a swarm of this node, not nested too deep, and its
    /// leader a member of it that leads no other team.
    async fn check_lead(&self, lead: &Lead) -> Result<(), ApiError> {
        let mut depth = 1;
        let mut above = Some(lead.swarm.clone());
        while let Some(swarm) = above {
            depth += 1;
            above = crate::swarm::load_spec(&self.ctx.store, &swarm)
                .await
                .map_err(|_| ApiError::NotFound(format!("no swarm {swarm} to be the parent")))?
                .lead
                .map(|l| l.swarm);
        }
        if depth > crate::swarm::spec::MAX_DEPTH {
            return Err(ApiError::invalid(format!(
                "sub-teams nest at most {} deep",
                crate::swarm::spec::MAX_DEPTH
            )));
        }
        if self.owner_of(&lead.agent).await? != Owner::Swarm(lead.swarm.clone()) {
            return Err(ApiError::invalid(format!(
                "the leader {} is not a member of swarm {}",
                lead.agent, lead.swarm
            )));
        }
        if let Some(team) = self.led_by(&lead.agent).await? {
            return Err(ApiError::Conflict(format!(
                "agent {} already leads team {team}",
                lead.agent
            )));
        }
        Ok(())
    }

    /// The team `agent` leads, if any.
    async fn led_by(&self, agent: &str) -> Result<Option<String>, ApiError> {
        let teams = crate::swarm::teams(&self.ctx.store, None).await?;
        Ok(teams
            .into_iter()
            .find(|(_, _, leader)| leader == agent)
            .map(|(_, team, _)| team))
    }

    /// The cluster's swarms (of the nodes that answer), sub-teams included, in id order.
    pub async fn list(&self) -> Result<Vec<SwarmView>, ApiError> {
        let mut all = self.list_local().await?;
        let gathered = self.ctx.cluster.gather::<Swarms>(&SwarmsRequest::List).await;
        for answer in gathered.answers {
            if let SwarmsResponse::Swarms(theirs) = answer {
                all.extend(theirs);
            }
        }
        all.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
        Ok(all)
    }

    async fn list_local(&self) -> Result<Vec<SwarmView>, ApiError> {
        let ids = crate::swarm::ids(&self.ctx.store).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.get(&id).await?);
        }
        Ok(out)
    }

    fn coordinator(&self, id: &str) -> Result<ractor::ActorRef<CoordinatorMsg>, ApiError> {
        self.ctx
            .slots
            .coordinators
            .get(id)
            .filter(|c| c.get_status() == ractor::ActorStatus::Running)
            .ok_or_else(|| ApiError::Unavailable(format!("the coordinator of swarm {id} is not running")))
    }

    /// Sets the swarm's size (within its bounds) and waits for its coordinator to reach it.
    pub async fn scale(&self, id: &str, size: u32, reason: &str) -> Result<SwarmView, ApiError> {
        let request = SwarmsRequest::Scale {
            id: id.to_owned(),
            size,
            reason: reason.to_owned(),
        };
        on_peer!(self, id, request, SwarmsResponse::Swarm(v) => *v);
        let spec = crate::swarm::load_spec(&self.ctx.store, id).await?;
        if size < spec.min_agents || size > spec.max_agents {
            return Err(ApiError::invalid(format!(
                "swarm {} takes {} to {} members, not {size}",
                spec.name, spec.min_agents, spec.max_agents
            )));
        }
        if size > spec.size && spec.templates.is_empty() {
            return Err(ApiError::invalid("a swarm without templates cannot grow"));
        }
        self.resize(&spec, size, reason).await?;
        let coordinator = self.coordinator(id)?;
        ask(&coordinator, CoordinatorMsg::Reconcile, "the swarm's coordinator").await??;
        self.get(id).await
    }

    pub async fn set_topology(&self, id: &str, topology: Topology) -> Result<SwarmView, ApiError> {
        let request = SwarmsRequest::SetTopology {
            id: id.to_owned(),
            topology,
        };
        on_peer!(self, id, request, SwarmsResponse::Swarm(v) => *v);
        let mut spec = crate::swarm::load_spec(&self.ctx.store, id).await?;
        let mut status = crate::swarm::load_status(&self.ctx.store, id).await?;
        let from = spec.topology;
        spec.topology = topology;
        status.active = match topology {
            Topology::Adaptive => status.active,
            t => t,
        };
        let data = json!({ "from": from.as_str(), "to": topology.as_str(), "reason": "setTopology" });
        let batch = Batch::new()
            .put(SWARMS, id.to_owned(), troupe_runtime::codec::encode(&spec)?)
            .put(SWARM_STATUS, id.to_owned(), troupe_runtime::codec::encode(&status)?)
            .event(NewEvent::new("SWARM_TOPOLOGY_CHANGED", Some(id.to_owned()), data));
        self.ctx.store.write(batch).await?;
        self.get(id).await
    }

    /// Stops the swarm's whole subtree (its members' processes end with their agents), then
    /// removes the swarm, its members, its memory and its tasks' records.
    pub async fn destroy(&self, id: &str) -> Result<SwarmView, ApiError> {
        on_peer!(self, id, SwarmsRequest::Destroy(id.to_owned()), SwarmsResponse::Swarm(v) => *v);
        let view = self.get(id).await?;
        // Its sub-teams go first, each the same way.
        for team in &view.teams {
            Box::pin(self.destroy(team)).await?;
        }
        let supervisor = self.parent_supervisor(&view.spec)?;
        ask(
            &supervisor,
            |r| SupervisorMsg::TerminateChild(id.to_owned(), r),
            "the swarm's supervisor",
        )
        .await?;
        self.ctx.slots.members.remove(id);
        self.ctx.slots.coordinators.remove(id);
        self.ctx.slots.swarm_supervisors.remove(id);
        self.ctx.store.flush().await?;
        let (tasks, open_subtasks): (Vec<String>, Vec<String>) = {
            let swarm = id.to_owned();
            self.ctx
                .store
                .view(move |v| {
                    let (mut out, mut open) = (Vec::new(), Vec::new());
                    v.scan(SWARM_TASKS, None, |tid, bytes| {
                        let t: SwarmTask = troupe_runtime::codec::decode(bytes)?;
                        if t.swarm == swarm {
                            out.push(tid.to_owned());
                            if t.finished_at.is_none() {
                                open.extend(t.subtasks.iter().cloned());
                                open.extend(t.handouts.values().flat_map(|h| h.tasks.iter().cloned()));
                            }
                        }
                        Ok(true)
                    })?;
                    open.sort();
                    open.dedup();
                    Ok((out, open))
                })
                .await?
        };
        // The work its unfinished tasks handed out goes with it: a MESH subtask waits in the
        // shared queue for a capability no agent will have, counting against the open-task
        // bound for ever. Cancelled before the members go, so none of it is requeued.
        let tasks_service = self.api().tasks().clone();
        for subtask in &open_subtasks {
            match tasks_service.cancel(subtask, None).await {
                Ok(_) | Err(ApiError::NotFound(_) | ApiError::Conflict(_)) => {}
                Err(e) => {
                    tracing::warn!(swarm = %id, task = %subtask, error = %e, "could not cancel a swarm's subtask")
                }
            }
        }
        for member in &view.members {
            self.agents().act_local(member, AgentAction::Remove, None).await?;
        }
        let mut batch = Batch::new()
            .delete(SWARMS, id.to_owned())
            .delete(SWARM_STATUS, id.to_owned())
            .event(NewEvent::new(
                "SWARM_DESTROYED",
                Some(id.to_owned()),
                json!({ "name": view.spec.name, "members": view.members.len() }),
            ));
        for t in tasks {
            batch = batch.delete(SWARM_TASKS, t);
        }
        if let Some(lead) = &view.spec.lead {
            batch = batch.delete(SWARM_TEAMS, crate::swarm::team_key(lead, id));
        }
        let batch = memory::delete_all(&self.ctx.store, id, batch).await?;
        self.ctx.store.write(batch).await?;
        Ok(view)
    }

    /// Fails the swarm's coordinator (an injected fault: `--fault-injection` only).
    pub async fn crash_coordinator(&self, id: &str) -> Result<(), ApiError> {
        on_peer!(self, id, SwarmsRequest::CrashCoordinator(id.to_owned()), SwarmsResponse::Done => ());
        if !self.ctx.fleet.settings.fault_injection {
            return Err(ApiError::Forbidden(
                "fault injection is disabled on this node; start it with --fault-injection".into(),
            ));
        }
        let coordinator = self.coordinator(id)?;
        ask(&coordinator, CoordinatorMsg::Crash, "the swarm's coordinator").await
    }

    /// Makes an agent of this node a member; the swarm's size grows by one.
    pub async fn adopt(&self, id: &str, agent: &str) -> Result<SwarmView, ApiError> {
        let request = SwarmsRequest::Adopt {
            id: id.to_owned(),
            agent: agent.to_owned(),
        };
        on_peer!(self, id, request, SwarmsResponse::Swarm(v) => *v);
        let spec = crate::swarm::load_spec(&self.ctx.store, id).await?;
        self.adoptable(agent).await?;
        if spec.size >= spec.max_agents {
            return Err(ApiError::Conflict(format!(
                "swarm {} is at maxAgents ({})",
                spec.name, spec.max_agents
            )));
        }
        self.resize(&spec, spec.size + 1, &format!("adopted agent {agent}"))
            .await?;
        self.agents()
            .move_to(agent, Owner::Swarm(id.to_owned()), &spec.queue_capability())
            .await?;
        self.get(id).await
    }

    /// Gives a member back to the node; the swarm's size shrinks by one.
    pub async fn release(&self, id: &str, agent: &str) -> Result<SwarmView, ApiError> {
        let request = SwarmsRequest::Release {
            id: id.to_owned(),
            agent: agent.to_owned(),
        };
        on_peer!(self, id, request, SwarmsResponse::Swarm(v) => *v);
        let spec = crate::swarm::load_spec(&self.ctx.store, id).await?;
        if self.owner_of(agent).await? != Owner::Swarm(id.to_owned()) {
            return Err(ApiError::Conflict(format!(
                "agent {agent} is not a member of swarm {id}"
            )));
        }
        if spec.size <= spec.min_agents {
            return Err(ApiError::Conflict(format!(
                "swarm {} is at minAgents ({})",
                spec.name, spec.min_agents
            )));
        }
        self.resize(&spec, spec.size - 1, &format!("released agent {agent}"))
            .await?;
        self.agents()
            .move_to(agent, Owner::Node, &spec.queue_capability())
            .await?;
        self.get(id).await
    }

    async fn owner_of(&self, agent: &str) -> Result<Owner, ApiError> {
        self.local(agent)?;
        let view = self.agents().get(agent).await?;
        Ok(view
            .ok_or_else(|| ApiError::NotFound(format!("no agent {agent}")))?
            .spec
            .owner)
    }

    /// Refuses an agent that is not this node's own.
    async fn adoptable(&self, agent: &str) -> Result<(), ApiError> {
        if self.owner_of(agent).await? != Owner::Node {
            return Err(ApiError::Conflict(format!("agent {agent} already belongs to a swarm")));
        }
        Ok(())
    }

    async fn resize(&self, spec: &SwarmSpec, size: u32, reason: &str) -> Result<(), ApiError> {
        let mut spec = spec.clone();
        let from = spec.size;
        spec.size = size;
        let data = json!({ "from": from, "to": size, "reason": reason });
        let batch = Batch::new()
            .put(SWARMS, spec.id.clone(), troupe_runtime::codec::encode(&spec)?)
            .event(NewEvent::new("SWARM_SCALED", Some(spec.id.clone()), data));
        self.ctx.store.write(batch).await?;
        Ok(())
    }
}

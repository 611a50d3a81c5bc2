//! Creating a swarm on this node: its records, the agents it adopts, its subtree; and
//! undoing all of it when the subtree does not start (a member that cannot start), so a
//! failed `createSwarm` leaves nothing behind.

use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::Batch;
use troupe_runtime::supervision::SupervisorMsg;

use super::{CreateSwarmRequest, Lead, Port, StartFailure, SwarmSpec, SwarmStatus, SwarmView};
use crate::agent::Owner;
use crate::call::ask;
use crate::error::ApiError;
use crate::tables::{SWARMS, SWARM_STATUS, SWARM_TEAMS};

impl Port {
    /// Creates a swarm here (the request is checked and on its node): adopts the agents
    /// named, starts its subtree, and answers once its coordinator has started the members
    /// its templates make.
    pub(crate) async fn create(&self, req: CreateSwarmRequest) -> Result<SwarmView, ApiError> {
        self.serving.ensure()?;
        let (min_agents, max_agents) = req.bounds();
        let made: u32 = req.templates.iter().map(|t| t.count).sum();
        let id = crate::ids::new_id(&self.node);
        let spec = SwarmSpec {
            id: id.clone(),
            name: req.name.clone(),
            node: self.node.clone(),
            topology: req.topology,
            templates: req.templates.iter().map(|t| t.agent.clone()).collect(),
            min_agents,
            max_agents,
            size: (made + req.members.len() as u32).max(min_agents),
            strategy: req.strategy,
            autoscale: req.autoscale,
            memory_limit_bytes: req.memory_limit_bytes.unwrap_or(super::spec::DEFAULT_MEMORY_LIMIT),
            lead: req.lead.clone(),
            created_at: troupe_runtime::clock::now(),
            budget: req.budget,
        };
        if let Some(lead) = &req.lead {
            self.check_lead(lead).await?;
        }
        for member in &req.members {
            self.local(member)?;
            let view = self
                .members
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
            batch = batch.put(SWARM_TEAMS, super::team_key(lead, &id), lead.agent.as_bytes().to_vec());
        }
        self.store.write(batch).await?;
        if let Err(why) = self.start(&spec, &req.members).await {
            self.undo_create(&spec, &req.members, &why).await;
            return Err(why);
        }
        self.view(&id).await
    }

    /// Adopts the agents named and starts the swarm's subtree; when it does not start, the
    /// error of what failed (a member's own error when one could not start).
    async fn start(&self, spec: &SwarmSpec, adopt: &[String]) -> Result<(), ApiError> {
        for member in adopt {
            self.members
                .move_to(member, Owner::Swarm(spec.id.clone()), &spec.queue_capability())
                .await?;
        }
        let supervisor = self.parent_supervisor(spec)?;
        let failure = StartFailure::default();
        let child = super::swarm_child(self, spec.id.clone(), failure.clone());
        ask(
            &supervisor,
            |r| SupervisorMsg::StartChild(child, r),
            "the swarm's supervisor",
        )
        .await?
        .map_err(|e| {
            failure
                .take()
                .unwrap_or_else(|| ApiError::Unavailable(format!("swarm {} did not start: {e}", spec.id)))
        })
    }

    /// Takes back what a create that failed did, so it leaves nothing behind: stops what
    /// still runs of the subtree, gives the adopted agents back to the node, removes the
    /// members its templates made and the swarm's records. A step that fails is logged and
    /// the others go on: the caller gets the create's own error either way.
    async fn undo_create(&self, spec: &SwarmSpec, adopted: &[String], why: &ApiError) {
        let id = spec.id.as_str();
        if let Ok(supervisor) = self.parent_supervisor(spec) {
            let stop = |r| SupervisorMsg::TerminateChild(id.to_owned(), r);
            if let Err(e) = ask(&supervisor, stop, "the swarm's supervisor").await {
                tracing::warn!(swarm = %id, error = %e, "a swarm that did not start was not stopped");
            }
        }
        self.forget_actors(id);
        let members = self.members.of(id).await;
        for member in members.unwrap_or_default() {
            let agent = member.spec.id.as_str();
            let undone = match adopted.iter().any(|a| a == agent) {
                true => {
                    let queue = spec.queue_capability();
                    self.members.move_to(agent, Owner::Node, &queue).await
                }
                false => self.members.remove(agent).await,
            };
            if let Err(e) = undone {
                tracing::warn!(swarm = %id, agent = %agent, error = %e, "a member of a swarm that did not start was left");
            }
        }
        let data = json!({ "name": spec.name, "members": 0, "reason": format!("did not start: {why}") });
        let mut batch = Batch::new()
            .delete(SWARMS, id.to_owned())
            .delete(SWARM_STATUS, id.to_owned())
            .event(NewEvent::new("SWARM_DESTROYED", Some(id.to_owned()), data));
        if let Some(lead) = &spec.lead {
            batch = batch.delete(SWARM_TEAMS, super::team_key(lead, id));
        }
        if let Err(e) = self.store.write(batch).await {
            tracing::warn!(swarm = %id, error = %e, "the records of a swarm that did not start were left");
        }
    }

    /// A sub-team's lead: its parent is a swarm of this node, not nested too deep, and its
    /// leader a member of it that leads no other team.
    async fn check_lead(&self, lead: &Lead) -> Result<(), ApiError> {
        let mut depth = 1;
        let mut above = Some(lead.swarm.clone());
        while let Some(swarm) = above {
            depth += 1;
            above = super::load_spec(&self.store, &swarm)
                .await
                .map_err(|_| ApiError::NotFound(format!("no swarm {swarm} to be the parent")))?
                .lead
                .map(|l| l.swarm);
        }
        if depth > super::spec::MAX_DEPTH {
            return Err(ApiError::invalid(format!(
                "sub-teams nest at most {} deep",
                super::spec::MAX_DEPTH
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
}

impl Port {
    /// Starts here a swarm the cluster moved to this node (its node was lost): its
    /// subtree, members and teams included, from the replicated store, as a restart would.
    pub(crate) async fn take_over(&self, id: &str) -> Result<(), ApiError> {
        if self.slots.swarm_supervisors.get(id).is_some() {
            return Ok(());
        }
        let bytes = self
            .store
            .get(SWARMS, id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("swarm {id} is not stored")))?;
        let spec: SwarmSpec = troupe_runtime::codec::decode(&bytes)?;
        let supervisor = self.parent_supervisor(&spec)?;
        let failure = StartFailure::default();
        let child = super::swarm_child(self, id.to_owned(), failure.clone());
        ask(
            &supervisor,
            |r| SupervisorMsg::StartChild(child, r),
            "the swarms supervisor",
        )
        .await?
        .map_err(|e| {
            failure
                .take()
                .unwrap_or_else(|| ApiError::Unavailable(format!("swarm {id} did not start: {e}")))
        })
    }
}

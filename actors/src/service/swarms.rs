//! The swarms service: create, scale, retopologise and destroy swarms, their memory and their
//! tasks. A swarm lives on the node that created it (its id says which); requests for a
//! peer's swarm are refused with UNAVAILABLE naming that node, to be sent there.

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
use crate::swarm::memory::{self, Entry, Write};
use crate::swarm::{
    CoordinatorMsg, CreateSwarmRequest, Lead, SwarmSpec, SwarmStatus, SwarmTask, SwarmTaskMode, SwarmTaskState,
    SwarmView, Topology,
};
use crate::tables::{SWARMS, SWARM_STATUS, SWARM_TASKS};

#[derive(Clone)]
pub struct Swarms {
    pub(crate) ctx: Arc<Context>,
}

impl Swarms {
    fn local(&self, id: &str) -> Result<(), ApiError> {
        match self.ctx.peer_holding(id) {
            Some(node) => Err(ApiError::Unavailable(format!(
                "swarm {id} lives on node {node}: send this request to that node"
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
        self.ctx.ensure_serving()?;
        req.validate()?;
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
        let batch = Batch::new()
            .put(SWARMS, id.clone(), troupe_runtime::codec::encode(&spec)?)
            .put(SWARM_STATUS, id.clone(), troupe_runtime::codec::encode(&status)?)
            .event(NewEvent::new("SWARM_CREATED", Some(id.clone()), data));
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
        self.local(id)?;
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
        self.local(&lead.swarm)?;
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
        let agent = agent.to_owned();
        Ok(self
            .ctx
            .store
            .view(move |v| {
                let mut led = None;
                v.scan(SWARMS, None, |id, bytes| {
                    let spec: SwarmSpec = troupe_runtime::codec::decode(bytes)?;
                    if spec.lead.is_some_and(|l| l.agent == agent) {
                        led = Some(id.to_owned());
                    }
                    Ok(led.is_none())
                })?;
                Ok(led)
            })
            .await?)
    }

    /// This node's swarms, sub-teams included, in id order.
    pub async fn list(&self) -> Result<Vec<SwarmView>, ApiError> {
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
        self.local(id)?;
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
        self.local(id)?;
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
        self.local(id)?;
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
        for member in &view.members {
            self.agents().act_local(member, AgentAction::Remove, None).await?;
        }
        let tasks: Vec<String> = {
            let swarm = id.to_owned();
            self.ctx
                .store
                .view(move |v| {
                    let mut out = Vec::new();
                    v.scan(SWARM_TASKS, None, |tid, bytes| {
                        let t: SwarmTask = troupe_runtime::codec::decode(bytes)?;
                        if t.swarm == swarm {
                            out.push(tid.to_owned());
                        }
                        Ok(true)
                    })?;
                    Ok(out)
                })
                .await?
        };
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
        let batch = memory::delete_all(&self.ctx.store, id, batch).await?;
        self.ctx.store.write(batch).await?;
        Ok(view)
    }

    /// Fails the swarm's coordinator (an injected fault: `--fault-injection` only).
    pub async fn crash_coordinator(&self, id: &str) -> Result<(), ApiError> {
        if !self.ctx.fleet.settings.fault_injection {
            return Err(ApiError::Forbidden(
                "fault injection is disabled on this node; start it with --fault-injection".into(),
            ));
        }
        self.local(id)?;
        let coordinator = self.coordinator(id)?;
        ask(&coordinator, CoordinatorMsg::Crash, "the swarm's coordinator").await
    }

    // Memory.

    async fn limit(&self, id: &str) -> Result<u64, ApiError> {
        Ok(crate::swarm::load_spec(&self.ctx.store, id).await?.memory_limit_bytes)
    }

    pub async fn memory_get(&self, id: &str, key: &str) -> Result<Option<Entry>, ApiError> {
        self.local(id)?;
        self.limit(id).await?;
        memory::get(&self.ctx.store, id, key).await
    }

    pub async fn memory_list(&self, id: &str, prefix: &str, first: usize) -> Result<Vec<Entry>, ApiError> {
        self.local(id)?;
        self.limit(id).await?;
        memory::list(&self.ctx.store, id, prefix, first).await
    }

    /// Sets or deletes a key, if its version is `expect` (when given: 0 for a key that must
    /// not exist yet).
    pub async fn memory_write(
        &self,
        id: &str,
        key: &str,
        write: Write,
        expect: Option<u64>,
    ) -> Result<Option<Entry>, ApiError> {
        self.local(id)?;
        let limit = self.limit(id).await?;
        if let Write::Set { value, .. } = &write {
            let size = value.to_string().len();
            if size > self.ctx.max_payload_bytes {
                return Err(ApiError::invalid(format!(
                    "value is {size} bytes, above the payload limit"
                )));
            }
        }
        let lock = self.ctx.swarm_locks.of(id);
        let _one_writer = lock.lock().await;
        memory::write(&self.ctx.store, id, key, write, expect, limit).await
    }

    /// A member's read or write of its own swarm's memory.
    pub async fn agent_memory(&self, agent: &str, op: memory::Op) -> Result<serde_json::Value, ApiError> {
        let owner = self.owner_of(agent).await?;
        let swarm = owner
            .swarm()
            .ok_or_else(|| ApiError::invalid(format!("agent {agent} is not a member of a swarm")))?;
        Ok(match op {
            memory::Op::Get { key } => self
                .memory_get(swarm, &key)
                .await?
                .map_or(serde_json::Value::Null, |e| e.to_json()),
            memory::Op::List { prefix } => {
                let entries = self.memory_list(swarm, &prefix, 1000).await?;
                serde_json::Value::Array(entries.iter().map(Entry::to_json).collect())
            }
            memory::Op::Write { key, write, expect } => self
                .memory_write(swarm, &key, write, expect)
                .await?
                .map_or(serde_json::Value::Null, |e| e.to_json()),
        })
    }

    // Tasks.

    /// Records a swarm task and hands it to the coordinator; answers it RUNNING.
    pub async fn submit_task(&self, id: &str, mode: SwarmTaskMode) -> Result<SwarmTask, ApiError> {
        self.local(id)?;
        self.ctx.ensure_serving()?;
        mode.validate()?;
        crate::swarm::load_spec(&self.ctx.store, id).await?;
        let task = SwarmTask {
            id: crate::ids::new_id(&self.ctx.node_name),
            swarm: id.to_owned(),
            state: SwarmTaskState::Running,
            topology: None,
            subtasks: Vec::new(),
            result: None,
            error: None,
            created_at: troupe_runtime::clock::now(),
            finished_at: None,
            mode,
        };
        let data = json!({ "task": task.id, "mode": task.mode.name() });
        let batch = Batch::new()
            .put(SWARM_TASKS, task.id.clone(), troupe_runtime::codec::encode(&task)?)
            .event(NewEvent::new("SWARM_TASK_SUBMITTED", Some(id.to_owned()), data));
        self.ctx.store.write(batch).await?;
        // A coordinator not running now takes it up at its next start.
        if let Ok(c) = self.coordinator(id) {
            let _ = c.cast(CoordinatorMsg::Conduct(task.id.clone()));
        }
        Ok(task)
    }

    /// A leader's swarm task for the team it leads: submitted, then waited on for at most
    /// `timeout`; its result.
    pub async fn lead_task(
        &self,
        agent: &str,
        mode: SwarmTaskMode,
        timeout: std::time::Duration,
    ) -> Result<serde_json::Value, ApiError> {
        let team = self
            .led_by(agent)
            .await?
            .ok_or_else(|| ApiError::invalid(format!("agent {agent} leads no team")))?;
        let task = self.submit_task(&team, mode).await?;
        let ended = crate::swarm::wait_end(&self.api(), &task.id, timeout).await?;
        match ended.state {
            SwarmTaskState::Succeeded => Ok(ended.result.unwrap_or(serde_json::Value::Null)),
            _ => Err(ApiError::Conflict(format!(
                "team {team}'s task {} failed: {}",
                ended.id,
                ended.error.as_deref().unwrap_or("no error given")
            ))),
        }
    }

    pub async fn task(&self, task: &str) -> Result<Option<SwarmTask>, ApiError> {
        self.local(task)?;
        match self.ctx.store.get(SWARM_TASKS, task).await? {
            Some(b) => Ok(Some(troupe_runtime::codec::decode(&b)?)),
            None => Ok(None),
        }
    }

    /// The swarm's tasks, newest first, at most `first`.
    pub async fn tasks(&self, id: &str, first: usize) -> Result<Vec<SwarmTask>, ApiError> {
        self.local(id)?;
        let swarm = id.to_owned();
        let mut all: Vec<SwarmTask> = self
            .ctx
            .store
            .view(move |v| {
                let mut out = Vec::new();
                v.scan(SWARM_TASKS, None, |_, bytes| {
                    let t: SwarmTask = troupe_runtime::codec::decode(bytes)?;
                    if t.swarm == swarm {
                        out.push(t);
                    }
                    Ok(true)
                })?;
                Ok(out)
            })
            .await?;
        all.reverse();
        all.truncate(first);
        Ok(all)
    }

    /// Tasks running on the swarm's members, and their slots.
    pub async fn queue(&self, id: &str) -> Result<(u32, u32), ApiError> {
        self.local(id)?;
        let members = self.agents().owned(&Owner::Swarm(id.to_owned())).await?;
        let running: u32 = members.iter().map(|m| m.stats.running).sum();
        let slots: u32 = members.iter().map(|m| m.spec.max_concurrent_tasks).sum();
        Ok((running, slots))
    }

    /// Makes an agent of this node a member; the swarm's size grows by one.
    pub async fn adopt(&self, id: &str, agent: &str) -> Result<SwarmView, ApiError> {
        self.local(id)?;
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
        self.local(id)?;
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

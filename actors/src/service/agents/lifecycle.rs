//! The agents service acting on this node's agents: start, stop (graceful or not), pause,
//! resume, restart, remove, update, checkpoint and roll back. Each change of wish is durable
//! before it is carried out; each change of state is recorded by the agent's handle.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::Batch;
use troupe_runtime::supervision::{ChildSpec, SupervisorMsg};

use super::{AgentAction, AgentLive, Agents};
use crate::agent::checkpoints::{self, Checkpoint};
use crate::agent::{gauge_moved, AgentChild, AgentMsg, AgentSpec, AgentState, AgentView, Desired, Owner, Restore};
use crate::error::ApiError;
use crate::scheduler::SchedulerMsg;
use crate::service::context::{ask, ask_within, keep, split, CALL_TIMEOUT};
use crate::tables::{AGENTS, AGENT_STATS, AGENT_STATUS};

/// How often a graceful stop looks whether the agent's tasks are done.
const DRAIN_POLL: Duration = Duration::from_millis(20);

impl Agents {
    pub(crate) async fn act_local(
        &self,
        id: &str,
        action: AgentAction,
        key: Option<&str>,
    ) -> Result<AgentView, ApiError> {
        if !matches!(
            action,
            AgentAction::Stop { .. } | AgentAction::Pause | AgentAction::Remove
        ) {
            self.ctx.ensure_serving()?;
        }
        let guard = match split(self.ctx.claim(action.name(), key, &(id, &action)).await?) {
            Ok(guard) => guard,
            Err(id) => return self.found(&id).await,
        };
        let handle = self.handle(id).await?;
        let _one_at_a_time = handle.serialize().await;
        if matches!(action, AgentAction::Start | AgentAction::Restart) {
            // Before anything is stopped or changed: a program that is not there is refused.
            crate::agent::preflight(&handle.spec().backend)
                .await
                .map_err(ApiError::InvalidInput)?;
        }
        match action {
            AgentAction::Start => self.start(&handle).await?,
            AgentAction::Stop { graceful } => self.stop_agent(&handle, graceful).await?,
            AgentAction::Pause => self.pause(&handle, true).await?,
            AgentAction::Resume => self.pause(&handle, false).await?,
            AgentAction::Restart => {
                if self.supervised(&handle).await? {
                    self.terminate(&handle).await?;
                }
                self.set_desired(&handle, Desired::Running).await?;
                self.launch(&handle).await?;
            }
            AgentAction::Remove => {
                let view = self.remove(&handle).await?;
                keep(&self.ctx.store, guard, id).await?;
                return Ok(view);
            }
            AgentAction::Update(update) => {
                let spec = update.apply(&handle.spec())?;
                self.ctx.agent_policy.secrets.check(&spec.backend).await?;
                self.write_spec(&spec, "AGENT_UPDATED", json!({ "appliesAt": "next start" }))
                    .await?;
                handle.set_spec(spec);
            }
            AgentAction::Rollback { checkpoint } => self.rollback(&handle, &checkpoint).await?,
        }
        self.ctx.store.flush().await?;
        keep(&self.ctx.store, guard, id).await?;
        self.found(id).await
    }

    pub(crate) async fn checkpoint_local(
        &self,
        id: &str,
        description: String,
        key: Option<&str>,
    ) -> Result<Checkpoint, ApiError> {
        let guard = match split(self.ctx.claim("checkpointAgent", key, &(id, &description)).await?) {
            Ok(guard) => guard,
            Err(done) => {
                return checkpoints::load(&self.ctx.store, id, &done)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(format!("checkpoint {done} was since dropped")))
            }
        };
        let handle = self.handle(id).await?;
        let _one_at_a_time = handle.serialize().await;
        let actor = running(&handle)?;
        let state = ask(&actor, AgentMsg::Checkpoint, "the agent").await?.map_err(|e| {
            ApiError::invalid(format!(
                "agent {id} ({}) cannot checkpoint: {e}",
                handle.spec().backend.describe()
            ))
        })?;
        let size_bytes = state.to_string().len() as u64;
        let checkpoint = Checkpoint {
            id: crate::ids::new_id(&self.ctx.node_name),
            agent_id: id.to_owned(),
            created_at: troupe_runtime::clock::now(),
            description,
            state,
            size_bytes,
        };
        let data =
            json!({ "checkpointId": checkpoint.id, "description": checkpoint.description, "sizeBytes": size_bytes });
        let event = NewEvent::new("AGENT_CHECKPOINTED", Some(id.to_owned()), data);
        checkpoints::save(
            &self.ctx.store,
            &checkpoint,
            self.ctx.agent_policy.checkpoints_kept,
            event,
        )
        .await?;
        handle.set_latest_checkpoint(Some(checkpoint.id.clone()));
        keep(&self.ctx.store, guard, &checkpoint.id).await?;
        Ok(checkpoint)
    }

    pub(crate) async fn live_local(&self, id: &str) -> Result<Option<AgentLive>, ApiError> {
        let Some(actor) = self.ctx.slots.handles.get(id).and_then(|h| h.actor()) else {
            return Ok(None);
        };
        Ok(Some(AgentLive::from_probe(
            ask(&actor, AgentMsg::Probe, "the agent").await?,
        )))
    }

    /// The agent's handle on this node, made from the store when nobody runs it now.
    async fn handle(&self, id: &str) -> Result<Arc<AgentChild>, ApiError> {
        if let Some(handle) = self.ctx.slots.handles.get(id) {
            return Ok(handle);
        }
        let (spec, status) = self.read(id).await?.ok_or_else(|| not_found(id))?;
        let handle = Arc::new(AgentChild::new(
            spec,
            status,
            self.ctx.slots.clone(),
            self.ctx.store.clone(),
            self.ctx.agent_policy.clone(),
        ));
        let latest = {
            let id = id.to_owned();
            self.ctx.store.view(move |v| checkpoints::latest_in(v, &id)).await?
        };
        handle.set_latest_checkpoint(latest);
        // Another request may have made one meanwhile: all of them use the same.
        Ok(self.ctx.slots.handles.get_or_insert(handle))
    }

    async fn found(&self, id: &str) -> Result<AgentView, ApiError> {
        self.get_local(id).await?.ok_or_else(|| not_found(id))
    }

    async fn start(&self, handle: &Arc<AgentChild>) -> Result<(), ApiError> {
        if self.supervised(handle).await? {
            return Err(ApiError::Conflict(format!("agent {} is already running", handle.id())));
        }
        self.set_desired(handle, Desired::Running).await?;
        self.launch(handle).await
    }

    /// Puts the agent under its supervisor, which starts it.
    async fn launch(&self, handle: &Arc<AgentChild>) -> Result<(), ApiError> {
        handle.report(AgentState::Starting, "AGENT_STARTING", None, json!({}));
        let supervisor = self.ctx.supervisor_of(&handle.spec().owner)?;
        let child: Arc<dyn ChildSpec> = handle.clone();
        // Answered once the start is over: as long as the agent's own start may take.
        let limit = child.start_timeout() + CALL_TIMEOUT;
        ask_within(
            &supervisor,
            |r| SupervisorMsg::StartChild(child, r),
            "the agents supervisor",
            limit,
        )
        .await?
        .map_err(|e| super::local::did_not_start(handle.id(), &e))
    }

    async fn stop_agent(&self, handle: &Arc<AgentChild>, graceful: bool) -> Result<(), ApiError> {
        let id = handle.id().to_owned();
        let supervised = self.supervised(handle).await?;
        if !supervised && matches!(handle.status().state, AgentState::Stopped | AgentState::Defined) {
            return Err(ApiError::Conflict(format!("agent {id} is already stopped")));
        }
        // The wish first, durably: a crash from here on does not bring the agent back.
        self.set_desired(handle, Desired::Stopped).await?;
        if !supervised {
            // Not under supervision (given up on, FAILED): the stop is recorded here.
            handle
                .report(AgentState::Stopped, "AGENT_STOPPED", None, json!({}))
                .durable()
                .await?;
            return Ok(());
        }
        if let (true, Some(actor)) = (graceful, handle.actor()) {
            handle.report(
                AgentState::Stopping,
                "AGENT_STOPPING",
                None,
                json!({ "graceful": true }),
            );
            self.drain(&id, &actor).await?;
        }
        self.terminate(handle).await
    }

    /// Closes the agent to new tasks (continuing a paused one, whose tasks could not finish
    /// otherwise) and waits, at most the grace period, for its running tasks to end.
    async fn drain(&self, id: &str, actor: &ractor::ActorRef<AgentMsg>) -> Result<(), ApiError> {
        let scheduler = self.ctx.scheduler()?;
        ask(actor, AgentMsg::Drain, "the agent").await?;
        let deadline = tokio::time::Instant::now() + self.ctx.agent_policy.stop_grace;
        loop {
            let counters = ask(
                &scheduler,
                |r| SchedulerMsg::Counters(vec![id.to_owned()], r),
                "the scheduler",
            )
            .await?;
            if counters.get(id).is_none_or(|c| c.running == 0) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::info!(agent = %id, "grace period over: the agent's running tasks go back to the queue");
                return Ok(());
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }

    async fn pause(&self, handle: &Arc<AgentChild>, paused: bool) -> Result<(), ApiError> {
        let id = handle.id().to_owned();
        let actor = running(handle)?;
        let state = handle.status().state;
        match (paused, state) {
            (true, AgentState::Paused) => return Err(ApiError::Conflict(format!("agent {id} is already paused"))),
            (false, s) if s != AgentState::Paused => {
                return Err(ApiError::Conflict(format!(
                    "agent {id} is not paused (it is {})",
                    s.as_str()
                )))
            }
            (true, AgentState::Stopping) => return Err(ApiError::Conflict(format!("agent {id} is stopping"))),
            _ => {}
        }
        // The wish is durable first, so a restart of the agent keeps it paused.
        self.set_desired(handle, if paused { Desired::Paused } else { Desired::Running })
            .await?;
        ask(&actor, |r| AgentMsg::Pause(paused, r), "the agent")
            .await?
            .map_err(ApiError::Internal)?;
        let (state, kind) = match paused {
            true => (AgentState::Paused, "AGENT_PAUSED"),
            false => (AgentState::Running, "AGENT_RESUMED"),
        };
        handle.report(state, kind, None, json!({})).durable().await?;
        Ok(())
    }

    async fn rollback(&self, handle: &Arc<AgentChild>, checkpoint: &str) -> Result<(), ApiError> {
        let id = handle.id();
        let saved = checkpoints::load(&self.ctx.store, id, checkpoint)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("agent {id} has no checkpoint {checkpoint}")))?;
        let data = json!({ "checkpointId": checkpoint });
        match handle.actor() {
            Some(actor) => {
                ask(&actor, |r| AgentMsg::Restore(saved.state, r), "the agent")
                    .await?
                    .map_err(|e| {
                        ApiError::invalid(format!("agent {id} could not restore checkpoint {checkpoint}: {e}"))
                    })?;
                let state = handle.status().state;
                handle.report(state, "AGENT_ROLLED_BACK", None, data).durable().await?;
            }
            None => {
                handle.restore_at_next_start(Restore {
                    checkpoint: checkpoint.to_owned(),
                    state: saved.state,
                });
                let event = NewEvent::new("AGENT_ROLLBACK_PENDING", Some(id.to_owned()), data);
                self.ctx.store.write(Batch::new().event(event)).await?;
            }
        }
        Ok(())
    }

    async fn remove(&self, handle: &Arc<AgentChild>) -> Result<AgentView, ApiError> {
        let id = handle.id().to_owned();
        if self.supervised(handle).await? {
            self.set_desired(handle, Desired::Stopped).await?;
            self.terminate(handle).await?;
        }
        self.ctx.store.flush().await?;
        let mut view = self.found(&id).await?;
        let mut batch = Batch::new()
            .delete(AGENTS, id.clone())
            .delete(AGENT_STATUS, id.clone())
            .delete(AGENT_STATS, id.clone())
            .event(NewEvent::new(
                "AGENT_REMOVED",
                Some(id.clone()),
                json!({ "name": view.spec.name, "node": view.spec.node }),
            ));
        checkpoints::delete_all(&self.ctx.store, &id, &mut batch).await?;
        self.ctx.store.write(batch).await?;
        self.ctx.slots.handles.remove(&id);
        if let Ok(scheduler) = self.ctx.scheduler() {
            let _ = scheduler.cast(SchedulerMsg::AgentRemoved(id.clone()));
        }
        gauge_moved(Some(view.status.state), None);
        view.status.state = AgentState::Stopped;
        Ok(view)
    }

    /// Whether the agent's supervisor holds it now.
    async fn supervised(&self, handle: &AgentChild) -> Result<bool, ApiError> {
        let owner = handle.spec().owner.clone();
        let supervisor = match self.ctx.supervisor_of(&owner) {
            Ok(s) => s,
            // A destroyed (or not yet restored) swarm runs none of its members.
            Err(_) if owner.swarm().is_some() => return Ok(false),
            Err(e) => return Err(e),
        };
        ask(
            &supervisor,
            |r| SupervisorMsg::Holds(handle.id().to_owned(), r),
            "the agents supervisor",
        )
        .await
    }

    async fn terminate(&self, handle: &AgentChild) -> Result<(), ApiError> {
        let supervisor = self.ctx.supervisor_of(&handle.spec().owner)?;
        ask(
            &supervisor,
            |r| SupervisorMsg::TerminateChild(handle.id().to_owned(), r),
            "the agents supervisor",
        )
        .await?;
        // The supervisor's record of the stop is durable before we answer.
        self.ctx.store.flush().await?;
        Ok(())
    }

    async fn set_desired(&self, handle: &Arc<AgentChild>, desired: Desired) -> Result<(), ApiError> {
        let mut spec = (*handle.spec()).clone();
        if spec.desired == desired {
            return Ok(());
        }
        spec.desired = desired;
        self.ctx
            .store
            .write(Batch::new().put(AGENTS, spec.id.clone(), troupe_runtime::codec::encode(&spec)?))
            .await?;
        handle.set_spec(spec);
        Ok(())
    }

    /// Moves an agent of this node to another owner (a swarm adopting it, or releasing it
    /// to the node): stopped under its old supervisor, it is started under the new one (a
    /// swarm's members supervisor starts it when the swarm starts). `capability` is added
    /// for a swarm and taken away on release.
    pub(crate) async fn move_to(&self, id: &str, owner: Owner, capability: &str) -> Result<(), ApiError> {
        let handle = self.handle(id).await?;
        let _one_at_a_time = handle.serialize().await;
        if self.supervised(&handle).await? {
            self.terminate(&handle).await?;
        }
        let mut spec = (*handle.spec()).clone();
        let from = spec.owner.clone();
        spec.capabilities.retain(|c| c != capability);
        if owner.swarm().is_some() {
            spec.capabilities.push(capability.to_owned());
        }
        spec.owner = owner.clone();
        spec.desired = Desired::Running;
        let data = json!({ "from": from.swarm(), "to": owner.swarm() });
        self.write_spec(&spec, "AGENT_OWNER_CHANGED", data).await?;
        handle.set_spec(spec);
        if owner == Owner::Node || self.ctx.supervisor_of(&owner).is_ok() {
            self.launch(&handle).await?;
        }
        self.ctx.store.flush().await?;
        Ok(())
    }

    async fn write_spec(&self, spec: &AgentSpec, kind: &str, data: serde_json::Value) -> Result<(), ApiError> {
        self.ctx
            .store
            .write(
                Batch::new()
                    .put(AGENTS, spec.id.clone(), troupe_runtime::codec::encode(spec)?)
                    .event(NewEvent::new(kind, Some(spec.id.clone()), data)),
            )
            .await?;
        Ok(())
    }
}

fn running(handle: &AgentChild) -> Result<ractor::ActorRef<AgentMsg>, ApiError> {
    handle.actor().ok_or_else(|| {
        ApiError::Conflict(format!(
            "agent {} is not running (it is {})",
            handle.id(),
            handle.status().state.as_str()
        ))
    })
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("no agent {id}"))
}

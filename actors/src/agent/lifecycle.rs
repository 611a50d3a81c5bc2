//! What can be done to an agent of this node: start, stop (graceful or not), pause, resume,
//! restart, remove, update and roll back, and moving it to another owner. Each change of wish
//! is durable before it is carried out; each change of state is recorded by the agent's
//! handle. One mutation at a time per agent (its handle's `serialize`).
//!
//! ```text
//!            start                 pause
//!  DEFINED ─────────▶ RUNNING ◀──────────▶ PAUSED
//!  STOPPED ◀───────── (stop: graceful drains first)    remove: from any state
//! ```

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::Batch;
use troupe_runtime::supervision::{ChildSpec, SupervisorMsg};

use super::checkpoints;
use super::registry::{did_not_start, Registry};
use super::spec::{AgentSpec, AgentUpdate, Desired, Owner};
use super::status::{AgentState, AgentView};
use super::{AgentChild, AgentMsg};
use crate::call::{ask, ask_within, keep, split, CALL_TIMEOUT};
use crate::error::ApiError;
use crate::scheduler::SchedulerMsg;
use crate::tables::{AGENTS, AGENT_STATS, AGENT_STATUS};

/// How often a graceful stop looks whether the agent's tasks are done.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// What can be done to an existing agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    Start,
    /// Graceful: running tasks get the grace period to finish first.
    Stop {
        graceful: bool,
    },
    Pause,
    Resume,
    Restart,
    Remove,
    Update(AgentUpdate),
    Rollback {
        checkpoint: String,
    },
}

impl Action {
    /// The mutation's name, for idempotency scopes and messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Start => "startAgent",
            Self::Stop { .. } => "stopAgent",
            Self::Pause => "pauseAgent",
            Self::Resume => "resumeAgent",
            Self::Restart => "restartAgent",
            Self::Remove => "removeAgent",
            Self::Update(_) => "updateAgent",
            Self::Rollback { .. } => "rollbackAgent",
        }
    }
}

impl Registry<'_> {
    /// Carries out `action` on the agent `id` of this node; answers the agent as it is after.
    pub async fn act(&self, id: &str, action: Action, key: Option<&str>) -> Result<AgentView, ApiError> {
        if !matches!(action, Action::Stop { .. } | Action::Pause | Action::Remove) {
            self.ensure_serving()?;
        }
        let guard = match split(self.claim(action.name(), key, &(id, &action)).await?) {
            Ok(guard) => guard,
            Err(id) => return self.found(&id).await,
        };
        let handle = self.handle(id).await?;
        let _one_at_a_time = handle.serialize().await;
        if matches!(action, Action::Start | Action::Restart) {
            // Before anything is stopped or changed: a program that is not there is refused.
            super::preflight(&handle.spec().backend)
                .await
                .map_err(ApiError::InvalidInput)?;
        }
        match action {
            Action::Start => self.start(&handle).await?,
            Action::Stop { graceful } => self.stop(&handle, graceful).await?,
            Action::Pause => self.pause(&handle, true).await?,
            Action::Resume => self.pause(&handle, false).await?,
            Action::Restart => {
                if self.supervised(&handle).await? {
                    self.terminate(&handle).await?;
                }
                self.set_desired(&handle, Desired::Running).await?;
                self.launch(&handle).await?;
            }
            Action::Remove => {
                let view = self.remove(&handle).await?;
                keep(self.store, guard, id).await?;
                return Ok(view);
            }
            Action::Update(update) => {
                let spec = update.apply(&handle.spec())?;
                self.policy.secrets.check(&spec.backend).await?;
                self.write_spec(
                    Batch::new(),
                    &spec,
                    "AGENT_UPDATED",
                    json!({ "appliesAt": "next start" }),
                )
                .await?;
                handle.set_spec(spec);
            }
            Action::Rollback { checkpoint } => self.rollback(&handle, &checkpoint).await?,
        }
        self.store.flush().await?;
        keep(self.store, guard, id).await?;
        self.found(id).await
    }

    /// Starts here an agent the cluster just moved to this node (its node was lost), from
    /// its spec and its last checkpoint as the replicated store holds them, if its user
    /// wants it running (or paused) and it was not given up on. Whether it was started.
    pub async fn adopt(&self, id: &str) -> Result<bool, ApiError> {
        // Whatever this node knew of the agent before is stale: read it afresh.
        self.slots.handles.remove(id);
        let handle = self.handle(id).await?;
        let _one_at_a_time = handle.serialize().await;
        if handle.spec().desired == Desired::Stopped
            || handle.status().state == AgentState::Failed
            || self.supervised(&handle).await?
        {
            return Ok(false);
        }
        // Its state travels as its last checkpoint (replicated with everything else): the
        // start restores it (AGENT_ROLLED_BACK names it).
        if let Some(checkpoint) = handle.latest_checkpoint() {
            handle.restore_at_next_start(super::Restore {
                checkpoint,
                state: serde_json::Value::Null,
            });
        }
        self.launch(&handle).await?;
        Ok(true)
    }

    async fn start(&self, handle: &Arc<AgentChild>) -> Result<(), ApiError> {
        if self.supervised(handle).await? {
            return Err(ApiError::Conflict(format!("{} is already running", who(handle))));
        }
        self.set_desired(handle, Desired::Running).await?;
        self.launch(handle).await
    }

    /// Puts the agent under its supervisor, which starts it.
    async fn launch(&self, handle: &Arc<AgentChild>) -> Result<(), ApiError> {
        handle.report(AgentState::Starting, "AGENT_STARTING", None, json!({}));
        let supervisor = self.supervisor_of(&handle.spec().owner)?;
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
        .map_err(|e| did_not_start(&handle.spec().name, handle.id(), &e))
    }

    async fn stop(&self, handle: &Arc<AgentChild>, graceful: bool) -> Result<(), ApiError> {
        let id = handle.id().to_owned();
        let supervised = self.supervised(handle).await?;
        if !supervised && matches!(handle.status().state, AgentState::Stopped | AgentState::Defined) {
            return Err(ApiError::Conflict(format!("{} is already stopped", who(handle))));
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
    /// otherwise) and waits, at most the grace period, for its running tasks to end: not for
    /// those held for an operator's approval, which go back to the queue with the others at
    /// its stop and wait for their approval again when they run next.
    async fn drain(&self, id: &str, actor: &ractor::ActorRef<AgentMsg>) -> Result<(), ApiError> {
        let scheduler = self.scheduler()?;
        ask(actor, AgentMsg::Drain, "the agent").await?;
        let deadline = tokio::time::Instant::now() + self.policy.stop_grace;
        loop {
            let working = ask(
                &scheduler,
                |r| SchedulerMsg::Working(Some(id.to_owned()), r),
                "the scheduler",
            )
            .await?;
            if working == 0 {
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
        let actor = running(handle)?;
        let state = handle.status().state;
        match (paused, state) {
            (true, AgentState::Paused) => return Err(ApiError::Conflict(format!("{} is already paused", who(handle)))),
            (false, s) if s != AgentState::Paused => {
                return Err(ApiError::Conflict(format!(
                    "{} is not paused (it is {})",
                    who(handle),
                    s.as_str()
                )))
            }
            (true, AgentState::Stopping) => return Err(ApiError::Conflict(format!("{} is stopping", who(handle)))),
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

    async fn remove(&self, handle: &Arc<AgentChild>) -> Result<AgentView, ApiError> {
        let id = handle.id().to_owned();
        if self.supervised(handle).await? {
            self.set_desired(handle, Desired::Stopped).await?;
            self.terminate(handle).await?;
        }
        self.store.flush().await?;
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
        batch = super::owners::unfile(batch, &view.spec.owner, &id);
        checkpoints::delete_all(self.store, &id, &mut batch).await?;
        super::logs::delete_all(self.store, &id, &mut batch).await?;
        crate::messaging::delete_history(self.store, &id, &mut batch).await?;
        self.store.write(batch).await?;
        self.slots.handles.remove(&id);
        if let Ok(scheduler) = self.scheduler() {
            let _ = scheduler.cast(SchedulerMsg::AgentRemoved(id.clone()));
        }
        view.status.state = AgentState::Stopped;
        Ok(view)
    }

    /// Whether the agent's supervisor holds it now.
    async fn supervised(&self, handle: &AgentChild) -> Result<bool, ApiError> {
        let owner = handle.spec().owner.clone();
        let supervisor = match self.supervisor_of(&owner) {
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
        let supervisor = self.supervisor_of(&handle.spec().owner)?;
        ask(
            &supervisor,
            |r| SupervisorMsg::TerminateChild(handle.id().to_owned(), r),
            "the agents supervisor",
        )
        .await?;
        // The supervisor's record of the stop is durable before we answer.
        self.store.flush().await?;
        Ok(())
    }

    async fn set_desired(&self, handle: &Arc<AgentChild>, desired: Desired) -> Result<(), ApiError> {
        let mut spec = (*handle.spec()).clone();
        if spec.desired == desired {
            return Ok(());
        }
        spec.desired = desired;
        self.store
            .write(Batch::new().put(AGENTS, spec.id.clone(), troupe_runtime::codec::encode(&spec)?))
            .await?;
        handle.set_spec(spec);
        Ok(())
    }

    /// Moves an agent of this node to another owner (a swarm adopting it, or releasing it
    /// to the node): stopped under its old supervisor, it is started under the new one (a
    /// swarm's members supervisor starts it when the swarm starts). `capability` is added
    /// for a swarm and taken away on release.
    pub async fn move_to(&self, id: &str, owner: Owner, capability: &str) -> Result<(), ApiError> {
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
        let refile = super::owners::file(super::owners::unfile(Batch::new(), &from, id), &owner, id);
        self.write_spec(refile, &spec, "AGENT_OWNER_CHANGED", data).await?;
        handle.set_spec(spec);
        if owner == Owner::Node || self.supervisor_of(&owner).is_ok() {
            self.launch(&handle).await?;
        }
        self.store.flush().await?;
        Ok(())
    }

    /// Writes the spec and its event, with whatever else `batch` holds.
    async fn write_spec(
        &self,
        batch: Batch,
        spec: &AgentSpec,
        kind: &str,
        data: serde_json::Value,
    ) -> Result<(), ApiError> {
        self.store
            .write(
                batch
                    .put(AGENTS, spec.id.clone(), troupe_runtime::codec::encode(spec)?)
                    .event(NewEvent::new(kind, Some(spec.id.clone()), data)),
            )
            .await?;
        Ok(())
    }
}

/// The agent's actor, or CONFLICT when it does not run.
pub(super) fn running(handle: &AgentChild) -> Result<ractor::ActorRef<AgentMsg>, ApiError> {
    handle.actor().ok_or_else(|| {
        ApiError::Conflict(format!(
            "agent {} is not running (it is {})",
            handle.id(),
            handle.status().state.as_str()
        ))
    })
}

/// "agent reviewer": how an answer names the agent it is about.
fn who(handle: &AgentChild) -> String {
    format!("agent {}", handle.spec().name)
}

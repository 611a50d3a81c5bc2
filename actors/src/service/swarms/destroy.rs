//! Destroying a swarm: its subtree, the work it handed out, its members and its records.

use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::Batch;
use troupe_runtime::supervision::SupervisorMsg;

use super::Swarms;
use crate::error::ApiError;
use crate::service::context::ask;
use crate::service::AgentAction;
use crate::swarm::{memory, SwarmTask, SwarmView};
use crate::tables::{SWARMS, SWARM_STATUS, SWARM_TASKS, SWARM_TEAMS};

impl Swarms {
    /// Stops the swarm's whole subtree (its members' processes end with their agents), then
    /// removes the swarm, its members, its memory and its tasks' records.
    pub async fn destroy(&self, id: &str) -> Result<SwarmView, ApiError> {
        on_peer!(self, id, destroy(id.to_owned()));
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
        let tasks_service = super::super::Tasks { ctx: self.ctx.clone() };
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
            batch = crate::swarm::forget_open_task(batch, id, &t);
            batch = batch.delete(SWARM_TASKS, t);
        }
        if let Some(lead) = &view.spec.lead {
            batch = batch.delete(SWARM_TEAMS, crate::swarm::team_key(lead, id));
        }
        let batch = memory::delete_all(&self.ctx.store, id, batch).await?;
        self.ctx.store.write(batch).await?;
        Ok(view)
    }
}

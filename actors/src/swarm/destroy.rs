//! Destroying a swarm: its subtree, the work it handed out, its members and its records.

use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::Batch;
use troupe_runtime::supervision::SupervisorMsg;

use super::{memory, Port, SwarmTask, SwarmView};
use crate::call::ask;
use crate::error::ApiError;
use crate::tables::{SWARMS, SWARM_STATUS, SWARM_TASKS, SWARM_TEAMS};

impl Port {
    /// Stops the swarm's whole subtree (its members' processes end with their agents), then
    /// removes the swarm, its members, its memory and its tasks' records.
    pub(crate) async fn destroy(&self, id: &str) -> Result<SwarmView, ApiError> {
        let view = self.view(id).await?;
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
        self.forget_actors(id);
        self.store.flush().await?;
        let (tasks, open_subtasks): (Vec<String>, Vec<String>) = {
            let swarm = id.to_owned();
            self.store
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
        for subtask in &open_subtasks {
            match self.subtasks.cancel(subtask).await {
                Ok(_) | Err(ApiError::NotFound(_) | ApiError::Conflict(_)) => {}
                Err(e) => {
                    tracing::warn!(swarm = %id, task = %subtask, error = %e, "could not cancel a swarm's subtask")
                }
            }
        }
        for member in &view.members {
            self.members.remove(member).await?;
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
            batch = super::forget_open_task(batch, id, &t);
            batch = batch.delete(SWARM_TASKS, t);
        }
        if let Some(lead) = &view.spec.lead {
            batch = batch.delete(SWARM_TEAMS, super::team_key(lead, id));
        }
        let batch = memory::delete_all(&self.store, id, batch).await?;
        self.store.write(batch).await?;
        Ok(view)
    }
}

//! A swarm's tasks as requests reach them: submitted (recorded, then handed to the
//! coordinator), led by a team's leader, and read back.

use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::Batch;

use super::{CoordinatorMsg, Port, SwarmTask, SwarmTaskMode, SwarmTaskState};
use crate::error::ApiError;
use crate::tables::SWARM_TASKS;

impl Port {
    /// Records a swarm task and hands it to the coordinator; answers it RUNNING.
    pub(crate) async fn submit_task(&self, id: &str, mode: SwarmTaskMode) -> Result<SwarmTask, ApiError> {
        self.serving.ensure()?;
        mode.validate()?;
        super::load_spec(&self.store, id).await?;
        let task = SwarmTask {
            id: crate::ids::new_id(&self.node),
            swarm: id.to_owned(),
            state: SwarmTaskState::Running,
            topology: None,
            subtasks: Vec::new(),
            result: None,
            error: None,
            created_at: troupe_runtime::clock::now(),
            finished_at: None,
            mode,
            handouts: Default::default(),
        };
        let data = json!({ "task": task.id, "mode": task.mode.name() });
        let batch = Batch::new()
            .put(SWARM_TASKS, task.id.clone(), troupe_runtime::codec::encode(&task)?)
            .event(NewEvent::new("SWARM_TASK_SUBMITTED", Some(id.to_owned()), data));
        let batch = super::index_open_task(batch, &task);
        self.store.write(batch).await?;
        // A coordinator not running now takes it up at its next start.
        if let Ok(c) = self.coordinator(id) {
            let _ = c.cast(CoordinatorMsg::Conduct(task.id.clone()));
        }
        Ok(task)
    }

    /// A leader's swarm task for the team it leads (a sub-team runs on its parent's node, so
    /// on this one): submitted, then waited on for at most `timeout`; its result.
    pub(crate) async fn lead_task(
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
        let ended = super::wait_end(self, &task.id, timeout).await?;
        match ended.state {
            SwarmTaskState::Succeeded => Ok(ended.result.unwrap_or(serde_json::Value::Null)),
            _ => Err(ApiError::Conflict(format!(
                "team {team}'s task {} failed: {}",
                ended.id,
                ended.error.as_deref().unwrap_or("no error given")
            ))),
        }
    }

    pub(crate) async fn task(&self, task: &str) -> Result<Option<SwarmTask>, ApiError> {
        match self.store.get(SWARM_TASKS, task).await? {
            Some(b) => Ok(Some(troupe_runtime::codec::decode(&b)?)),
            None => Ok(None),
        }
    }

    /// The swarm's tasks, newest first, at most `first`.
    pub(crate) async fn tasks(&self, id: &str, first: usize) -> Result<Vec<SwarmTask>, ApiError> {
        let swarm = id.to_owned();
        let mut all: Vec<SwarmTask> = self
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
}

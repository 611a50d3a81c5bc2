//! A swarm's memory and its tasks, as the swarms service offers them.

use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::Batch;

use super::Swarms;
use crate::agent::Owner;
use crate::error::ApiError;
use crate::swarm::memory::{self, Entry, Write};
use crate::swarm::{CoordinatorMsg, SwarmTask, SwarmTaskMode, SwarmTaskState};
use crate::tables::SWARM_TASKS;

impl Swarms {
    // Memory.

    async fn limit(&self, id: &str) -> Result<u64, ApiError> {
        Ok(crate::swarm::load_spec(&self.ctx.store, id).await?.memory_limit_bytes)
    }

    pub async fn memory_get(&self, id: &str, key: &str) -> Result<Option<Entry>, ApiError> {
        on_peer!(self, id, memory_get(id.to_owned(), key.to_owned()));
        self.limit(id).await?;
        memory::get(&self.ctx.store, id, key).await
    }

    pub async fn memory_list(&self, id: &str, prefix: &str, first: usize) -> Result<Vec<Entry>, ApiError> {
        let first_ = first.min(u32::MAX as usize) as u32;
        on_peer!(self, id, memory_list(id.to_owned(), prefix.to_owned(), first_));
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
        on_peer!(
            self,
            id,
            memory_write(id.to_owned(), key.to_owned(), write.clone(), expect)
        );
        let limit = self.limit(id).await?;
        if let Write::Set { value, .. } = &write {
            let size = value.to_string().len();
            if size > self.ctx.max_payload_bytes {
                return Err(ApiError::invalid(format!(
                    "value is {size} bytes, above the payload limit"
                )));
            }
        }
        let lock = self.locks.memory(id);
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
        on_peer!(self, id, submit_task(id.to_owned(), Box::new(mode.clone())));
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
            handouts: Default::default(),
        };
        let data = json!({ "task": task.id, "mode": task.mode.name() });
        let batch = Batch::new()
            .put(SWARM_TASKS, task.id.clone(), troupe_runtime::codec::encode(&task)?)
            .event(NewEvent::new("SWARM_TASK_SUBMITTED", Some(id.to_owned()), data));
        let batch = crate::swarm::index_open_task(batch, &task);
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
        let ended = crate::swarm::wait_end(&self.port(), &task.id, timeout).await?;
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
        on_peer!(self, task, task(task.to_owned()));
        match self.ctx.store.get(SWARM_TASKS, task).await? {
            Some(b) => Ok(Some(troupe_runtime::codec::decode(&b)?)),
            None => Ok(None),
        }
    }

    /// The swarm's tasks, newest first, at most `first`.
    pub async fn tasks(&self, id: &str, first: usize) -> Result<Vec<SwarmTask>, ApiError> {
        let first_ = first.min(u32::MAX as usize) as u32;
        on_peer!(self, id, tasks(id.to_owned(), first_));
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
        on_peer!(self, id, queue(id.to_owned()));
        let members = self.agents().owned(&Owner::Swarm(id.to_owned())).await?;
        let running: u32 = members.iter().map(|m| m.stats.running).sum();
        let slots: u32 = members.iter().map(|m| m.spec.max_concurrent_tasks).sum();
        Ok((running, slots))
    }
}

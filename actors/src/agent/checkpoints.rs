//! Checkpoints: an agent's state as its backend reported it, kept in the store so a rollback
//! (asked for, or the recovery ladder's second rung) can put it back. The newest N per agent
//! are kept; ids sort by creation time.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{Batch, Store, StoreError, View};
use troupe_runtime::supervision::ChildSpec;

use super::lifecycle::running;
use super::registry::Registry;
use super::{AgentChild, AgentMsg, Restore};
use crate::call::{ask, keep, split};
use crate::error::ApiError;
use crate::tables::CHECKPOINTS;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub id: String,
    pub agent_id: String,
    pub created_at: DateTime<Utc>,
    pub description: String,
    #[serde(with = "troupe_runtime::codec::json_text")]
    pub state: Value,
    pub size_bytes: u64,
}

fn key(agent: &str, checkpoint: &str) -> String {
    format!("{agent}/{checkpoint}")
}

/// Every checkpoint of `agent`, oldest first.
pub fn all_in(v: &View<'_>, agent: &str) -> Result<Vec<Checkpoint>, StoreError> {
    let prefix = format!("{agent}/");
    let mut out = Vec::new();
    v.scan_prefix(CHECKPOINTS, &prefix, |_, bytes| {
        out.push(troupe_runtime::codec::decode(bytes)?);
        Ok(true)
    })?;
    Ok(out)
}

/// The id of the newest checkpoint of `agent`.
pub fn latest_in(v: &View<'_>, agent: &str) -> Result<Option<String>, StoreError> {
    Ok(all_in(v, agent)?.pop().map(|c| c.id))
}

pub async fn list(store: &Store, agent: &str) -> Result<Vec<Checkpoint>, StoreError> {
    let agent = agent.to_owned();
    store.view(move |v| all_in(v, &agent)).await
}

pub async fn load(store: &Store, agent: &str, checkpoint: &str) -> Result<Option<Checkpoint>, StoreError> {
    match store.get(CHECKPOINTS, &key(agent, checkpoint)).await? {
        Some(bytes) => Ok(Some(troupe_runtime::codec::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// Writes `checkpoint` and drops the oldest beyond `keep`, in one batch.
pub async fn save(
    store: &Store,
    checkpoint: &Checkpoint,
    keep: usize,
    event: troupe_runtime::events::NewEvent,
) -> Result<(), StoreError> {
    let existing = list(store, &checkpoint.agent_id).await?;
    let mut batch = Batch::new()
        .put(
            CHECKPOINTS,
            key(&checkpoint.agent_id, &checkpoint.id),
            troupe_runtime::codec::encode(checkpoint)?,
        )
        .event(event);
    let excess = (existing.len() + 1).saturating_sub(keep.max(1));
    for old in existing.iter().take(excess) {
        batch = batch.delete(CHECKPOINTS, key(&old.agent_id, &old.id));
    }
    store.write(batch).await.map(|_| ())
}

/// Deletes every checkpoint of `agent` into `batch` (the agent is being removed).
pub async fn delete_all(store: &Store, agent: &str, batch: &mut Batch) -> Result<(), StoreError> {
    for c in list(store, agent).await? {
        batch.push(troupe_runtime::store::Op::Delete {
            table: CHECKPOINTS,
            key: key(agent, &c.id),
        });
    }
    Ok(())
}

impl Registry<'_> {
    /// Takes a checkpoint of the running agent `id` of this node.
    pub async fn checkpoint(&self, id: &str, description: String, key: Option<&str>) -> Result<Checkpoint, ApiError> {
        let guard = match split(self.claim("checkpointAgent", key, &(id, &description)).await?) {
            Ok(guard) => guard,
            Err(done) => {
                return load(self.store, id, &done)
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
            id: crate::ids::new_id(self.node),
            agent_id: id.to_owned(),
            created_at: troupe_runtime::clock::now(),
            description,
            state,
            size_bytes,
        };
        let data =
            json!({ "checkpointId": checkpoint.id, "description": checkpoint.description, "sizeBytes": size_bytes });
        let event = NewEvent::new("AGENT_CHECKPOINTED", Some(id.to_owned()), data);
        save(self.store, &checkpoint, self.policy.checkpoints_kept, event).await?;
        handle.set_latest_checkpoint(Some(checkpoint.id.clone()));
        keep(self.store, guard, &checkpoint.id).await?;
        Ok(checkpoint)
    }

    /// Puts `checkpoint` back: into the running agent now, else at its next start.
    pub(super) async fn rollback(&self, handle: &Arc<AgentChild>, checkpoint: &str) -> Result<(), ApiError> {
        let id = handle.id();
        let saved = load(self.store, id, checkpoint)
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
                self.store.write(Batch::new().event(event)).await?;
            }
        }
        Ok(())
    }
}

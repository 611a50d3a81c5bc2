//! Checkpoints: an agent's state as its backend reported it, kept in the store so a rollback
//! (asked for, or the recovery ladder's second rung) can put it back. The newest N per agent
//! are kept; ids sort by creation time.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use troupe_runtime::store::{Batch, Store, StoreError, View};

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
    v.scan(CHECKPOINTS, Some(&prefix), |k, bytes| {
        if !k.starts_with(&prefix) {
            return Ok(false);
        }
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

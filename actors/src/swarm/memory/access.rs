//! A swarm's memory as requests reach it: the swarm must exist, a value fits the payload
//! limit, and writers of one swarm go one at a time.

use super::{Entry, Op, Write};
use crate::error::ApiError;
use crate::swarm::Port;

impl Port {
    /// The swarm's memory bound; NOT_FOUND for no such swarm.
    async fn limit(&self, id: &str) -> Result<u64, ApiError> {
        Ok(crate::swarm::load_spec(&self.store, id).await?.memory_limit_bytes)
    }

    pub(crate) async fn memory_get(&self, id: &str, key: &str) -> Result<Option<Entry>, ApiError> {
        super::get(&self.store, id, key).await
    }

    pub(crate) async fn memory_list(&self, id: &str, prefix: &str, first: usize) -> Result<Vec<Entry>, ApiError> {
        self.limit(id).await?;
        super::list(&self.store, id, prefix, first).await
    }

    /// Sets or deletes a key, if its version is `expect` (when given: 0 for a key that must
    /// not exist yet).
    pub(crate) async fn memory_write(
        &self,
        id: &str,
        key: &str,
        write: Write,
        expect: Option<u64>,
    ) -> Result<Option<Entry>, ApiError> {
        let limit = self.limit(id).await?;
        if let Write::Set { value, .. } = &write {
            let size = value.to_string().len();
            if size > self.max_payload_bytes {
                return Err(ApiError::invalid(format!(
                    "value is {size} bytes, above the payload limit"
                )));
            }
        }
        let lock = self.locks.memory(id);
        let _one_writer = lock.lock().await;
        super::write(&self.store, id, key, write, expect, limit).await
    }

    /// A member's read or write of its own swarm's memory (a swarm's members live on its
    /// node, so the swarm is this node's).
    pub(crate) async fn agent_memory(&self, agent: &str, op: Op) -> Result<serde_json::Value, ApiError> {
        let owner = self.owner_of(agent).await?;
        let swarm = owner
            .swarm()
            .ok_or_else(|| ApiError::invalid(format!("agent {agent} is not a member of a swarm")))?;
        Ok(match op {
            Op::Get { key } => self
                .memory_get(swarm, &key)
                .await?
                .map_or(serde_json::Value::Null, |e| e.to_json()),
            Op::List { prefix } => {
                let entries = self.memory_list(swarm, &prefix, 1000).await?;
                serde_json::Value::Array(entries.iter().map(Entry::to_json).collect())
            }
            Op::Write { key, write, expect } => self
                .memory_write(swarm, &key, write, expect)
                .await?
                .map_or(serde_json::Value::Null, |e| e.to_json()),
        })
    }
}

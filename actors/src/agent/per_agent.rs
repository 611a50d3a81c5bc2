//! What a projection keeps of each agent, by agent id, from the agents table (see
//! `troupe_runtime::store::project`): built at start and after a snapshot, then following
//! each write of an agent's spec. The agents' names ([`super::AgentNames`]) and the message
//! audience (`crate::messaging::Audience`) are two such.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use troupe_runtime::store::{Change, Projection, Store, StoreError, Table, View};

use super::AgentSpec;
use crate::tables::AGENTS;

/// `of` each agent's spec, by agent id.
pub struct PerAgent<T> {
    name: &'static str,
    of: fn(AgentSpec) -> T,
    by_id: Arc<RwLock<BTreeMap<String, T>>>,
}

impl<T> Clone for PerAgent<T> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            of: self.of,
            by_id: self.by_id.clone(),
        }
    }
}

impl<T: Send + Sync + 'static> PerAgent<T> {
    /// An empty one, `name`d for the logs, keeping `of` each spec.
    pub fn new(name: &'static str, of: fn(AgentSpec) -> T) -> Self {
        Self {
            name,
            of,
            by_id: Arc::default(),
        }
    }

    /// Keeps it true to `store`'s agents table from now on.
    pub async fn follow(&self, store: &Store) -> Result<(), StoreError> {
        store.project(Arc::new(self.clone())).await
    }

    /// What it holds now, by agent id.
    pub fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, T>> {
        self.by_id.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T: Send + Sync + 'static> Projection for PerAgent<T> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn tables(&self) -> &'static [Table] {
        &[AGENTS]
    }

    fn rebuild(&self, view: &View<'_>) -> Result<(), StoreError> {
        let mut all = BTreeMap::new();
        view.scan(AGENTS, None, |id, bytes| {
            all.insert(id.to_owned(), (self.of)(troupe_runtime::codec::decode(bytes)?));
            Ok(true)
        })?;
        *self.by_id.write().unwrap_or_else(|p| p.into_inner()) = all;
        Ok(())
    }

    fn apply(&self, change: &Change<'_>) -> Result<(), StoreError> {
        let mut keys = change.keys_of(AGENTS).peekable();
        if keys.peek().is_none() {
            return Ok(());
        }
        // Read first, then change memory at once: a failed read leaves it as it was (and
        // the store rebuilds it).
        let view = change.view()?;
        let mut now = HashMap::new();
        for id in keys {
            let kept = view
                .get(AGENTS, id)?
                .map(|b| troupe_runtime::codec::decode::<AgentSpec>(&b).map(self.of))
                .transpose()?;
            now.insert(id.to_owned(), kept);
        }
        let mut by_id = self.by_id.write().unwrap_or_else(|p| p.into_inner());
        for (id, kept) in now {
            match kept {
                Some(kept) => by_id.insert(id, kept),
                None => by_id.remove(&id),
            };
        }
        Ok(())
    }
}

//! Each agent's name, kept in memory as a projection of the agents table (see
//! `troupe_runtime::store::project`): built at start and after a snapshot, then following
//! each write of an agent's spec. So the agents that share a name are found without decoding
//! every spec: a spawn asks it for each agent it makes (see the gateway's `NAME_TAKEN`).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use troupe_runtime::store::{Change, Projection, Store, StoreError, Table, View};

use super::AgentSpec;
use crate::tables::AGENTS;

/// Every agent's name, by agent id.
#[derive(Clone, Default)]
pub struct AgentNames {
    by_id: Arc<RwLock<BTreeMap<String, String>>>,
}

impl AgentNames {
    /// Keeps it true to `store`'s agents table from now on.
    pub async fn follow(&self, store: &Store) -> Result<(), StoreError> {
        store.project(Arc::new(self.clone())).await
    }

    /// The agents other than `id` named `name`, in id order.
    pub fn others_named(&self, name: &str, id: &str) -> Vec<String> {
        let by_id = self.by_id.read().unwrap_or_else(|p| p.into_inner());
        by_id
            .iter()
            .filter(|(other, n)| n.as_str() == name && other.as_str() != id)
            .map(|(other, _)| other.clone())
            .collect()
    }
}

impl Projection for AgentNames {
    fn name(&self) -> &'static str {
        "agent names"
    }

    fn tables(&self) -> &'static [Table] {
        &[AGENTS]
    }

    fn rebuild(&self, view: &View<'_>) -> Result<(), StoreError> {
        let mut all = BTreeMap::new();
        view.scan(AGENTS, None, |id, bytes| {
            all.insert(id.to_owned(), troupe_runtime::codec::decode::<AgentSpec>(bytes)?.name);
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
        // Read first, then change memory at once.
        let view = change.view()?;
        let mut now = Vec::new();
        for id in keys {
            let name = view
                .get(AGENTS, id)?
                .map(|b| troupe_runtime::codec::decode::<AgentSpec>(&b).map(|s| s.name))
                .transpose()?;
            now.push((id.to_owned(), name));
        }
        let mut by_id = self.by_id.write().unwrap_or_else(|p| p.into_inner());
        for (id, name) in now {
            match name {
                Some(name) => by_id.insert(id, name),
                None => by_id.remove(&id),
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use troupe_runtime::store::Batch;

    use super::*;
    use crate::agent::Owner;

    fn put(batch: Batch, id: &str, name: &str) -> Batch {
        let mut spec = AgentSpec::example(id, Owner::Node);
        spec.name = name.into();
        batch.put(AGENTS, id, troupe_runtime::codec::encode(&spec).unwrap())
    }

    #[tokio::test]
    async fn the_agents_sharing_a_name_are_found_as_the_table_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        // One before the projection is built, one after.
        store.write(put(Batch::new(), "a@n", "echo1")).await.unwrap();
        let names = AgentNames::default();
        names.follow(&store).await.unwrap();
        store.write(put(Batch::new(), "b@n", "echo1")).await.unwrap();
        assert_eq!(names.others_named("echo1", "b@n"), ["a@n"]);
        assert_eq!(names.others_named("echo1", "c@n"), ["a@n", "b@n"]);
        // Removed, it names nobody any more.
        store.write(Batch::new().delete(AGENTS, "a@n")).await.unwrap();
        assert!(names.others_named("echo1", "b@n").is_empty());
    }
}

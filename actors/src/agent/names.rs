//! Each agent's name, kept in memory as a projection of the agents table
//! ([`super::per_agent`]). So the agents that share a name are found without decoding
//! every spec: a spawn asks it for each agent it makes (see the gateway's `NAME_TAKEN`).

use troupe_runtime::store::{Store, StoreError};

use super::per_agent::PerAgent;

/// Every agent's name, by agent id.
#[derive(Clone)]
pub struct AgentNames(PerAgent<String>);

impl Default for AgentNames {
    fn default() -> Self {
        Self(PerAgent::new("agent names", |spec| spec.name))
    }
}

impl AgentNames {
    /// Keeps it true to `store`'s agents table from now on.
    pub async fn follow(&self, store: &Store) -> Result<(), StoreError> {
        self.0.follow(store).await
    }

    /// The agents other than `id` named `name`, in id order.
    pub fn others_named(&self, name: &str, id: &str) -> Vec<String> {
        self.0
            .read()
            .iter()
            .filter(|(other, n)| n.as_str() == name && other.as_str() != id)
            .map(|(other, _)| other.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use troupe_runtime::store::Batch;

    use super::*;
    use crate::agent::{AgentSpec, Owner};
    use crate::tables::AGENTS;

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

//! Who a publication or a broadcast is for: each agent's topic patterns and labels, kept in
//! memory as a projection of the agents table. The state machine builds it at start and
//! again when a snapshot replaces the tables, and hands it every write to the table in
//! between, so a publish reads no agent spec: with 10,000 agents, decoding every spec per
//! publish held a node to about 75 publishes a second.

use std::collections::BTreeMap;

use troupe_runtime::store::{Store, StoreError};

use super::{topic_matches, Publication};
use crate::agent::{AgentSpec, PerAgent};

/// What a publication needs to know of one agent.
#[derive(Debug, Clone, PartialEq)]
struct Listener {
    topics: Vec<String>,
    labels: BTreeMap<String, String>,
}

impl Listener {
    fn of(spec: AgentSpec) -> Self {
        Self {
            topics: spec.topics,
            labels: spec.labels,
        }
    }

    fn wants(&self, publication: &Publication) -> bool {
        match &publication.topic {
            Some(t) => self.topics.iter().any(|p| topic_matches(p, t)),
            None => publication.labels.iter().all(|(k, v)| self.labels.get(k) == Some(v)),
        }
    }
}

/// Every agent's topics and labels, by agent id.
#[derive(Clone)]
pub struct Audience(PerAgent<Listener>);

impl Default for Audience {
    fn default() -> Self {
        Self(PerAgent::new("message audience", Listener::of))
    }
}

impl Audience {
    /// Keeps it true to `store`'s agents table from now on.
    pub async fn follow(&self, store: &Store) -> Result<(), StoreError> {
        self.0.follow(store).await
    }

    /// The agents `publication` is meant for, in id order.
    pub fn meant_for(&self, publication: &Publication) -> Vec<String> {
        self.0
            .read()
            .iter()
            .filter(|(_, l)| l.wants(publication))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Each topic pattern the agents subscribe to, with how many do, in pattern order.
    pub fn topics(&self) -> Vec<(String, u32)> {
        let mut counts = BTreeMap::<String, u32>::new();
        for topic in self.0.read().values().flat_map(|l| &l.topics) {
            *counts.entry(topic.clone()).or_default() += 1;
        }
        counts.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use troupe_runtime::store::{Batch, Projection};

    use super::*;
    use crate::tables::AGENTS;
    use crate::task::Priority;

    fn spec(id: &str, topics: &[&str], team: &str) -> AgentSpec {
        let mut spec = AgentSpec::example(id, crate::agent::Owner::Node);
        spec.topics = topics.iter().map(|t| t.to_string()).collect();
        spec.labels = BTreeMap::from([("team".to_owned(), team.to_owned())]);
        spec
    }

    fn publication(topic: Option<&str>, labels: &[(&str, &str)]) -> Publication {
        Publication {
            topic: topic.map(str::to_owned),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            payload: json!({}),
            priority: Priority::Normal,
        }
    }

    async fn put(store: &Store, spec: &AgentSpec) {
        let bytes = troupe_runtime::codec::encode(spec).unwrap();
        store
            .write(Batch::new().put(AGENTS, spec.id.clone(), bytes))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn it_follows_the_agents_table_from_start_through_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.redb")).unwrap();
        put(&store, &spec("a@n", &["builds.#"], "red")).await;
        let audience = Audience::default();
        audience.follow(&store).await.unwrap();
        // Built from what the table held when it began to follow.
        assert_eq!(audience.meant_for(&publication(Some("builds.linux"), &[])), ["a@n"]);

        put(&store, &spec("b@n", &["builds.*", "health.*"], "blue")).await;
        assert_eq!(
            audience.meant_for(&publication(Some("builds.linux"), &[])),
            ["a@n", "b@n"]
        );
        assert_eq!(audience.meant_for(&publication(None, &[("team", "blue")])), ["b@n"]);
        assert_eq!(
            audience.topics(),
            [
                ("builds.#".to_owned(), 1),
                ("builds.*".to_owned(), 1),
                ("health.*".to_owned(), 1)
            ]
        );

        // An update changes what it is meant for; a removal takes the agent out.
        put(&store, &spec("a@n", &[], "blue")).await;
        store.write(Batch::new().delete(AGENTS, "b@n")).await.unwrap();
        assert!(audience.meant_for(&publication(Some("builds.linux"), &[])).is_empty());
        assert_eq!(audience.meant_for(&publication(None, &[("team", "blue")])), ["a@n"]);
        assert!(audience.topics().is_empty());

        // One rebuilt from the tables, as a snapshot installed rebuilds it, holds exactly
        // what the one that followed every write holds.
        put(&store, &spec("c@n", &["health.#"], "red")).await;
        let rebuilt = Audience::default();
        let copy = rebuilt.clone();
        store.view(move |v| copy.0.rebuild(v)).await.unwrap();
        let all = |a: &Audience| a.0.read().clone();
        assert_eq!(all(&rebuilt), all(&audience));
        assert_eq!(rebuilt.topics(), [("health.#".to_owned(), 1)]);
    }
}

//! `troupe_agents{state}`: the agents this node holds, by state, as its replica says. A
//! projection the state machine drives (see `troupe_runtime::store::project`): built from
//! the tables at start and after a snapshot, then following each write of an agent's status
//! or of where an agent is placed. So an agent that moved off this node while it was down
//! leaves its count once the move is applied here, and one that moved here enters it, with
//! nothing counting by hand.

use std::sync::Mutex;

use troupe_runtime::store::{Change, Projection, StoreError, Table, View};
use troupe_runtime::telemetry::StateCounts;

use super::status::{AgentState, AgentStatus};
use crate::cluster::directory::held_in;
use crate::tables::{AGENT_STATUS, DIRECTORY};

/// This node's agents and how many are in each state.
pub(crate) struct AgentGauge {
    node: String,
    held: Mutex<StateCounts<AgentState>>,
}

impl AgentGauge {
    pub(crate) fn new(node: &str) -> Self {
        Self {
            node: node.to_owned(),
            held: Mutex::new(StateCounts::new("troupe_agents", AgentState::as_str)),
        }
    }

    /// Agent `id`'s state if this node holds it, as `v` says; `status` is its stored status,
    /// if any.
    fn state_here(&self, v: &View<'_>, id: &str, status: Option<&[u8]>) -> Result<Option<AgentState>, StoreError> {
        let Some(bytes) = status else {
            return Ok(None);
        };
        if !held_in(v, id, &self.node)? {
            return Ok(None);
        }
        Ok(Some(troupe_runtime::codec::decode::<AgentStatus>(bytes)?.state))
    }
}

impl Projection for AgentGauge {
    fn name(&self) -> &'static str {
        "agents gauge"
    }

    fn tables(&self) -> &'static [Table] {
        &[AGENT_STATUS, DIRECTORY]
    }

    fn rebuild(&self, view: &View<'_>) -> Result<(), StoreError> {
        let mut now = Vec::new();
        view.scan(AGENT_STATUS, None, |id, bytes| {
            now.push((id.to_owned(), self.state_here(view, id, Some(bytes))?));
            Ok(true)
        })?;
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.clear();
        for (id, state) in now {
            held.set(&id, state);
        }
        Ok(())
    }

    fn apply(&self, change: &Change<'_>) -> Result<(), StoreError> {
        let mut ids: Vec<&str> = change.keys_of(AGENT_STATUS).chain(change.keys_of(DIRECTORY)).collect();
        if ids.is_empty() {
            return Ok(());
        }
        ids.sort_unstable();
        ids.dedup();
        // Read first, then change memory at once.
        let view = change.view()?;
        let mut now = Vec::with_capacity(ids.len());
        for id in ids {
            let status = view.get(AGENT_STATUS, id)?;
            now.push((id, self.state_here(&view, id, status.as_deref())?));
        }
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for (id, state) in now {
            held.set(id, state);
        }
        Ok(())
    }
}

#[cfg(test)]
impl AgentGauge {
    /// How many agents it counts in each state (0s left out).
    fn counts(&self) -> std::collections::BTreeMap<&'static str, i64> {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).counts()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use troupe_runtime::store::{Batch, Store};

    use super::*;
    use crate::cluster::directory::Placement;

    fn status(state: AgentState) -> Vec<u8> {
        troupe_runtime::codec::encode(&AgentStatus::new(state)).unwrap()
    }

    fn placed(node: &str) -> Vec<u8> {
        troupe_runtime::codec::encode(&Placement {
            node: node.into(),
            epoch: 1,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn it_counts_the_agents_placed_here_as_the_writes_go_and_as_a_rebuild_does() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let batch = Batch::new()
            .put(AGENT_STATUS, "a@x", status(AgentState::Running))
            .put(AGENT_STATUS, "b@x", status(AgentState::Running))
            .put(AGENT_STATUS, "c@y", status(AgentState::Stopped))
            // b moved off x while x was away.
            .put(DIRECTORY, "b@x", placed("y"));
        store.write(batch).await.unwrap();
        let gauge = Arc::new(AgentGauge::new("x"));
        store.project(gauge.clone()).await.unwrap();
        assert_eq!(gauge.counts(), [("running", 1)].into());
        // One moves here, one away, one stops, one is removed.
        let batch = Batch::new()
            .put(DIRECTORY, "c@y", placed("x"))
            .put(DIRECTORY, "a@x", placed("y"))
            .put(AGENT_STATUS, "d@x", status(AgentState::Starting));
        store.write(batch).await.unwrap();
        assert_eq!(gauge.counts(), [("stopped", 1), ("starting", 1)].into());
        store
            .write(
                Batch::new()
                    .put(AGENT_STATUS, "d@x", status(AgentState::Running))
                    .delete(AGENT_STATUS, "c@y"),
            )
            .await
            .unwrap();
        assert_eq!(gauge.counts(), [("running", 1)].into());
        // What followed the writes is what a rebuild from the tables finds.
        let rebuilt = Arc::new(AgentGauge::new("x"));
        store.project(rebuilt.clone()).await.unwrap();
        assert_eq!(rebuilt.counts(), gauge.counts());
    }
}

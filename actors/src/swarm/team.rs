//! The swarm as a conductor sees it at one step: its spec and its running members with their
//! capabilities and free slots, and which member a piece of work goes to.

use super::spec::{SwarmSpec, Topology};
use super::Port;
use crate::agent::AgentState;
use crate::error::ApiError;

pub(crate) struct Team {
    pub(crate) spec: SwarmSpec,
    /// Running members with their capabilities and free slots.
    running: Vec<(String, Vec<String>, usize)>,
}

/// The swarm as a conductor needs it now. Its running members are read unless the swarm is
/// MESH and `members` is false: mesh work goes to the shared queue without a pick.
pub(crate) async fn team_of(api: &Port, swarm: &str, members: bool) -> Result<Team, ApiError> {
    let spec = super::records::load_spec(&api.store, swarm).await?;
    if !members && spec.topology == Topology::Mesh {
        return Ok(Team {
            spec,
            running: Vec::new(),
        });
    }
    let running = api
        .members
        .of(swarm)
        .await?
        .into_iter()
        .filter(|v| v.status.state == AgentState::Running)
        .map(|v| {
            let free = (v.spec.max_concurrent_tasks as usize).saturating_sub(v.stats.running as usize);
            (v.spec.id, v.spec.capabilities, free)
        })
        .collect();
    Ok(Team { spec, running })
}

impl Team {
    pub(crate) fn capable(&self, caps: &[String]) -> Vec<&str> {
        self.running
            .iter()
            .filter(|(_, have, _)| caps.iter().all(|c| have.contains(c)))
            .map(|(id, _, _)| id.as_str())
            .collect()
    }

    pub(crate) fn free_slots(&self) -> usize {
        self.running.iter().map(|(_, _, f)| f).sum()
    }

    /// Where one piece of work goes: the shared queue (`None`, mesh), or the member `turn`
    /// picks among the capable ones (hierarchical).
    pub(crate) fn pick(&self, topology: Topology, caps: &[String], turn: usize) -> Result<Option<String>, ApiError> {
        if topology == Topology::Mesh {
            return Ok(None);
        }
        let capable = self.capable(caps);
        if capable.is_empty() {
            return Err(ApiError::Unavailable(format!(
                "no running member of swarm {} has the capabilities {caps:?}",
                self.spec.name
            )));
        }
        Ok(Some(capable[turn % capable.len()].to_owned()))
    }
}

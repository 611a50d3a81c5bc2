//! Where an entity lives: the one place that answers "which node holds this id". Today an id
//! names its node (`<uuid>@<node>`, see [`crate::ids`]); with the replicated control plane a
//! directory of `id → node, epoch` answers here instead, and nothing else changes.

use super::Cluster;

impl Cluster {
    /// The peer that holds the entity `id`; `None` when this node does, or when the id names
    /// no node (such ids are looked up here only).
    pub fn holder(&self, id: &str) -> Option<String> {
        crate::ids::home(id)
            .filter(|home| *home != self.name())
            .map(str::to_owned)
    }

    /// Whether this node holds the entity `id`.
    pub fn holds(&self, id: &str) -> bool {
        self.holder(id).is_none()
    }
}

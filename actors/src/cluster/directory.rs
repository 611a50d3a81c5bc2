//! Where an entity lives: the one place that answers "which node holds this id". An id
//! names the node that made it (`<uuid>@<node>`, see [`crate::ids`]); once the cluster moves
//! the entity (its node was lost, or left), the replicated `directory` table says where it
//! lives now, with the placement's epoch. Every node keeps the table in memory too, reloaded
//! when a move is applied, so a request is routed without reading the store.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use troupe_runtime::store::{Store, StoreError, View};

use super::Cluster;
use crate::tables::DIRECTORY;

/// Where an entity lives now, and how many times it has moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub node: String,
    pub epoch: u64,
}

/// The placement of `id` as the view holds it: its directory entry, else the node its id
/// names at epoch 0 (`None` for an id that names no node).
pub fn placement_in(v: &View<'_>, id: &str) -> Result<Option<Placement>, StoreError> {
    if let Some(bytes) = v.get(DIRECTORY, id)? {
        return Ok(Some(troupe_runtime::codec::decode(&bytes)?));
    }
    Ok(crate::ids::home(id).map(|node| Placement {
        node: node.to_owned(),
        epoch: 0,
    }))
}

/// Whether the node `node` holds the entity `id` as the view says. Every member's store has
/// every entity's records; each node runs only what it holds. An id that names no node comes
/// from a store that had one member, and is held by whichever node reads it.
pub fn held_in(v: &View<'_>, id: &str, node: &str) -> Result<bool, StoreError> {
    Ok(placement_in(v, id)?.is_none_or(|p| p.node == node))
}

/// The directory's entries, in memory.
#[derive(Clone, Default)]
pub struct Directory {
    moved: Arc<RwLock<HashMap<String, Placement>>>,
}

impl Directory {
    /// Reads the whole table again (it holds moved entities only).
    pub async fn reload(&self, store: &Store) -> Result<(), StoreError> {
        let entries = store
            .view(|v| {
                let mut out = HashMap::new();
                v.scan(DIRECTORY, None, |id, bytes| {
                    out.insert(id.to_owned(), troupe_runtime::codec::decode::<Placement>(bytes)?);
                    Ok(true)
                })?;
                Ok(out)
            })
            .await?;
        *self.moved.write().unwrap_or_else(|p| p.into_inner()) = entries;
        Ok(())
    }

    /// The node that holds `id` now, if any is known.
    pub fn node_of(&self, id: &str) -> Option<String> {
        let moved = self.moved.read().unwrap_or_else(|p| p.into_inner());
        match moved.get(id) {
            Some(p) => Some(p.node.clone()),
            None => crate::ids::home(id).map(str::to_owned),
        }
    }
}

impl Cluster {
    /// The peer that holds the entity `id`; `None` when this node does, or when the id names
    /// no node (such ids are looked up here only).
    pub fn holder(&self, id: &str) -> Option<String> {
        self.directory().node_of(id).filter(|node| *node != self.name())
    }

    /// Whether this node holds the entity `id`.
    pub fn holds(&self, id: &str) -> bool {
        self.holder(id).is_none()
    }
}

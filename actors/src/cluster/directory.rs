//! Where an entity lives: the one place that answers "which node holds this id". An id
//! names the node that made it (`<uuid>@<node>`, see [`crate::ids`]); once the cluster moves
//! the entity (its node was lost, or left), the replicated `directory` table says where it
//! lives now, with the placement's epoch. Every node keeps the table in memory too, a
//! projection the state machine keeps (see [`troupe_runtime::store::Projection`]): a move is
//! in it as soon as it is applied here, a snapshot's moves as soon as it is installed, so a
//! request is routed without reading the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use troupe_runtime::store::{Change, Projection, Store, StoreError, Table, View};

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
    followed: Arc<AtomicBool>,
}

impl Directory {
    /// Keeps the entries true to `store`'s table from now on (once per directory).
    pub async fn follow(&self, store: &Store) -> Result<(), StoreError> {
        if self.followed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        store.project(Arc::new(Follower(self.moved.clone()))).await
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

/// The directory as the state machine keeps it.
struct Follower(Arc<RwLock<HashMap<String, Placement>>>);

impl Projection for Follower {
    fn name(&self) -> &'static str {
        "directory"
    }

    fn tables(&self) -> &'static [Table] {
        &[DIRECTORY]
    }

    fn rebuild(&self, view: &View<'_>) -> Result<(), StoreError> {
        let mut all = HashMap::new();
        view.scan(DIRECTORY, None, |id, bytes| {
            all.insert(id.to_owned(), troupe_runtime::codec::decode::<Placement>(bytes)?);
            Ok(true)
        })?;
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = all;
        Ok(())
    }

    fn apply(&self, change: &Change<'_>) -> Result<(), StoreError> {
        let mut moved = self.0.write().unwrap_or_else(|p| p.into_inner());
        for id in change.keys_of(DIRECTORY) {
            match change.view()?.get(DIRECTORY, id)? {
                Some(bytes) => moved.insert(id.to_owned(), troupe_runtime::codec::decode(&bytes)?),
                None => moved.remove(id),
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use troupe_runtime::store::{Batch, Store};

    use super::*;

    fn placed(node: &str, epoch: u64) -> Vec<u8> {
        troupe_runtime::codec::encode(&Placement {
            node: node.into(),
            epoch,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_move_routes_here_as_soon_as_its_write_is_applied_and_a_directory_built_later_holds_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
        store
            .write(Batch::new().put(DIRECTORY, "a1@x", placed("y", 1)))
            .await
            .unwrap();
        let followed = Directory::default();
        followed.follow(&store).await.unwrap();
        assert_eq!(
            followed.node_of("a1@x").as_deref(),
            Some("y"),
            "read when it starts following"
        );
        // A move that comes with no event the directory used to reload on (a task handed
        // off, a move written by a later release): routed by at once all the same.
        store
            .write(Batch::new().put(DIRECTORY, "t1@x", placed("z", 1)))
            .await
            .unwrap();
        assert_eq!(followed.node_of("t1@x").as_deref(), Some("z"));
        store
            .write(
                Batch::new()
                    .put(DIRECTORY, "a1@x", placed("z", 2))
                    .delete(DIRECTORY, "t1@x"),
            )
            .await
            .unwrap();
        assert_eq!(followed.node_of("a1@x").as_deref(), Some("z"));
        assert_eq!(
            followed.node_of("t1@x").as_deref(),
            Some("x"),
            "back to the node its id names"
        );
        let built = Directory::default();
        built.follow(&store).await.unwrap();
        let held = |d: &Directory| {
            let mut all: Vec<_> = d.moved.read().unwrap().clone().into_iter().collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            all
        };
        assert_eq!(held(&followed), held(&built));
    }
}

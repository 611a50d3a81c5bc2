//! Where an entity lives: the one place that answers "which node holds this id". An id
//! names the node that made it (`<uuid>@<node>`, see [`crate::ids`]); once the cluster moves
//! the entity (its node was lost, or left), the replicated `directory` table says where it
//! lives now, with the placement's epoch. Every node keeps the table in memory too, a
//! projection the state machine keeps (see [`troupe_runtime::store::Projection`]): a move is
//! in it as soon as it is applied here, a snapshot's moves as soon as it is installed, so a
//! request is routed without reading the store.
//!
//! The same projection tells the node what the cluster moved to it (its [`Arrival`]s): the
//! ids whose holder became this node, from each write as it is applied and from a snapshot
//! as it is installed (whose moves come with no event), never from the tables it read when
//! it started (the node's work starts from those). The moves follower
//! (`failover::follow_moves`) starts what arrived.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use tokio::sync::mpsc;

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

/// An entity the cluster moved to this node: its id, and the node that held it before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    pub id: String,
    pub from: String,
}

/// The arrivals of each write (or snapshot), in the order they were applied.
type Arrivals = Vec<Arrival>;

/// The directory's entries, in memory.
#[derive(Clone)]
pub struct Directory {
    moved: Arc<RwLock<HashMap<String, Placement>>>,
    followed: Arc<AtomicBool>,
    arrived: mpsc::UnboundedSender<Arrivals>,
    /// Taken by whoever follows the arrivals: one at a time (a restarted follower takes
    /// up what arrived meanwhile).
    arrivals: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Arrivals>>>,
}

impl Default for Directory {
    fn default() -> Self {
        let (arrived, arrivals) = mpsc::unbounded_channel();
        Self {
            moved: Default::default(),
            followed: Default::default(),
            arrived,
            arrivals: Arc::new(tokio::sync::Mutex::new(arrivals)),
        }
    }
}

impl Directory {
    /// Keeps the entries true to `store`'s table from now on (once per directory), and
    /// tells [`Self::arrivals`] what moves to the node `me` after this.
    pub async fn follow(&self, store: &Store, me: &str) -> Result<(), StoreError> {
        if self.followed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let follower = Follower {
            moved: self.moved.clone(),
            me: me.to_owned(),
            built: OnceLock::new(),
            arrived: self.arrived.clone(),
        };
        store.project(Arc::new(follower)).await
    }

    /// The arrivals, for the one that starts them (see [`Arrival`]): each item is what one
    /// write or one snapshot moved here.
    pub fn arrivals(&self) -> Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Arrivals>>> {
        self.arrivals.clone()
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
struct Follower {
    moved: Arc<RwLock<HashMap<String, Placement>>>,
    /// This node: what moves to it is an arrival.
    me: String,
    /// Set once the first build is done: what the tables held then is not an arrival.
    built: OnceLock<()>,
    arrived: mpsc::UnboundedSender<Arrivals>,
}

impl Follower {
    fn tell(&self, arrivals: Arrivals) {
        if !arrivals.is_empty() {
            let _ = self.arrived.send(arrivals);
        }
    }
}

/// The node that holds `id` by `moved`: its entry, else the node its id names.
fn holder<'a>(moved: &'a HashMap<String, Placement>, id: &'a str) -> Option<&'a str> {
    match moved.get(id) {
        Some(p) => Some(p.node.as_str()),
        None => crate::ids::home(id),
    }
}

/// Adds `id` (once: the callers pass each id once) to `out` if it moved to `me` (held by `was` before, by `is` now).
fn arrived(out: &mut Arrivals, id: &str, was: Option<&str>, is: Option<&str>, me: &str) {
    if is == Some(me) && was != Some(me) {
        out.push(Arrival {
            id: id.to_owned(),
            from: was.unwrap_or_default().to_owned(),
        });
    }
}

impl Follower {
    /// Follows one write's changes, noting in `out` what moved here.
    fn follow(&self, change: &Change<'_>, out: &mut Arrivals) -> Result<(), StoreError> {
        let mut moved = self.moved.write().unwrap_or_else(|p| p.into_inner());
        let mut seen = HashSet::new();
        // A key a write changed twice is read once: the view holds what it left.
        for id in change.keys_of(DIRECTORY).filter(|id| seen.insert(*id)) {
            let was = holder(&moved, id).map(str::to_owned);
            match change.view()?.get(DIRECTORY, id)? {
                Some(bytes) => moved.insert(id.to_owned(), troupe_runtime::codec::decode(&bytes)?),
                None => moved.remove(id),
            };
            arrived(out, id, was.as_deref(), holder(&moved, id), &self.me);
        }
        Ok(())
    }
}

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
        let before = std::mem::replace(&mut *self.moved.write().unwrap_or_else(|p| p.into_inner()), all);
        if self.built.set(()).is_err() {
            // A snapshot replaced the tables: its moves came with no event.
            let after = self.moved.read().unwrap_or_else(|p| p.into_inner());
            let mut out = Vec::new();
            let added = after.keys().filter(|id| !before.contains_key(*id));
            for id in before.keys().chain(added) {
                arrived(&mut out, id, holder(&before, id), holder(&after, id), &self.me);
            }
            drop(after);
            self.tell(out);
        }
        Ok(())
    }

    fn apply(&self, change: &Change<'_>) -> Result<(), StoreError> {
        // What moved before a failure is told all the same: the rebuild that follows a
        // failure compares with the entries as they were left.
        let mut out = Vec::new();
        let followed = self.follow(change, &mut out);
        self.tell(out);
        followed
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
        followed.follow(&store, "w").await.unwrap();
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
        built.follow(&store, "w").await.unwrap();
        let held = |d: &Directory| {
            let mut all: Vec<_> = d.moved.read().unwrap().clone().into_iter().collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            all
        };
        assert_eq!(held(&followed), held(&built));
    }

    /// What `d` was told arrived since last asked, one list per write or snapshot.
    async fn told(d: &Directory) -> Vec<Vec<(String, String)>> {
        let arrivals = d.arrivals();
        let mut arrivals = arrivals.lock().await;
        let mut out = Vec::new();
        while let Ok(a) = arrivals.try_recv() {
            out.push(a.into_iter().map(|a| (a.id, a.from)).collect());
        }
        out
    }

    fn pair(id: &str, from: &str) -> (String, String) {
        (id.to_owned(), from.to_owned())
    }

    #[tokio::test]
    async fn what_moves_here_arrives_as_each_write_is_applied_but_not_what_the_tables_held_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
        store
            .write(Batch::new().put(DIRECTORY, "held@x", placed("z", 1)))
            .await
            .unwrap();
        let on_z = Directory::default();
        on_z.follow(&store, "z").await.unwrap();
        assert!(told(&on_z).await.is_empty(), "the node's work starts from what it held");
        store
            .write(
                Batch::new()
                    .put(DIRECTORY, "a1@x", placed("z", 1))
                    .put(DIRECTORY, "a1@x", placed("z", 1))
                    .put(DIRECTORY, "t1@y", placed("z", 1))
                    .put(DIRECTORY, "elsewhere@x", placed("y", 1)),
            )
            .await
            .unwrap();
        // Moved again, here still, or away: nothing arrives.
        store
            .write(
                Batch::new()
                    .put(DIRECTORY, "a1@x", placed("z", 2))
                    .put(DIRECTORY, "held@x", placed("y", 2)),
            )
            .await
            .unwrap();
        // An entry deleted puts the id back on the node it names.
        store.write(Batch::new().delete(DIRECTORY, "t1@y")).await.unwrap();
        store
            .write(Batch::new().put(DIRECTORY, "back@z", placed("y", 1)))
            .await
            .unwrap();
        store.write(Batch::new().delete(DIRECTORY, "back@z")).await.unwrap();
        assert_eq!(
            told(&on_z).await,
            vec![vec![pair("a1@x", "x"), pair("t1@y", "y")], vec![pair("back@z", "y")]]
        );
    }

    #[tokio::test]
    async fn a_snapshot_installed_tells_what_it_moved_here_which_came_with_no_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
        store
            .write(
                Batch::new()
                    .put(DIRECTORY, "stays@x", placed("z", 1))
                    .put(DIRECTORY, "leaves@x", placed("z", 1)),
            )
            .await
            .unwrap();
        // A projection the store does not drive: the writes below reach it only as a
        // snapshot would, by a rebuild from the tables.
        let on_z = Directory::default();
        let follower = Arc::new(Follower {
            moved: on_z.moved.clone(),
            me: "z".into(),
            built: OnceLock::new(),
            arrived: on_z.arrived.clone(),
        });
        let rebuild = |f: Arc<Follower>| store.view(move |v| f.rebuild(v));
        rebuild(follower.clone()).await.unwrap();
        assert!(told(&on_z).await.is_empty());
        store
            .write(
                Batch::new()
                    .put(DIRECTORY, "leaves@x", placed("y", 2))
                    .put(DIRECTORY, "came@x", placed("z", 1))
                    .put(DIRECTORY, "came@y", placed("z", 1))
                    .put(DIRECTORY, "other@x", placed("y", 1))
                    .delete(DIRECTORY, "stays@x"),
            )
            .await
            .unwrap();
        store
            .write(Batch::new().put(DIRECTORY, "home@z", placed("y", 1)))
            .await
            .unwrap();
        rebuild(follower.clone()).await.unwrap();
        let mut told = told(&on_z).await;
        assert_eq!(told.len(), 1, "one snapshot, one list: {told:?}");
        told[0].sort();
        assert_eq!(told[0], vec![pair("came@x", "x"), pair("came@y", "y")]);
        assert_eq!(on_z.node_of("leaves@x").as_deref(), Some("y"));
        assert_eq!(on_z.node_of("home@z").as_deref(), Some("y"));
    }
}

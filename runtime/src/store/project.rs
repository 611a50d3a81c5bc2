//! Projections: what a node keeps in memory from its tables (the token cache, the directory,
//! the swarms' change notices…), all kept by one mechanism that the state machine drives.
//! A projection is built from the tables when it is registered and again each time a
//! snapshot replaces them, and follows every write in between as that write is applied,
//! before its events are fanned out. So a node that caught up from a snapshot holds the
//! same projections as one that applied the whole log, and a reader woken by an event finds
//! the projection already past it.

use std::cell::OnceCell;
use std::sync::{Arc, RwLock};

use redb::{Database, ReadTransaction, ReadableDatabase};

use super::{StoreError, Table, View};
use crate::events::Event;

/// One write just applied, as a projection is told of it.
pub struct Change<'a> {
    db: &'a Database,
    /// Begun when a projection first reads (see [`Change::view`]).
    txn: OnceCell<ReadTransaction>,
    /// The events the write applied, in order.
    pub events: &'a [Arc<Event>],
    /// The keys the write put or deleted in the tables the projection follows
    /// ([`Projection::tables`]), in order, repeats included.
    pub keys: &'a [(Table, String)],
}

impl<'a> Change<'a> {
    pub(super) fn new(db: &'a Database, events: &'a [Arc<Event>], keys: &'a [(Table, String)]) -> Self {
        Self {
            db,
            txn: OnceCell::new(),
            events,
            keys,
        }
    }

    /// The tables as the write left them, read when a projection first asks: a write that
    /// changed nothing a projection follows costs no read.
    pub fn view(&self) -> Result<View<'_>, StoreError> {
        if self.txn.get().is_none() {
            let txn = self.db.begin_read().map_err(StoreError::db)?;
            let _ = self.txn.set(txn);
        }
        Ok(View::new(self.txn.get().expect("begun just now")))
    }

    /// The keys of `table` the write changed.
    pub fn keys_of(&self, table: Table) -> impl Iterator<Item = &str> {
        self.keys
            .iter()
            .filter(move |(t, _)| *t == table)
            .map(|(_, k)| k.as_str())
    }
}

/// Something kept in memory from the tables. Both calls run on the state machine's thread
/// while it holds the tables: they update memory and wake waiters, nothing more (a write to
/// the store from here would wait for itself).
pub trait Projection: Send + Sync + 'static {
    /// A name for the logs.
    fn name(&self) -> &'static str;

    /// The tables whose changed keys [`Change::keys`] names.
    fn tables(&self) -> &'static [Table] {
        &[]
    }

    /// Reads the whole projection from the tables, in place of what it held: when it is
    /// registered, and after a snapshot replaced the tables (whose changes come with no
    /// event).
    fn rebuild(&self, view: &View<'_>) -> Result<(), StoreError>;

    /// Follows one write, just applied.
    fn apply(&self, change: &Change<'_>) -> Result<(), StoreError>;

    /// Whether what it keeps for is gone (a projection that holds its owner weakly, whose
    /// owner was dropped): it is then let go, at the next write.
    fn gone(&self) -> bool {
        false
    }
}

/// The projections registered with a store.
#[derive(Default)]
pub(super) struct Projections {
    all: RwLock<Vec<Arc<dyn Projection>>>,
    /// The union of their [`Projection::tables`], so a write records only the keys someone
    /// follows.
    followed: RwLock<Vec<Table>>,
}

impl Projections {
    pub fn add(&self, projection: Arc<dyn Projection>) {
        follow(
            &mut self.followed.write().unwrap_or_else(|p| p.into_inner()),
            projection.tables(),
        );
        self.all.write().unwrap_or_else(|p| p.into_inner()).push(projection);
    }

    /// The tables whose changed keys a write records.
    pub fn followed(&self) -> Vec<Table> {
        self.followed.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn is_empty(&self) -> bool {
        self.all.read().unwrap_or_else(|p| p.into_inner()).is_empty()
    }

    /// How many are registered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.all.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Tells each projection of a write. One that fails to follow it is rebuilt, so it is
    /// never left half a write behind. One whose owner is gone is let go instead (a
    /// gateway started again within the node's life registers its history again).
    pub fn apply(&self, change: &Change<'_>) {
        let mut gone = false;
        for projection in self.all.read().unwrap_or_else(|p| p.into_inner()).iter() {
            if projection.gone() {
                gone = true;
                continue;
            }
            if let Err(e) = projection.apply(change) {
                tracing::error!(projection = projection.name(), error = %e, "a projection could not follow a write: reading it again");
                match change.view() {
                    Ok(view) => rebuild(projection.as_ref(), &view),
                    Err(e) => {
                        tracing::error!(projection = projection.name(), error = %e, "a projection could not be read from the tables")
                    }
                }
            }
        }
        if gone {
            let mut all = self.all.write().unwrap_or_else(|p| p.into_inner());
            all.retain(|projection| !projection.gone());
            let mut followed = Vec::new();
            for projection in all.iter() {
                follow(&mut followed, projection.tables());
            }
            *self.followed.write().unwrap_or_else(|p| p.into_inner()) = followed;
        }
    }

    /// Rebuilds every projection from `view`.
    pub fn rebuild(&self, view: &View<'_>) {
        for projection in self.all.read().unwrap_or_else(|p| p.into_inner()).iter() {
            if !projection.gone() {
                rebuild(projection.as_ref(), view);
            }
        }
    }
}

/// Adds `tables` to `followed`, each once.
fn follow(followed: &mut Vec<Table>, tables: &[Table]) {
    for table in tables {
        if !followed.contains(table) {
            followed.push(*table);
        }
    }
}

pub(super) fn rebuild(projection: &dyn Projection, view: &View<'_>) {
    if let Err(e) = projection.rebuild(view) {
        tracing::error!(projection = projection.name(), error = %e, "a projection could not be read from the tables");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Weak};

    use super::{Change, Projection, Projections};
    use crate::store::{StoreError, Table, View};

    const KEYS: Table = Table::new("keys");

    /// Counts the writes it is told of, for as long as its owner lives.
    struct Counter {
        owner: Weak<()>,
        applied: Arc<AtomicUsize>,
    }

    impl Projection for Counter {
        fn name(&self) -> &'static str {
            "counter"
        }

        fn tables(&self) -> &'static [Table] {
            &[KEYS]
        }

        fn rebuild(&self, _: &View<'_>) -> Result<(), StoreError> {
            Ok(())
        }

        fn apply(&self, _: &Change<'_>) -> Result<(), StoreError> {
            self.applied.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }

        fn gone(&self) -> bool {
            self.owner.strong_count() == 0
        }
    }

    #[test]
    fn a_projection_whose_owner_is_gone_is_let_go_at_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("db")).unwrap();
        let projections = Projections::default();
        let (kept, dropped) = (Arc::new(()), Arc::new(()));
        let counter = |owner: &Arc<()>| {
            let applied = Arc::new(AtomicUsize::new(0));
            let projection = Counter {
                owner: Arc::downgrade(owner),
                applied: applied.clone(),
            };
            (Arc::new(projection), applied)
        };
        let (first, first_applied) = counter(&kept);
        let (second, second_applied) = counter(&dropped);
        projections.add(first);
        projections.add(second);
        let write = || projections.apply(&Change::new(&db, &[], &[]));
        write();
        assert_eq!(projections.len(), 2);
        // A gateway started again registers its history again; the old one's owner is gone.
        drop(dropped);
        write();
        assert_eq!(projections.len(), 1, "the one whose owner went is let go");
        assert_eq!(first_applied.load(Ordering::SeqCst), 2);
        assert_eq!(second_applied.load(Ordering::SeqCst), 1, "not told once its owner went");
        assert_eq!(projections.followed(), vec![KEYS], "the tables the one left follows");
        drop(kept);
        write();
        assert!(projections.is_empty());
        assert!(projections.followed().is_empty(), "no table is followed for nobody");
    }
}

//! Projections across members: one that caught up from a snapshot holds what one that
//! applied the whole log holds, and a projection is past a write before its event is out.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::{three_voters, Router, THINGS};
use crate::events::NewEvent;
use crate::store::{Batch, Change, Projection, Store, StoreError, Table, View};

/// The `things` table, in memory.
#[derive(Default)]
struct Mirror(Mutex<BTreeMap<String, Vec<u8>>>);

impl Mirror {
    fn held(&self) -> BTreeMap<String, Vec<u8>> {
        self.0.lock().unwrap().clone()
    }
}

impl Projection for Mirror {
    fn name(&self) -> &'static str {
        "mirror"
    }

    fn tables(&self) -> &'static [Table] {
        &[THINGS]
    }

    fn rebuild(&self, view: &View<'_>) -> Result<(), StoreError> {
        let mut all = BTreeMap::new();
        view.scan(THINGS, None, |k, v| {
            all.insert(k.to_owned(), v.to_vec());
            Ok(true)
        })?;
        *self.0.lock().unwrap() = all;
        Ok(())
    }

    fn apply(&self, change: &Change<'_>) -> Result<(), StoreError> {
        let mut held = self.0.lock().unwrap();
        for key in change.keys_of(THINGS) {
            match change.view()?.get(THINGS, key)? {
                Some(v) => held.insert(key.to_owned(), v),
                None => held.remove(key),
            };
        }
        Ok(())
    }
}

async fn mirror(store: &Store) -> Arc<Mirror> {
    let m = Arc::new(Mirror::default());
    store.project(m.clone()).await.unwrap();
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_is_past_a_write_before_the_writes_event_is_out_and_equals_one_built_from_the_tables() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
    store.write(Batch::new().put(THINGS, "before", vec![0])).await.unwrap();
    let followed = mirror(&store).await;
    assert_eq!(followed.held().len(), 1, "built from the tables when registered");
    let mut live = store.live();
    for i in 0..20u8 {
        let mut batch = Batch::new().put(THINGS, format!("k{i:02}"), vec![i]);
        if i % 3 == 0 && i > 0 {
            batch = batch.delete(THINGS, format!("k{:02}", i / 2));
        }
        // Not awaited: the event is all the reader waits for.
        let _ticket = store.submit(batch.event(NewEvent::new("THING", Some(format!("k{i:02}")), json!(null))));
        let event = live.recv().await.unwrap();
        assert_eq!(event.subject.as_deref(), Some(format!("k{i:02}").as_str()));
        // Woken by the event, a reader finds the projection past the write.
        assert!(
            followed.held().contains_key(&format!("k{i:02}")),
            "k{i:02} is not in the projection yet"
        );
    }
    assert_eq!(followed.held(), mirror(&store).await.held());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_caught_up_from_a_snapshot_holds_the_projection_of_one_that_applied_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let [a, b, c] = three_voters(&router, &dir).await;
    for i in 0..10u8 {
        a.write(Batch::new().put(THINGS, format!("k{i:02}"), vec![i]))
            .await
            .unwrap();
    }
    let (on_b, on_c) = (mirror(&b).await, mirror(&c).await);
    super::caught_up(&b, super::last_log(&a)).await;
    // b misses puts, changes and deletes, and the log that held them is purged.
    router.cut.lock().unwrap().insert("b".into());
    for i in 5..15u8 {
        a.write(Batch::new().put(THINGS, format!("k{i:02}"), vec![i, i]))
            .await
            .unwrap();
    }
    a.write(Batch::new().delete(THINGS, "k01").delete(THINGS, "k07"))
        .await
        .unwrap();
    let index = purge_past(&a, &b).await;
    router.cut.lock().unwrap().remove("b");
    installed_a_snapshot(&b, index).await;
    let last = super::last_log(&a);
    super::caught_up(&b, last).await;
    super::caught_up(&c, last).await;
    assert!(!on_b.held().contains_key("k07"), "a delete b missed: {:?}", on_b.held());
    assert_eq!(on_b.held().get("k12"), Some(&vec![12, 12]));
    assert_eq!(
        on_b.held(),
        on_c.held(),
        "caught up from a snapshot against the whole log"
    );
}

/// Compacts the leader `a` until its purge passes everything the cut-off `b` holds (it may
/// lag its own log by an entry or two, and compacts only what it applied), so that `b` can
/// catch up only from a snapshot; the purged index.
pub(super) async fn purge_past(a: &Store, b: &Store) -> u64 {
    let b_holds = super::last_log(b);
    loop {
        a.compact().await.unwrap();
        let purged = a.raft().metrics().borrow().purged.map(|id| id.index).unwrap();
        if purged > b_holds {
            return purged;
        }
        let last = super::last_log(a);
        super::caught_up(a, last).await;
    }
}

/// Waits until `store` has installed a snapshot that covers `index`.
pub(super) async fn installed_a_snapshot(store: &Store, index: u64) {
    store
        .raft()
        .wait(Some(std::time::Duration::from_secs(20)))
        .metrics(|m| m.snapshot.is_some_and(|s| s.index >= index), "a snapshot installed")
        .await
        .unwrap();
}

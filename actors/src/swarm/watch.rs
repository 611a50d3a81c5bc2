//! Wakes the swarm conductors waiting on a task or a member when a write about it is
//! applied: a projection the state machine drives (see
//! [`troupe_runtime::store::Projection`]), so no wake-up depends on a node having seen an
//! event live.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use troupe_runtime::store::{Change, Projection, Store, StoreError, Table, View};

/// Wakes those waiting on an entity (a task, a member) when a write with an event about it
/// is applied. One projection serves them all, so a thousand conductors cost one lookup per
/// event, not a thousand subscriptions.
#[derive(Clone, Default)]
pub struct Watch(Arc<WatchInner>);

#[derive(Default)]
struct WatchInner {
    subjects: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
}

/// A registration: while held, its notify is woken by each write with an event about the
/// subject.
pub(crate) struct Watching {
    watch: Watch,
    subject: String,
    pub(crate) notify: Arc<Notify>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        let mut subjects = self.watch.0.subjects.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, n)) = subjects.get_mut(&self.subject) {
            *n -= 1;
            if *n == 0 {
                subjects.remove(&self.subject);
            }
        }
    }
}

impl Watch {
    /// Follows `store`'s writes from now on (once, when the node starts).
    pub async fn follow(&self, store: &Store) -> Result<(), StoreError> {
        store.project(Arc::new(Waker(Arc::downgrade(&self.0)))).await
    }

    /// Follows `store`'s writes to `tables` from now on: the subject of a key is what comes
    /// before its first `/` (an agent's log lines, `{agent}/{seq}`, wake those watching the
    /// agent).
    pub async fn follow_keys(&self, store: &Store, tables: &'static [Table]) -> Result<(), StoreError> {
        store
            .project(Arc::new(KeyWaker {
                inner: Arc::downgrade(&self.0),
                tables,
            }))
            .await
    }

    /// Registers for the writes about `subject`: those waiting on the returned notify are
    /// woken by each one applied (and by a snapshot installed, whose changes come with no
    /// event).
    pub(crate) fn watch(&self, subject: &str) -> Watching {
        let mut subjects = self.0.subjects.lock().unwrap_or_else(|p| p.into_inner());
        let entry = subjects
            .entry(subject.to_owned())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Watching {
            watch: self.clone(),
            subject: subject.to_owned(),
            notify: entry.0.clone(),
        }
    }
}

/// The watch as the state machine drives it.
struct Waker(std::sync::Weak<WatchInner>);

impl WatchInner {
    fn wake_all(&self) {
        let subjects = self.subjects.lock().unwrap_or_else(|p| p.into_inner());
        subjects.values().for_each(|(n, _)| n.notify_waiters());
    }

    fn wake<'a>(&self, about: impl Iterator<Item = &'a str>) {
        let subjects = self.subjects.lock().unwrap_or_else(|p| p.into_inner());
        for subject in about {
            if let Some((notify, _)) = subjects.get(subject) {
                notify.notify_waiters();
            }
        }
    }
}

impl Projection for Waker {
    fn name(&self) -> &'static str {
        "swarm watch"
    }

    /// A snapshot replaced the tables: everyone looks again.
    fn rebuild(&self, _: &View<'_>) -> Result<(), StoreError> {
        if let Some(inner) = self.0.upgrade() {
            inner.wake_all();
        }
        Ok(())
    }

    fn apply(&self, change: &Change<'_>) -> Result<(), StoreError> {
        if change.events.is_empty() {
            return Ok(());
        }
        if let Some(inner) = self.0.upgrade() {
            inner.wake(change.events.iter().filter_map(|e| e.subject.as_deref()));
        }
        Ok(())
    }

    fn gone(&self) -> bool {
        self.0.strong_count() == 0
    }
}

/// The watch of some tables' keys, as the state machine drives it.
struct KeyWaker {
    inner: std::sync::Weak<WatchInner>,
    tables: &'static [Table],
}

impl Projection for KeyWaker {
    fn name(&self) -> &'static str {
        "key watch"
    }

    fn tables(&self) -> &'static [Table] {
        self.tables
    }

    fn rebuild(&self, _: &View<'_>) -> Result<(), StoreError> {
        if let Some(inner) = self.inner.upgrade() {
            inner.wake_all();
        }
        Ok(())
    }

    fn apply(&self, change: &Change<'_>) -> Result<(), StoreError> {
        if change.keys.is_empty() {
            return Ok(());
        }
        if let Some(inner) = self.inner.upgrade() {
            inner.wake(change.keys.iter().map(|(_, k)| k.split('/').next().unwrap_or(k)));
        }
        Ok(())
    }

    fn gone(&self) -> bool {
        self.inner.strong_count() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use troupe_runtime::events::NewEvent;
    use troupe_runtime::store::{Batch, Store};

    use super::*;

    #[tokio::test]
    async fn a_write_about_a_subject_wakes_those_watching_it_and_no_one_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
        let watch = Watch::default();
        watch.follow(&store).await.unwrap();
        let (task, other) = (watch.watch("t1"), watch.watch("t2"));
        let (task_notify, other_notify) = (task.notify.clone(), other.notify.clone());
        let woken = task_notify.notified();
        let not_woken = other_notify.notified();
        tokio::pin!(woken, not_woken);
        woken.as_mut().enable();
        not_woken.as_mut().enable();
        let about = |s: &str| NewEvent::new("TASK_SUCCEEDED", Some(s.to_owned()), serde_json::json!({}));
        store.write(Batch::new().event(about("t1"))).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), woken)
            .await
            .expect("woken by the write");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), not_woken)
                .await
                .is_err(),
            "t2's watcher was woken by a write about t1"
        );
        // Given back when the last registration goes.
        drop((task, other));
        assert!(watch.0.subjects.lock().unwrap().is_empty());
    }
}

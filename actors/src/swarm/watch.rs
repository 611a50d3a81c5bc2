//! One pump of the node's live events that wakes the swarm conductors waiting on a task or a
//! member.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::Notify;

/// Wakes those waiting on an entity (a task, a member) when an event about it is committed.
/// One pump reads the node's live events for all of them, so a thousand conductors cost one
/// subscription, not a thousand.
#[derive(Clone, Default)]
pub struct Watch(Arc<WatchInner>);

#[derive(Default)]
struct WatchInner {
    subjects: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
    pump: OnceLock<()>,
}

/// A registration: while held, its notify is woken by each event about the subject.
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
    pub(crate) fn watch(&self, store: &troupe_runtime::store::Store, subject: &str) -> Watching {
        self.0.pump.get_or_init(|| {
            let mut live = store.live();
            let mut replacements = store.replacements();
            let inner = Arc::downgrade(&self.0);
            tokio::spawn(async move {
                loop {
                    let event = tokio::select! {
                        event = live.recv() => event,
                        // A snapshot brought changes without their events: everyone looks again.
                        replaced = replacements.changed() => match replaced {
                            Ok(()) => Err(tokio::sync::broadcast::error::RecvError::Lagged(0)),
                            Err(_) => return,
                        },
                    };
                    let Some(inner) = inner.upgrade() else { return };
                    let subjects = inner.subjects.lock().unwrap_or_else(|p| p.into_inner());
                    match event {
                        Ok(e) => {
                            if let Some((n, _)) = e.subject.as_deref().and_then(|s| subjects.get(s)) {
                                n.notify_waiters();
                            }
                        }
                        // Fell behind: everyone looks again.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            subjects.values().for_each(|(n, _)| n.notify_waiters())
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
        });
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

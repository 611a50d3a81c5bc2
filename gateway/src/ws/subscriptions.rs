//! The subscriptions running on one connection, by the id the client gave each.
//!
//! A client may use an id again once its subscription ended, and it may end one (with
//! `complete`) while that subscription's last output still waits in the connection's queue.
//! Each subscription therefore also gets a generation, which its output carries: output of an
//! earlier subscription under the same id neither reaches nor ends the later one.

use std::collections::HashMap;

use tokio::task::JoinHandle;

/// Which subscription a piece of output comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub id: String,
    generation: u64,
}

struct Running {
    generation: u64,
    task: JoinHandle<()>,
}

#[derive(Default)]
pub struct Subscriptions {
    running: HashMap<String, Running>,
    next_generation: u64,
}

impl Subscriptions {
    pub fn contains(&self, id: &str) -> bool {
        self.running.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Starts a subscription under `id`, which must be free: `spawn` gets the tag its output
    /// must carry and returns the task that produces it.
    pub fn start(&mut self, id: String, spawn: impl FnOnce(Tag) -> JoinHandle<()>) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let task = spawn(Tag {
            id: id.clone(),
            generation,
        });
        self.running.insert(id, Running { generation, task });
    }

    /// The client ended the subscription under `id`, if any is running.
    pub fn cancel(&mut self, id: &str) {
        if let Some(running) = self.running.remove(id) {
            running.task.abort();
        }
    }

    /// Whether output with this tag belongs to a subscription still running.
    pub fn is_current(&self, tag: &Tag) -> bool {
        self.running
            .get(&tag.id)
            .is_some_and(|r| r.generation == tag.generation)
    }

    /// The subscription with this tag sent its last output (`error` or `complete`): it is
    /// forgotten, and the output goes out, only if it is still the one under its id.
    pub fn ended(&mut self, tag: &Tag) -> bool {
        let current = self.is_current(tag);
        if current {
            self.running.remove(&tag.id);
        }
        current
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        for (_, running) in self.running.drain() {
            running.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(_: Tag) -> JoinHandle<()> {
        tokio::spawn(std::future::pending())
    }

    #[tokio::test]
    async fn the_late_end_of_a_completed_subscription_leaves_a_new_one_under_its_id_alone() {
        let mut subscriptions = Subscriptions::default();
        let mut first = None;
        subscriptions.start("1".into(), |tag| {
            first = Some(tag.clone());
            idle(tag)
        });
        let first = first.unwrap();
        // The client completes it while its `complete` waits in the queue, then reuses the id.
        subscriptions.cancel("1");
        let mut second = None;
        subscriptions.start("1".into(), |tag| {
            second = Some(tag.clone());
            idle(tag)
        });
        let second = second.unwrap();

        assert!(!subscriptions.is_current(&first), "the first one's output would go out");
        assert!(!subscriptions.ended(&first), "the first one's end would go out");
        assert!(subscriptions.contains("1"), "the first one's end detached the second");
        assert!(subscriptions.is_current(&second));
        assert!(subscriptions.ended(&second));
        assert!(!subscriptions.contains("1"));
        assert_eq!(subscriptions.len(), 0);
    }

    #[tokio::test]
    async fn cancel_stops_the_subscriptions_task() {
        let mut subscriptions = Subscriptions::default();
        let (keep, mut watch) = tokio::sync::mpsc::channel::<()>(1);
        subscriptions.start("1".into(), move |_| {
            tokio::spawn(async move {
                let _keep = keep;
                std::future::pending::<()>().await;
            })
        });
        subscriptions.cancel("1");
        // The aborted task drops its sender: the channel closes.
        assert!(watch.recv().await.is_none());
        assert!(!subscriptions.contains("1"));
    }
}

//! A stopping node's answers to its peers: the domains' service actors stop taking requests
//! once its work has drained, and the node waits for those under way before its link goes.
//!
//! Without this, a request a peer sent in the node's last moments was lost with its link:
//! the peer's client read "went away before it answered; it may have acted", for a submit
//! the stopping node may never have seen (two such errors a SIGTERM with 64 clients). Now
//! a request that comes after [`PeerCalls::close`] is answered at once with the refusal of a
//! stopping node (nothing done: a submit is queued elsewhere), and the service actors leave
//! their process groups, so peers soon stop sending them anything.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// The peers' requests a node's domain services are answering, and whether they take more.
#[derive(Clone, Default)]
pub struct PeerCalls(Arc<Inner>);

#[derive(Default)]
struct Inner {
    closed: AtomicBool,
    under_way: AtomicUsize,
    /// Told when the last request under way is answered.
    idle: Notify,
    /// Told when the services close.
    closing: Notify,
}

/// A request taken: counted under way until dropped.
pub struct Taken(Arc<Inner>);

impl Drop for Taken {
    fn drop(&mut self) {
        if self.0.under_way.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl PeerCalls {
    /// Takes a request, or nothing once closed (the caller answers the refusal).
    pub fn take(&self) -> Option<Taken> {
        // Counted before the look, so a close that waits for the count sees it.
        self.0.under_way.fetch_add(1, Ordering::SeqCst);
        let taken = Taken(self.0.clone());
        (!self.0.closed.load(Ordering::SeqCst)).then_some(taken)
    }

    /// Takes no more requests from now on.
    pub fn close(&self) {
        self.0.closed.store(true, Ordering::SeqCst);
        self.0.closing.notify_waiters();
    }

    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::SeqCst)
    }

    /// Resolves once closed.
    pub async fn closed(&self) {
        let notified = self.0.closing.notified();
        if self.is_closed() {
            return;
        }
        notified.await;
    }

    /// How many requests are under way now.
    pub fn under_way(&self) -> usize {
        self.0.under_way.load(Ordering::SeqCst)
    }

    /// Waits, at most `within`, until every request taken has been answered; how many are
    /// still under way then.
    pub async fn settled(&self, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let idle = self.0.idle.notified();
            let left = self.0.under_way.load(Ordering::SeqCst);
            if left == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.0.under_way.load(Ordering::SeqCst);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_close_refuses_what_comes_after_and_waits_for_what_came_before() {
        let calls = PeerCalls::default();
        let before = calls.take().expect("open");
        calls.close();
        assert!(calls.take().is_none(), "a request after the close is refused");
        // Bounded while one is under way…
        assert_eq!(calls.settled(Duration::from_secs(1)).await, 1);
        // …and settled once it is answered.
        let waiting = tokio::spawn({
            let calls = calls.clone();
            async move { calls.settled(Duration::from_secs(60)).await }
        });
        tokio::task::yield_now().await;
        drop(before);
        assert_eq!(waiting.await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_resolves_for_a_close_before_or_after_the_wait() {
        let calls = PeerCalls::default();
        let waiting = tokio::spawn({
            let calls = calls.clone();
            async move { calls.closed().await }
        });
        tokio::task::yield_now().await;
        calls.close();
        waiting.await.unwrap();
        calls.closed().await;
    }
}

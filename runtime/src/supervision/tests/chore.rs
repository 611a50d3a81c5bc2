//! A chore under a supervisor: a loop that panics is restarted, and stopping the tree ends
//! the loop.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::Actor;
use tokio::sync::mpsc;

use super::super::*;
use super::Harness;

/// Sets its flag when dropped: the loop that holds it ended.
struct Ended(Arc<AtomicBool>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_chore_that_panics_is_restarted_by_its_supervisor_and_stopping_the_tree_ends_its_loop() {
    let harness = Harness::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicBool::new(false));
    let (running, mut told) = mpsc::unbounded_channel::<usize>();
    let chore = {
        let (runs, ended) = (runs.clone(), ended.clone());
        Chore::new("purge", move || {
            let run = runs.fetch_add(1, Ordering::SeqCst);
            let (running, ended) = (running.clone(), ended.clone());
            Box::pin(async move {
                let _guard = Ended(ended);
                let _ = running.send(run);
                if run == 0 {
                    panic!("the first run of the chore breaks");
                }
                std::future::pending::<()>().await;
            })
        })
    };
    let args = harness.args(Strategy::OneForOne, Some(3), vec![chore]);
    let (root, done) = Actor::spawn(None, Supervisor, args).await.unwrap();
    let within = Duration::from_secs(10);
    let first = tokio::time::timeout(within, told.recv()).await.unwrap();
    assert_eq!(first, Some(0));
    let second = tokio::time::timeout(within, told.recv())
        .await
        .expect("restarted after its panic");
    assert_eq!(second, Some(1));
    // The lifecycle records are submitted, not awaited: flushed, they are all there.
    harness.store.flush().await.unwrap();
    let kinds: Vec<String> = harness
        .store
        .events_after(0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.subject.as_deref() == Some("purge"))
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&"SERVICE_FAILED".to_owned()), "{kinds:?}");
    ended.store(false, Ordering::SeqCst);
    root.stop(None);
    done.await.unwrap();
    // The stopped chore's loop is dropped with it, not left running.
    let deadline = tokio::time::Instant::now() + within;
    while !ended.load(Ordering::SeqCst) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the loop still runs after its chore stopped"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

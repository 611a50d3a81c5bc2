use super::*;
use crate::store::Batch;
use futures::StreamExt;
use serde_json::json;
use std::time::Duration;

async fn emit(store: &Store, kind: &str) -> u64 {
    store
        .write(Batch::new().event(NewEvent::new(kind, Some("s".into()), json!({}))))
        .await
        .unwrap()[0]
}

#[tokio::test]
async fn a_subscription_replays_after_its_cursor_then_streams_live_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    for _ in 0..5 {
        emit(&store, "OLD").await;
    }
    let mut sub = Box::pin(subscribe(&store, 2, EventFilter::default()));
    for _ in 0..3 {
        emit(&store, "NEW").await;
    }
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let e = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push((e.seq, e.kind.clone()));
    }
    let seqs: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![3, 4, 5, 6, 7, 8]);
    assert_eq!(seen[3].1, "NEW");
}

#[tokio::test]
async fn a_filter_keeps_only_matching_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    emit(&store, "A").await;
    emit(&store, "B").await;
    emit(&store, "A").await;
    let filter = EventFilter {
        kinds: Some(["B".to_string()].into()),
        subject: None,
    };
    let mut sub = Box::pin(subscribe(&store, 0, filter));
    let e = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((e.seq, e.kind.as_str()), (2, "B"));
    let seq = emit(&store, "B").await;
    let e = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(e.seq, seq);
}

#[tokio::test]
async fn a_subscriber_that_lags_behind_the_fan_out_catches_up_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let mut sub = Box::pin(subscribe(&store, 0, EventFilter::default()));
    // More events than the live channel holds, none read meanwhile.
    let tickets: Vec<_> = (0..6000)
        .map(|_| store.submit(Batch::new().event(NewEvent::new("X", None, json!(null)))))
        .collect();
    for t in tickets {
        t.durable().await.unwrap();
    }
    for expected in 1..=6000u64 {
        let e = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(e.seq, expected);
    }
}

#[tokio::test]
async fn a_cursor_older_than_the_kept_log_ends_the_stream_with_one_error() {
    let dir = tempfile::tempdir().unwrap();
    let options = crate::store::StoreOptions {
        event_retention: 5,
        ..Default::default()
    };
    let store = Store::open_with(&dir.path().join("db"), options).unwrap();
    for _ in 0..20 {
        emit(&store, "E").await;
    }
    let mut sub = Box::pin(subscribe(&store, 0, EventFilter::default()));
    let first = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(first, Err(StoreError::Compacted { after: 0, .. })),
        "{first:?}"
    );
    let then = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap();
    assert!(then.is_none(), "the stream goes on after its error: {then:?}");
}

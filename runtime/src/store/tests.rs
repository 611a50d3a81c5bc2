use super::*;
use crate::events::NewEvent;
use serde_json::json;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    (dir, store)
}

#[tokio::test]
async fn a_write_is_readable_once_acknowledged() {
    let (_d, store) = open();
    store
        .write(Batch::new().put(Table::Agents, "a1", b"x".to_vec()))
        .await
        .unwrap();
    assert_eq!(store.get(Table::Agents, "a1").await.unwrap(), Some(b"x".to_vec()));
    store.write(Batch::new().delete(Table::Agents, "a1")).await.unwrap();
    assert_eq!(store.get(Table::Agents, "a1").await.unwrap(), None);
}

#[tokio::test]
async fn concurrent_writers_get_distinct_increasing_sequence_numbers() {
    let (_d, store) = open();
    let tickets: Vec<_> = (0..500)
        .map(|i| store.submit(Batch::new().event(NewEvent::new("T", Some(format!("s{i}")), json!({"i": i})))))
        .collect();
    let mut seqs = Vec::new();
    for t in tickets {
        seqs.extend(t.durable().await.unwrap());
    }
    // Submission order is commit order, so the numbers come back sorted and dense.
    assert_eq!(seqs, (1..=500).collect::<Vec<u64>>());
    let log = store.events_after(0, 1000).await.unwrap();
    assert_eq!(log.len(), 500);
    assert_eq!(log[7].data, json!({"i": 7}));
}

#[tokio::test]
async fn sequence_numbers_continue_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let store = Store::open(&path).unwrap();
        store
            .write(Batch::new().event(NewEvent::new("A", None, json!(null))))
            .await
            .unwrap();
    }
    // The writer thread holds the database until its channel closes; give it a moment.
    let store = loop {
        match Store::open(&path) {
            Ok(s) => break s,
            Err(StoreError::Locked) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            Err(e) => panic!("{e}"),
        }
    };
    let seqs = store
        .write(Batch::new().event(NewEvent::new("B", None, json!(null))))
        .await
        .unwrap();
    assert_eq!(seqs, vec![2]);
}

#[tokio::test]
async fn scan_pages_in_key_order_and_filters() {
    let (_d, store) = open();
    let mut batch = Batch::new();
    for k in ["c", "a", "b", "d"] {
        batch = batch.put(Table::Tasks, k, k.as_bytes().to_vec());
    }
    store.write(batch).await.unwrap();
    let page = store.scan(Table::Tasks, None, 2, |_| true).await.unwrap();
    assert_eq!(page.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    let page = store
        .scan(Table::Tasks, Some("b".into()), 10, |v| v != b"c")
        .await
        .unwrap();
    assert_eq!(page.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["d"]);
}

#[tokio::test]
async fn the_log_keeps_the_newest_events_and_a_too_old_cursor_is_an_error_not_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(&dir.path().join("db"), StoreOptions { event_retention: 10 }).unwrap();
    for i in 0..30 {
        store
            .write(Batch::new().event(NewEvent::new("E", None, json!(i))))
            .await
            .unwrap();
    }
    let err = store.events_after(0, 100).await.unwrap_err();
    let StoreError::Compacted { after: 0, oldest } = err else {
        panic!("{err}")
    };
    assert!((19..=21).contains(&oldest), "oldest kept {oldest}");
    let tail = store.events_after(oldest - 1, 100).await.unwrap();
    assert_eq!(tail.first().map(|e| e.seq), Some(oldest));
    assert_eq!(tail.last().map(|e| e.seq), Some(30));
    assert!(tail.len() <= 12, "kept {}", tail.len());
}

#[test]
fn trimming_waits_for_a_tenth_over_the_limit_and_keeps_exactly_the_limit() {
    let log = |oldest, next_seq| Log {
        oldest,
        next_seq,
        retention: 100,
    };
    assert_eq!(log(1, 111).cut(), None);
    assert_eq!(log(1, 112).cut(), Some(12));
    assert_eq!(
        Log {
            oldest: 1,
            next_seq: 10_000,
            retention: 0
        }
        .cut(),
        None
    );
}

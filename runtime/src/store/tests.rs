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

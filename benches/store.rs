//! Durable write rate of the store: one fsync per commit, so concurrent writers are folded
//! into group commits. Run: `cargo bench --bench store`

use std::time::Instant;

use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{Batch, Store, Table};

const TASKS: Table = Table::new("tasks");

mod common;

/// A batch shaped like a task submission: the record and its event.
fn task_batch(i: u64) -> Batch {
    Batch::new()
        .put(TASKS, format!("task-{i:012}"), vec![7u8; 200])
        .event(NewEvent::new(
            "TASK_QUEUED",
            Some(format!("task-{i:012}")),
            json!({"capability": "echo"}),
        ))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("bench.redb")).expect("store");

    const SEQUENTIAL: u64 = 200;
    let t = Instant::now();
    for i in 0..SEQUENTIAL {
        store.write(task_batch(i)).await.expect("write");
    }
    let secs = t.elapsed().as_secs_f64();
    common::report("sequential durable writes", SEQUENTIAL as f64 / secs, "writes/s");
    common::report("  latency per durable write", secs / SEQUENTIAL as f64 * 1e3, "ms");

    for writers in [8u64, 64, 512] {
        let per = 100_000 / writers;
        let t = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let s = store.clone();
                tokio::spawn(async move {
                    for i in 0..per {
                        s.write(task_batch(1_000_000 * (w + 1) + i)).await.expect("write");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("writer");
        }
        let rate = (per * writers) as f64 / t.elapsed().as_secs_f64();
        common::report(
            &format!("durable writes, {writers} concurrent writers"),
            rate,
            "writes/s",
        );
    }
}

//! Task round trip through the scheduler, end to end and durable: submit (committed before
//! the ack), dispatch, run on an in-process builtin echo agent, result committed. Concurrent
//! submitters; the clock stops when the last TASK_SUCCEEDED is committed.
//! Run: `cargo bench --bench scheduler`

use std::time::{Duration, Instant};

use serde_json::json;
use troupe_actors::task::SubmitTaskRequest;

mod common;

const TASKS: usize = 40_000;
const SUBMITTERS: usize = 64;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    for agents in [1usize, 8, 64] {
        let (_dir, node) = common::node().await;
        let api = node.api().clone();
        for i in 0..agents {
            api.agents()
                .spawn(common::echo(format!("echo-{i}"), 16), None)
                .await
                .expect("spawn");
        }
        let start_seq = api.store().last_seq().await.expect("seq");
        let t = Instant::now();
        let per = TASKS / SUBMITTERS;
        let submitters: Vec<_> = (0..SUBMITTERS)
            .map(|s| {
                let api = api.clone();
                tokio::spawn(async move {
                    for i in 0..per {
                        let req = SubmitTaskRequest::to_capability("echo", json!({ "submitter": s, "i": i }));
                        api.tasks().submit(req, None).await.expect("submit");
                    }
                })
            })
            .collect();
        for s in submitters {
            s.await.expect("submitter");
        }
        let submitted = t.elapsed();
        common::await_events(
            &api,
            start_seq,
            "TASK_SUCCEEDED",
            per * SUBMITTERS,
            Duration::from_secs(300),
        )
        .await;
        let secs = t.elapsed().as_secs_f64();
        let n = (per * SUBMITTERS) as f64;
        common::report(&format!("tasks end to end, {agents} echo agents"), n / secs, "tasks/s");
        common::report(
            "  durable submits (acknowledged)",
            n / submitted.as_secs_f64(),
            "submits/s",
        );
        node.shutdown(Duration::from_secs(5)).await;
    }
}

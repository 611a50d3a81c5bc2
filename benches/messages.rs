//! Messages between agents, in an embedded node: request/response round trips to builtin echo
//! agents (64 concurrent senders), and a topic published to 1,000 subscribed agents, timed
//! until every one has answered. Then 100,000 builtin tasks across 1,000 agents end to end,
//! with each task's submit-to-done latency.
//! Run: `cargo bench --bench messages`

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use troupe_actors::agent::{BackendSpec, BuiltinKind, SpawnAgentRequest};
use troupe_actors::task::{Priority, SubmitTaskRequest};

mod common;

const ROUND_TRIPS: usize = 50_000;
const SENDERS: usize = 64;
const SUBSCRIBERS: usize = 1_000;
const TASKS: usize = 100_000;

fn echo(name: String, topics: Vec<String>) -> SpawnAgentRequest {
    SpawnAgentRequest {
        capabilities: vec!["echo".into()],
        max_concurrent_tasks: Some(4),
        topics,
        ..SpawnAgentRequest::new(name, BackendSpec::Builtin(BuiltinKind::Echo))
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (_dir, node) = common::node().await;
    let api = node.api().clone();
    let mut ids = Vec::new();
    for i in 0..SUBSCRIBERS {
        let view = api
            .agents()
            .spawn(echo(format!("echo-{i}"), vec!["bench.#".into()]), None)
            .await
            .expect("spawn");
        ids.push(view.spec.id);
    }
    let ids = Arc::new(ids);

    // Round trips.
    let started = Instant::now();
    let latencies = Arc::new(tokio::sync::Mutex::new(Histogram::<u64>::new(3).expect("histogram")));
    let per = ROUND_TRIPS / SENDERS;
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (api, ids, latencies) = (api.clone(), ids.clone(), latencies.clone());
            tokio::spawn(async move {
                let mut mine = Histogram::<u64>::new(3).expect("histogram");
                for i in 0..per {
                    let to = &ids[(s * per + i) % ids.len()];
                    let t = Instant::now();
                    api.messages()
                        .send_message(to, None, json!({ "i": i }), Priority::Normal, Duration::from_secs(30))
                        .await
                        .expect("reply");
                    mine.record(t.elapsed().as_micros() as u64).expect("record");
                }
                latencies.lock().await.add(mine).expect("merge");
            })
        })
        .collect();
    for s in senders {
        s.await.expect("sender");
    }
    let took = started.elapsed();
    let h = latencies.lock().await;
    println!("sendMessage round trips, {SENDERS} senders over {SUBSCRIBERS} echo agents");
    println!("  {:>10.0} round trips/s", (per * SENDERS) as f64 / took.as_secs_f64());
    println!(
        "  p50 {} µs, p99 {} µs, max {} µs",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max()
    );
    drop(h);

    // Fan-out: one publish, every subscriber answers (its newest history entry is newer
    // than the publish).
    let answered = |api: &troupe_actors::Api, ids: &[String], since: chrono::DateTime<chrono::Utc>| {
        let api = api.clone();
        let ids = ids.to_vec();
        async move {
            let mut n = 0;
            for id in &ids {
                let history = api.messages().history(id).await.expect("history");
                n += usize::from(history.last().is_some_and(|s| s.at >= since));
            }
            n
        }
    };
    let since = chrono::Utc::now();
    let started = Instant::now();
    let (fan, _) = api
        .messages()
        .publish("bench.fanout".into(), json!({ "hello": "all" }), Priority::Normal)
        .await
        .expect("publish");
    assert_eq!((fan.queued as usize, fan.refused), (SUBSCRIBERS, 0));
    let queued_in = started.elapsed();
    while answered(&api, &ids, since).await < SUBSCRIBERS {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!("topic fan-out to {SUBSCRIBERS} subscribed agents");
    println!(
        "  queued for all in {:.1} ms, all answered in {:.1} ms",
        queued_in.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64() * 1e3
    );

    // 100,000 tasks across the 1,000 agents.
    let after_seq = api.store().last_seq().await.expect("seq");
    let started = Instant::now();
    let per = TASKS / SENDERS;
    let submitters: Vec<_> = (0..SENDERS)
        .map(|s| {
            let api = api.clone();
            tokio::spawn(async move {
                for i in 0..per {
                    let req = SubmitTaskRequest::to_capability("echo", json!({ "s": s, "i": i }));
                    api.tasks().submit(req, None).await.expect("submit");
                }
            })
        })
        .collect();
    for s in submitters {
        s.await.expect("submitter");
    }
    let n = (per * SENDERS) as u64;
    println!("  submitted {n} in {:.1} s", started.elapsed().as_secs_f64());
    common::await_events(&api, after_seq, "TASK_SUCCEEDED", n as usize, Duration::from_secs(600)).await;
    let took = started.elapsed();
    println!("  all succeeded in {:.1} s", took.as_secs_f64());
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    let mut after = None;
    loop {
        let page = api
            .tasks()
            .list(Default::default(), after.clone(), 1000)
            .await
            .expect("list");
        for t in &page.items {
            if let Some(done) = t.status.finished_at {
                let us = (done - t.spec.created_at).num_microseconds().unwrap_or(0).max(0) as u64;
                h.record(us).expect("record");
            }
        }
        if !page.more {
            break;
        }
        after = page.items.last().map(|t| t.spec.id.clone());
    }
    println!("{n} builtin tasks across {SUBSCRIBERS} agents, {SENDERS} submitters");
    println!("  {:>10.0} tasks/s end to end", n as f64 / took.as_secs_f64());
    println!(
        "  submit to done: p50 {:.1} ms, p99 {:.1} ms",
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3
    );
}

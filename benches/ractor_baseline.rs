//! Baseline: what a local ractor message costs here, the floor under every Troupe figure.
//! Run: `cargo bench --bench ractor_baseline`

use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

mod common;

struct Counter;

enum Msg {
    Add,
    Get(RpcReplyPort<u64>),
}

impl ractor::Message for Msg {}

impl Actor for Counter {
    type Msg = Msg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Msg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(&self, _: ActorRef<Msg>, msg: Msg, n: &mut u64) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Add => *n += 1,
            Msg::Get(reply) => {
                let _ = reply.send(*n);
            }
        }
        Ok(())
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (actor, handle) = Actor::spawn(None, Counter, ()).await.expect("spawn");
    const CALLS: u64 = 100_000;
    let t = Instant::now();
    for _ in 0..CALLS {
        ractor::call!(actor, Msg::Get).expect("call");
    }
    common::report("sequential calls", CALLS as f64 / t.elapsed().as_secs_f64(), "calls/s");

    const CASTS: u64 = 1_000_000;
    let t = Instant::now();
    for _ in 0..CASTS {
        actor.cast(Msg::Add).expect("cast");
    }
    let n = ractor::call!(actor, Msg::Get).expect("call");
    assert!(n >= CASTS);
    common::report(
        "casts, flushed by one call",
        CASTS as f64 / t.elapsed().as_secs_f64(),
        "msgs/s",
    );

    let t = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let a = actor.clone();
            tokio::spawn(async move {
                for _ in 0..CALLS / 64 {
                    ractor::call!(a, Msg::Get).expect("call");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("caller");
    }
    common::report(
        "calls from 64 concurrent tasks",
        (CALLS / 64 * 64) as f64 / t.elapsed().as_secs_f64(),
        "calls/s",
    );
    actor.stop(None);
    handle.await.expect("stopped");
}

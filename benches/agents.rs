//! Spawn rate and idle memory of builtin agents: each spawn is committed before it is
//! acknowledged, then started under the agents supervisor.
//! Run: `cargo bench --bench agents`

use std::time::{Duration, Instant};

mod common;

const AGENTS: usize = 10_000;
const SPAWNERS: usize = 64;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (_dir, node) = common::node().await;
    let api = node.api().clone();
    // Warm the allocator and the store before measuring.
    api.agents()
        .spawn(common::echo("warm-up".into(), 1), None)
        .await
        .expect("spawn");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = common::rss_bytes();
    let t = Instant::now();
    let per = AGENTS / SPAWNERS + 1;
    let spawners: Vec<_> = (0..SPAWNERS)
        .map(|s| {
            let api = api.clone();
            tokio::spawn(async move {
                for i in 0..per {
                    let n = s * per + i;
                    if n >= AGENTS {
                        break;
                    }
                    api.agents()
                        .spawn(common::echo(format!("agent-{n}"), 1), None)
                        .await
                        .expect("spawn");
                }
            })
        })
        .collect();
    for s in spawners {
        s.await.expect("spawner");
    }
    let secs = t.elapsed().as_secs_f64();
    common::report(&format!("spawn {AGENTS} builtin agents"), secs, "s");
    common::report("  spawn rate", AGENTS as f64 / secs, "agents/s");
    // Let the lifecycle writes land, then measure at rest.
    api.store().flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_agent = common::rss_bytes().saturating_sub(rss_before) as f64 / AGENTS as f64;
    common::report("idle memory per builtin agent (RSS delta)", per_agent / 1024.0, "KiB");
    node.shutdown(Duration::from_secs(5)).await;
}

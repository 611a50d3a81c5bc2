//! Fault-experiment tests against real Troupe nodes, in a few lines: start one node or a
//! cluster (`troupe serve` processes on loopback, each with its own data dir and
//! `--fault-injection`), kill and restart them from outside as a real crash is, and run a
//! block of the test under a fault: the experiment is started with a lease, the lease is
//! renewed while the block runs, the faults are reverted when it ends (even when it fails),
//! and the recovery report comes back.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use troupe_testkit::{Fault, Node};
//! let node = Node::start("kit").await?;
//! let worker = node.spawn_builtin("echo", &[("role", "worker")]).await?;
//! let exp = node
//!     .fault(Fault::new("CRASH").labels(&[("role", "worker")]))
//!     .run(|node| async move {
//!         let task = node.submit_to(&worker, serde_json::json!("still served")).await?;
//!         node.wait_task(&task, "SUCCEEDED").await
//!     })
//!     .await?;
//! exp.assert_passed()?;
//! # Ok(()) }
//! ```
//!
//! The binary is `$TROUPE_BIN`, else `target/debug/troupe` of the checkout the kit sits in.

mod experiment;
mod node;

pub use experiment::{Experiment, Fault, FaultBlock};
pub use node::{ApiError, Node};

use std::time::Duration;

/// How long the kit waits for anything: a node to serve, a state, an experiment to end.
pub const WAIT: Duration = Duration::from_secs(60);

/// Polls `probe` until it answers `Some`, for at most [`WAIT`]; the last thing it saw is in
/// the timeout's message.
pub async fn until<T, F, Fut>(what: &str, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let end = tokio::time::Instant::now() + WAIT;
    let mut last = String::new();
    loop {
        match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e.to_string(),
        }
        if tokio::time::Instant::now() >= end {
            anyhow::bail!(
                "timed out waiting for {what}{}",
                if last.is_empty() {
                    String::new()
                } else {
                    format!(": {last}")
                }
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

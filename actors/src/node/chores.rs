//! The node's chores: loops it runs for its whole life, each a child of the `chores`
//! supervisor (started last, stopped first), so one that panics or ends is restarted like any
//! child. A restarted lease keeper takes up the work as it runs then.

use std::sync::Arc;
use std::time::Duration;

use troupe_runtime::idempotency::Idempotency;
use troupe_runtime::store::Store;
use troupe_runtime::supervision::{
    Backoff, ChildSpec, Chore, Intensity, Nested, StartOrder, Strategy, SupervisorArgs, SupervisorSpec,
};

use crate::cluster::Cluster;
use crate::failover::Rehome;

/// How often expired idempotency keys are purged.
const PURGE_EVERY: Duration = Duration::from_secs(60);
/// How often the memory the allocator keeps free is given back to the system.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// What the chores run on.
pub(super) struct Chores {
    pub store: Store,
    pub cluster: Cluster,
    /// What re-homing takes of each domain.
    pub rehome: Rehome,
    /// The work the lease keeper starts and stops.
    pub work: crate::failover::Work,
    pub idempotency: Idempotency,
    /// The agents' watchdog.
    pub watchdog: Arc<dyn ChildSpec>,
    /// What the alert notifier sends with.
    pub alerting: crate::alerts::Alerting,
    pub node: String,
    pub intensity: Option<Intensity>,
    pub backoff: Backoff,
}

/// The `chores` supervisor: the lease keeper, the members' judge, the moves follower, the
/// purge of expired keys, the memory trim, the leadership announcer, the alert notifier and
/// the agents' watchdog.
pub(super) fn child(c: Chores) -> Arc<dyn ChildSpec> {
    let lease = {
        let (store, cluster, work) = (c.store.clone(), c.cluster.clone(), c.work);
        let mailboxes = c.rehome.mailboxes.clone();
        Chore::new("lease", move || {
            let running = cluster.leases.running();
            let keep =
                crate::failover::keep_lease(store.clone(), cluster.clone(), work.clone(), mailboxes.clone(), running);
            Box::pin(keep)
        })
    };
    let members = {
        let (store, cluster) = (c.store.clone(), c.cluster.clone());
        Chore::new("members", move || {
            Box::pin(crate::failover::watch_members(store.clone(), cluster.clone()))
        })
    };
    let moves = {
        let (store, cluster, rehome) = (c.store.clone(), c.cluster.clone(), c.rehome.clone());
        Chore::new("moves", move || {
            Box::pin(crate::failover::follow_moves(
                store.clone(),
                cluster.clone(),
                rehome.clone(),
            ))
        })
    };
    let idempotency = c.idempotency;
    let purge = Chore::new("purge", move || {
        let idempotency = idempotency.clone();
        Box::pin(async move {
            let mut tick = tokio::time::interval(PURGE_EVERY);
            loop {
                tick.tick().await;
                match idempotency.purge_expired().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(purged = n, "purged expired idempotency keys"),
                    Err(e) => tracing::warn!(error = %e, "purging idempotency keys failed"),
                }
            }
        })
    });
    let trim = Chore::new("trim", || Box::pin(trim_memory()));
    let leadership = {
        let (store, node) = (c.store.clone(), c.node);
        Chore::new("leadership", move || {
            Box::pin(crate::cluster::replicated::announce_leadership(
                store.clone(),
                node.clone(),
            ))
        })
    };
    let alerts = {
        let alerting = c.alerting;
        Chore::new("alerts", move || Box::pin(crate::alerts::run(alerting.clone())))
    };
    let (store, intensity, backoff) = (c.store, c.intensity, c.backoff);
    Nested::child(SupervisorSpec {
        id: "chores".into(),
        args: Box::new(move || SupervisorArgs {
            name: "chores".into(),
            strategy: Strategy::OneForOne,
            intensity,
            backoff,
            children: vec![
                lease.clone() as Arc<dyn ChildSpec>,
                members.clone(),
                moves.clone(),
                purge.clone(),
                trim.clone(),
                leadership.clone(),
                alerts.clone(),
                c.watchdog.clone(),
            ],
            start_order: StartOrder::Sequential,
            store: store.clone(),
        }),
    })
}

/// Gives the memory glibc's allocator keeps free back to the system, every [`TRIM_EVERY`].
/// Large payloads (a follower taking 320 clients' 255 KB submits, forwarding them in
/// groups of megabytes) leave the heap holding what was freed: such a node kept 1.1 GB after
/// the load, of which `malloc_trim` returned 700 MB at once (BENCHMARKS.md, big payloads).
/// Each trim takes a few milliseconds at most.
#[allow(unsafe_code)]
async fn trim_memory() {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            // SAFETY: malloc_trim only returns free memory of the allocator's own heaps to the
            // system; it touches no memory in use.
            let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
        }
    }
}

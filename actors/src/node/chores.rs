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
/// How often LLM records past their retention are pruned.
const LLM_PRUNE_EVERY: Duration = Duration::from_secs(3600);

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
    /// How long LLM transcripts and daily usage rows are kept (`None`: for ever).
    pub llm_retention: Option<Duration>,
    pub intensity: Option<Intensity>,
    pub backoff: Backoff,
}

/// The `chores` supervisor: the lease keeper, the members' judge, the moves follower, the
/// purge of expired keys, the memory trim, the writer of the agents' message history, the
/// leadership announcer, the alert notifier, the pruner of LLM records and the agents'
/// watchdog.
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
    let history = {
        let mailboxes = c.rehome.mailboxes.clone();
        Chore::new("message-history", move || Box::pin(mailboxes.clone().write_history()))
    };
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
    let llm = {
        let (store, keep) = (c.store.clone(), c.llm_retention);
        Chore::new("llm-retention", move || {
            Box::pin(prune_llm_records(store.clone(), keep))
        })
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
                history.clone(),
                leadership.clone(),
                alerts.clone(),
                llm.clone(),
                c.watchdog.clone(),
            ],
            start_order: StartOrder::Sequential,
            store: store.clone(),
        }),
    })
}

/// Prunes the LLM records past `keep` (`llm_retention_days`) every [`LLM_PRUNE_EVERY`], on
/// the leader (or a node alone): one pruner is enough, and a second one's folds would be
/// refused by their conditions anyway. Kept for ever, it has nothing to do.
async fn prune_llm_records(store: Store, keep: Option<Duration>) {
    let Some(keep) = keep else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(LLM_PRUNE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let leads = {
            // Read and released at once: the Raft core waits while the value is borrowed.
            let m = store.raft().metrics().borrow().clone();
            m.current_leader == Some(m.id) || m.membership_config.membership().nodes().count() <= 1
        };
        if !leads {
            continue;
        }
        match crate::agent::prune_llm_records(&store, troupe_runtime::clock::now(), keep).await {
            Ok(p) if p == Default::default() => {}
            Ok(p) => tracing::info!(
                steps = p.steps,
                approvals = p.approvals,
                usage_rows = p.usage_rows,
                "pruned LLM records past their retention"
            ),
            Err(e) => tracing::warn!(error = %e, "pruning LLM records failed"),
        }
    }
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

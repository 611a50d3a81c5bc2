//! Starting and stopping a node: the store, the tokens, and the supervision tree.
//!
//! ```text
//! node (one_for_one, escalates past its intensity: the node exits non-zero)
//! ├── core (rest_for_one: agents hold the scheduler's ref, so they restart after it)
//! │   ├── scheduler
//! │   ├── agents (one_for_one, never escalates: each agent has its own intensity) ── agent …
//! │   └── swarms (one_for_one) ── swarm <id> (one_for_one, members first)
//! │                                ├── members (the swarm's strategy) ── agent …
//! │                                ├── coordinator
//! │                                └── swarm <sub-team id> …
//! ├── hosts (one_for_one) ── host driver … ── VM actor …
//! ├── cluster ── NodeServer; node, agents, tasks, messages, hosts, vms, swarms services
//! └── (extra children from the caller, e.g. the gateway)
//! ```
//!
//! Every supervisor below the root is a [`troupe_runtime::supervision::Nest`]: at each
//! (re)start it loads its children from the store (the agents it owns, the node's swarms or
//! hosts) and says where it runs (`slots`), so a restarted subtree is the stored one.
//!
//! Before the tree, bootstrap builds the node's services over one shared context (identity,
//! store, cluster, idempotency, tokens, limits), each given its own domain's state:
//!
//! ```text
//! Api ── slots (readiness, draining, the live tree)
//! ├── agents    slots, agent policy
//! ├── tasks     TaskQueue (scheduler room): open-task bound, default strategy, requeues under way
//! ├── messages  mailboxes
//! ├── hosts     fleet, host drivers' intensity ── vms
//! └── swarms    Port (swarm room): locks, watch, backoff, agent policy, slots, members, subtasks
//! ```
//!
//! The store is opened before the tree and outlives it: a store failure fail-stops the node
//! (see [`Node::failed`]), and the next start recovers from what is on disk.

mod bootstrap;
mod chores;
mod fleet;
mod identity;
mod watchdog;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use tokio::task::JoinHandle;
use troupe_runtime::auth::TokenError;
use troupe_runtime::config::Config;
use troupe_runtime::store::{Store, StoreError};
use troupe_runtime::supervision::{ChildSpec, SupervisorMsg};

use crate::service::Api;

#[derive(Debug, thiserror::Error)]
pub enum StartNodeError {
    #[error("cannot prepare data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("data dir {0} is in use by another running node")]
    Locked(PathBuf),
    #[error("data dir {path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("tokens: {0}")]
    Token(#[from] TokenError),
    #[error("cluster cookie: {0}")]
    Cookie(String),
    #[error("TLS between nodes: {0}")]
    Tls(String),
    #[error("supervision tree did not start: {0}")]
    Tree(String),
    #[error("cannot join the cluster: {0}")]
    Join(String),
    #[error(
        "node {name} left the cluster ({since}; leaveCluster or forgetMember): this data dir is no member's, \
         and a node started from it would only disturb the member that may hold the name now; to take part \
         again, start the node with a fresh data dir and --join (it is admitted as a new member)"
    )]
    Left { name: String, since: String },
}

/// Why a running node stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum NodeFailure {
    #[error("the node's supervision tree gave up")]
    TreeGaveUp,
    #[error("the store failed: {0}")]
    Store(String),
    /// A member said this node left the cluster (forgotten while it was stopped, its own
    /// replica never applied the entry): it stops rather than run cut off.
    #[error(
        "a member of the cluster says {0}: this data dir is no member's, and a node started from it would \
         only disturb the member that may hold the name now; to take part again, start the node with a \
         fresh data dir and --join (it is admitted as a new member)"
    )]
    Left(String),
}

impl NodeFailure {
    /// The failure to name, the store having failed with `store` (or not): a tree that gave
    /// up when the store failed gave up because its records could not be written, and the
    /// store's failure is what a restart recovers from. Both may be seen at once (the tree
    /// gives up milliseconds after the store fails), and the node once named the tree alone.
    fn caused_by(self, store: Option<String>) -> Self {
        match (self, store) {
            (NodeFailure::TreeGaveUp, Some(reason)) => NodeFailure::Store(reason),
            (failure, _) => failure,
        }
    }
}

/// A running node.
pub struct Node {
    api: Api,
    root: ActorRef<SupervisorMsg>,
    root_done: JoinHandle<()>,
    admin_token_path: PathBuf,
    /// The root's child that links this node to its peers (see [`Node::shutdown`]).
    link: String,
}

/// Builds the caller's extra root children once the API exists.
pub type ExtraChildren = Box<dyn FnOnce(&Api) -> Vec<Arc<dyn ChildSpec>> + Send>;

/// What a starting node is doing, in a few words ("opening the store", "waiting to be
/// admitted to the cluster's log …"): what its gateway's address answers meanwhile.
pub type Phase = tokio::sync::watch::Sender<String>;

/// Ends a start that was stopped midway (its future dropped, a SIGTERM while a joining node
/// waited to be admitted or caught up): the Raft member stops, and the store's files are
/// left as a closed database leaves them. Left open, each was repaired at the next start,
/// every page read (seconds for a store of hundreds of megabytes, a member silent
/// meanwhile).
pub async fn stop_while_starting(store: &Store) {
    store.stop_raft().await;
    if let Err(e) = store.persist().await {
        tracing::error!(error = %e, "the store's files could not be closed: the next start repairs them");
    }
}

impl Node {
    pub async fn start(config: &Config, extra: ExtraChildren) -> Result<Self, StartNodeError> {
        bootstrap::start(config, extra, &Phase::new(String::new()), &Default::default()).await
    }

    /// [`Self::start`], saying each phase of the start in `phase` as it begins, and handing
    /// `opened` the store once it is open: a stop asked for while the node starts closes the
    /// store's files (see [`stop_while_starting`]).
    pub async fn start_telling(
        config: &Config,
        extra: ExtraChildren,
        phase: &Phase,
        opened: &std::sync::OnceLock<Store>,
    ) -> Result<Self, StartNodeError> {
        bootstrap::start(config, extra, phase, opened).await
    }

    pub fn api(&self) -> &Api {
        &self.api
    }

    pub fn admin_token_path(&self) -> &Path {
        &self.admin_token_path
    }

    /// Resolves when the node has failed on its own: the root supervisor gave up, or the
    /// store failed (then nothing more can be made durable, so the node must stop and
    /// recover from disk at its next start).
    pub async fn failed(&mut self) -> NodeFailure {
        let store = self.api.store().clone();
        let failure = tokio::select! {
            biased;
            reason = store.failed() => NodeFailure::Store(reason),
            _ = &mut self.root_done => NodeFailure::TreeGaveUp,
            why = self.api.cluster().dismissed() => NodeFailure::Left(why),
        };
        failure.caused_by(store.failure())
    }

    /// Stops taking work, lets running tasks finish within `grace`, gives the ones still
    /// running back to the queue (not charged an attempt: they run again at the next start),
    /// stops the tree and makes every write durable. In a cluster, the node's last writes
    /// commit before its Raft member stops, and its Raft member stops before its link to the
    /// peers: stopped the other way round, a follower's final flush found no leader and its
    /// Raft member, hearing from nobody, stood for election over and over while stopping.
    /// A leader that stops is replaced by one election, which the others begin as soon as
    /// its session closes and its lease passed (`store::raft::elect`; openraft 0.9 has no
    /// transfer of leadership).
    pub async fn shutdown(self, grace: Duration) {
        if self.api.left() {
            // Nothing it would write now reaches the cluster: its stop is quick and quiet.
            self.api.store().left_the_cluster();
        }
        // The last member of a cluster stopped one by one leads (a stopping leader hands over)
        // and no majority is left to take its stop: written, each record would wait for one
        // until its time ran out.
        if self.api.store().leads_without_a_majority(MAJORITY_PROBE_WITHIN).await {
            tracing::info!(
                "no majority of the cluster is up (the other members stopped, or cannot be reached): \
                 this node's stop is not written"
            );
            self.api.store().stop_unwritten();
        }
        // Stopped at the same moment as the others (or named the successor of a leader that
        // stopped), this node may find itself the last one up while it drains: once it has
        // been linked to no majority of the voters for a while, its writes from then on (and
        // those waiting for a leader) are not written either.
        let watch = tokio::spawn(once_cut_from_a_majority(self.api.clone()));
        let running = self.api.begin_drain().await;
        tracing::info!(running, grace = ?grace, "shutting down: draining running tasks");
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            if self.api.working_tasks().await == 0 {
                // Those left wait for a person, who may take hours: their approvals are
                // committed, and they wait for them again at the next start.
                let held = self.api.running_tasks().await;
                if held > 0 {
                    tracing::info!(
                        held,
                        "tasks held for an operator's approval go back to the queue; they wait for it again at the next start"
                    );
                    if let Err(e) = self.api.requeue_running().await {
                        tracing::error!(error = %e, "could not give the held tasks back to the queue");
                    }
                }
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let running = self.api.running_tasks().await;
                tracing::warn!(running, "grace period over; these tasks go back to the queue");
                if let Err(e) = self.api.requeue_running().await {
                    tracing::error!(error = %e, "could not give the running tasks back to the queue");
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Peers' requests: none is taken from now on (a submit goes elsewhere), and those
        // under way are answered while the link still carries their answers.
        let peer_calls = self.api.cluster().peer_calls();
        peer_calls.close();
        let under_way = peer_calls.under_way();
        if under_way > 0 {
            tracing::info!(
                under_way,
                "answering the peers' requests under way before the link goes"
            );
        }
        let left = peer_calls.settled(PEER_CALLS_WITHIN).await;
        if left > 0 {
            tracing::warn!(left, within = ?PEER_CALLS_WITHIN, "peers' requests still under way as the node stops are not answered");
        }
        // The chores (started last) stop first, before the work they look after.
        self.stop_all_but_the_link().await;
        // The agents' message history noted since its last background write.
        let history = self.api.messages().mailboxes.write_noted();
        match tokio::time::timeout(FINAL_FLUSH_WITHIN, history).await {
            Ok(Ok(())) | Ok(Err(StoreError::Left | StoreError::Alone)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the agents' last message history lines were not written"),
            Err(_) => {
                tracing::warn!(within = ?FINAL_FLUSH_WITHIN, "the agents' last message history lines were not written in time")
            }
        }
        let store = self.api.store().clone();
        match tokio::time::timeout(FINAL_FLUSH_WITHIN, store.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(StoreError::Left)) => tracing::info!("this node left the cluster: its stop is not written"),
            Ok(Err(StoreError::Alone)) => {}
            Ok(Err(StoreError::NotLeader { leader: None })) => tracing::warn!(
                "the final flush found no leader: the last records of this node's stop were not written \
                 (the cluster's other members may be stopping too)"
            ),
            Ok(Err(e)) => tracing::error!(error = %e, "final flush failed"),
            Err(_) => tracing::error!(within = ?FINAL_FLUSH_WITHIN, "final flush did not end in time"),
        }
        watch.abort();
        store.stop_raft().await;
        if let Err(e) = self
            .root
            .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(15)))
            .await
        {
            tracing::warn!(error = %e, "supervision tree did not stop in time");
        }
        if let Err(e) = store.persist().await {
            tracing::error!(error = %e, "the applied state could not be made durable");
        }
    }

    /// Stops every child of the root but the cluster link and the services it carries, in
    /// the reverse of their start: the gateway, then the node's work, whose last records
    /// still reach the leader through the link. The services, closed, answer a peer's late
    /// request with a refusal until the link goes (stopped, they would leave it unanswered).
    async fn stop_all_but_the_link(&self) {
        let within = Duration::from_secs(60);
        let children =
            crate::call::ask_within(&self.root, SupervisorMsg::Children, "the node supervisor", within).await;
        let children = match children {
            Ok(children) => children,
            Err(e) => {
                tracing::warn!(error = %e, "could not list the node's children to stop them in order");
                return;
            }
        };
        for (id, _) in children
            .into_iter()
            .rev()
            .filter(|(id, _)| *id != self.link && id != SERVICES)
        {
            let stop = crate::call::ask_within(
                &self.root,
                |r| SupervisorMsg::TerminateChild(id.clone(), r),
                "the node supervisor",
                within,
            )
            .await;
            if let Err(e) = stop {
                tracing::warn!(child = %id, error = %e, "could not stop a child of the node");
            }
        }
    }
}

/// How long a stopping node waits for its answers to peers' requests under way (as its
/// gateway does for its clients').
const PEER_CALLS_WITHIN: Duration = Duration::from_secs(10);

/// The root's child that serves the domains to peers.
const SERVICES: &str = crate::service::SERVICES_CHILD;

/// How often a stopping node looks whether it is still linked to a majority of the voters.
const MAJORITY_LOOK_EVERY: Duration = Duration::from_millis(250);

/// Watches a stopping node's links: once it has been linked to no majority of the cluster's
/// voters (itself included) at two looks in a row, nothing it writes can commit before it is
/// gone, and its store is told so (`Store::stop_unwritten`): the writes waiting are answered
/// at once instead of at their time limit. A node alone, or one whose links hold, waits here
/// until its stop aborts the watch.
async fn once_cut_from_a_majority(api: Api) {
    let mut cut = 0;
    loop {
        tokio::time::sleep(MAJORITY_LOOK_EVERY).await;
        let (voters, majority) = api.store().other_voters();
        if voters.is_empty() {
            continue;
        }
        let linked = api.cluster().peers();
        let up = 1 + voters.iter().filter(|v| linked.contains(v)).count();
        cut = if up < majority { cut + 1 } else { 0 };
        if cut >= 2 {
            tracing::info!(
                linked = up,
                majority,
                "this stopping node is linked to no majority of the cluster (the others stopped too): \
                 the rest of its stop is not written"
            );
            api.store().stop_unwritten();
            return;
        }
    }
}

/// How long a stopping node waits for its last writes to commit.
const FINAL_FLUSH_WITHIN: Duration = Duration::from_secs(10);
/// How long a stopping leader asks whether a majority still answers it.
const MAJORITY_PROBE_WITHIN: Duration = Duration::from_secs(1);

/// Recovers a cluster that lost its majority from this stopped node: forgets the lost
/// membership, then opens the store once as a cluster of this node alone (which elects it),
/// records `CLUSTER_RECOVERED` in the event log and closes it. The other members must join
/// it afresh, with empty data dirs.
pub async fn recover(data_dir: &Path) -> Result<troupe_runtime::store::raft::Forgotten, StartNodeError> {
    use troupe_runtime::store::{raft, Batch, Store, StoreOptions, META};
    let path = Config::store_path_in(data_dir);
    let forgotten = {
        let path = path.clone();
        match tokio::task::spawn_blocking(move || raft::forget_membership(&path)).await {
            Ok(Err(StoreError::Locked)) => return Err(StartNodeError::Locked(data_dir.to_path_buf())),
            Ok(other) => other?,
            Err(e) => return Err(StartNodeError::Store(StoreError::Failed(e.to_string()))),
        }
    };
    let options = StoreOptions {
        identity: raft::Identity {
            name: forgotten.name.clone(),
            ..raft::Identity::default()
        },
        ..StoreOptions::default()
    };
    let store = match tokio::task::spawn_blocking(move || Store::open_with(&path, options)).await {
        Ok(store) => store?,
        Err(e) => return Err(StartNodeError::Store(StoreError::Failed(e.to_string()))),
    };
    let event = troupe_runtime::events::NewEvent::new(
        "CLUSTER_RECOVERED",
        Some(forgotten.name.clone()),
        serde_json::json!({ "node": forgotten.name, "previousMembers": forgotten.members }),
    );
    // The lost members are not heard again (with those of any earlier recovery).
    let mut ids: Vec<u64> = match store.get(META, raft::FORGOTTEN_IDS).await? {
        Some(bytes) => troupe_runtime::codec::decode(&bytes)?,
        None => Vec::new(),
    };
    ids.extend(&forgotten.ids);
    ids.sort_unstable();
    ids.dedup();
    let batch = Batch::new()
        .put(META, raft::FORGOTTEN_IDS, troupe_runtime::codec::encode(&ids)?)
        .event(event);
    store.write(batch).await?;
    // The state predates the new log: members that join get it as a snapshot.
    store.compact().await?;
    // Closed as a stopping node closes it: its next start opened a file it took for one a
    // killed process had left, and repaired it (reading every page), after a clean recovery.
    store.stop_raft().await;
    store.persist().await?;
    Ok(forgotten)
}

#[cfg(test)]
mod tests {
    use troupe_runtime::auth::TOKENS;
    use troupe_runtime::store::{Batch, Store};

    use super::*;

    #[test]
    fn a_tree_that_gave_up_once_the_store_failed_names_the_store() {
        let named = NodeFailure::TreeGaveUp.caused_by(Some("injected fault: commit failed".into()));
        assert_eq!(named.to_string(), "the store failed: injected fault: commit failed");
        let alone = NodeFailure::TreeGaveUp.caused_by(None);
        assert_eq!(alone.to_string(), "the node's supervision tree gave up");
        let left = NodeFailure::Left("it left".into()).caused_by(Some("x".into()));
        assert!(matches!(left, NodeFailure::Left(_)), "{left}");
    }

    #[tokio::test]
    async fn a_data_dir_of_an_older_release_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::embedded(dir.path());
        {
            // An older release wrote records without marking the store's format.
            let store = Store::open(&config.store_path()).unwrap();
            store
                .write(Batch::new().put(TOKENS, "old", vec![1, 2, 3]))
                .await
                .unwrap();
        }
        let err = loop {
            match Node::start(&config, Box::new(|_| vec![])).await {
                Err(StartNodeError::Locked(_)) => tokio::task::yield_now().await,
                Err(e) => break e,
                Ok(_) => panic!("an older store was accepted"),
            }
        };
        assert!(matches!(err, StartNodeError::Format { .. }), "{err}");
        assert!(err.to_string().contains("older Troupe release"), "{err}");
    }
}

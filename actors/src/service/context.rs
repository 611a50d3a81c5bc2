//! What every domain service of a node shares: identity, store, local actors, the cluster,
//! idempotency keys, and the helpers to route, forward and answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};
use serde::de::DeserializeOwned;
use serde::Serialize;
use troupe_runtime::auth::Tokens;
use troupe_runtime::idempotency::{Claim, Guard, Idempotency};
use troupe_runtime::store::Store;
use troupe_runtime::supervision::SupervisorMsg;

use crate::cluster::remote::Service;
use crate::cluster::{Cluster, MemberStatus};
use crate::error::ApiError;
use crate::scheduler::SchedulerMsg;
use crate::slots::Slots;

/// How long a call into a local actor may take.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct Context {
    pub node_id: String,
    pub node_name: String,
    pub started_at: DateTime<Utc>,
    pub store: Store,
    pub slots: Slots,
    pub cluster: Cluster,
    pub idempotency: Idempotency,
    pub tokens: Tokens,
    pub max_payload_bytes: usize,
    pub max_open_tasks: usize,
    pub default_strategy: crate::task::Strategy,
    pub agent_policy: crate::agent::AgentPolicy,
    pub draining: AtomicBool,
    pub fleet: std::sync::Arc<crate::host::Fleet>,
    pub mailboxes: super::messages::Mailboxes,
    /// Restart backoff of the supervisors the node makes as it runs (a swarm's).
    pub backoff: troupe_runtime::supervision::Backoff,
    /// One writer at a time per swarm's memory, spec and status, and per swarm task record.
    pub swarm_locks: crate::swarm::Locks,
    /// Wakes swarm conductors waiting on tasks and members.
    pub swarm_watch: crate::swarm::Watch,
    /// DEAD tasks being requeued now.
    pub requeueing: crate::inflight::InFlight,
}

impl Context {
    pub fn ensure_serving(&self) -> Result<(), ApiError> {
        if self.draining.load(Ordering::SeqCst) {
            Err(ApiError::Unavailable("the node is shutting down".into()))
        } else {
            Ok(())
        }
    }

    pub fn scheduler(&self) -> Result<ActorRef<SchedulerMsg>, ApiError> {
        self.slots
            .scheduler
            .get()
            .ok_or_else(|| ApiError::Unavailable("the scheduler is not running".into()))
    }

    /// The supervisor that runs the agents of `owner`.
    pub fn supervisor_of(&self, owner: &crate::agent::Owner) -> Result<ActorRef<SupervisorMsg>, ApiError> {
        match owner.swarm() {
            None => self
                .slots
                .agents
                .get()
                .ok_or_else(|| ApiError::Unavailable("the agents supervisor is not running".into())),
            Some(swarm) => self.slots.members.get(swarm).ok_or_else(|| {
                ApiError::Unavailable(format!("the members supervisor of swarm {swarm} is not running"))
            }),
        }
    }

    /// Whether this node holds the entity with this id (ids without a home are looked up
    /// here only).
    pub fn holds(&self, id: &str) -> bool {
        crate::ids::home(id).is_none_or(|home| home == self.node_name)
    }

    /// The node holding `id`, when it is a peer.
    pub fn peer_holding<'a>(&self, id: &'a str) -> Option<&'a str> {
        crate::ids::home(id).filter(|home| *home != self.node_name)
    }

    /// Claims an idempotency key, when the caller gave one.
    pub async fn claim<T: DeserializeOwned>(
        &self,
        scope: &str,
        key: Option<&str>,
        request: &impl Serialize,
    ) -> Result<Option<Claim<T>>, ApiError> {
        match key {
            Some(key) => Ok(Some(self.idempotency.claim(scope, key, request).await?)),
            None => Ok(None),
        }
    }

    /// Sends a mutation to the peer that must carry it out. It always carries an idempotency
    /// key (the caller's or a new one), so a call that timed out after the peer acted is
    /// retried once and gets the first answer instead of acting twice.
    pub async fn forward<S: Service>(
        &self,
        node: &str,
        request: impl Fn(String) -> S::Request,
        key: Option<String>,
    ) -> Result<S::Response, ApiError> {
        self.forward_within::<S>(node, request, key, crate::cluster::remote::PEER_TIMEOUT)
            .await
    }

    /// [`Context::forward`] for a request the peer may take up to `within` to answer.
    pub async fn forward_within<S: Service>(
        &self,
        node: &str,
        request: impl Fn(String) -> S::Request,
        key: Option<String>,
        within: Duration,
    ) -> Result<S::Response, ApiError> {
        if !crate::cluster::remote::is_connected(S::ROLE, node) && self.cluster.status(node).is_none() {
            return Err(ApiError::invalid(format!("unknown or unreachable node {node:?}")));
        }
        let key = key.unwrap_or_else(|| format!("fwd-{}", uuid::Uuid::new_v4()));
        let request = request(key.clone());
        match self.cluster.call_within::<S>(node, &request, within).await {
            Err(ApiError::Unavailable(first)) if self.cluster.status(node) != Some(MemberStatus::Down) => {
                tracing::warn!(%node, error = %first, %key, "forwarding failed; retrying once with the same key");
                self.cluster
                    .call_within::<S>(node, &request, within)
                    .await
                    .map_err(|e| match e {
                        ApiError::Unavailable(m) => ApiError::Unavailable(format!(
                            "{m}; it may have acted: retry with idempotencyKey {key:?} to get its answer"
                        )),
                        other => other,
                    })
            }
            other => other,
        }
    }
}

/// Calls a local actor and waits at most [`CALL_TIMEOUT`].
pub(crate) async fn ask<M: ractor::Message, T: Send + 'static>(
    actor: &ActorRef<M>,
    msg: impl FnOnce(RpcReplyPort<T>) -> M,
    what: &str,
) -> Result<T, ApiError> {
    ask_within(actor, msg, what, CALL_TIMEOUT).await
}

/// Calls a local actor whose answer may take longer than a call (a start that waits for its
/// child); waits at most `limit`.
pub(crate) async fn ask_within<M: ractor::Message, T: Send + 'static>(
    actor: &ActorRef<M>,
    msg: impl FnOnce(RpcReplyPort<T>) -> M,
    what: &str,
    limit: Duration,
) -> Result<T, ApiError> {
    match actor.call(msg, Some(limit)).await? {
        CallResult::Success(answer) => Ok(answer),
        _ => Err(ApiError::Unavailable(format!("{what} did not answer"))),
    }
}

/// Keeps the id a keyed mutation answered with, in a batch of its own.
pub(crate) async fn keep(store: &Store, guard: Option<Guard>, id: &str) -> Result<(), ApiError> {
    if let Some(guard) = guard {
        guard.save(store, &id.to_owned()).await?;
    }
    Ok(())
}

/// The guard of a fresh claim, or the id a replayed one answered with.
pub(crate) fn split(claim: Option<Claim<String>>) -> Result<Option<Guard>, String> {
    match claim {
        None => Ok(None),
        Some(Claim::Fresh(guard)) => Ok(Some(guard)),
        Some(Claim::Replay(id)) => Err(id),
    }
}

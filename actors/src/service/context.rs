//! What every domain service of a node shares: identity, store, local actors, the cluster,
//! idempotency keys, and the helpers to route, forward and answer.

use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use ractor::ActorRef;
use serde::de::DeserializeOwned;
use serde::Serialize;
use troupe_runtime::auth::Tokens;
use troupe_runtime::idempotency::{Claim, Idempotency};
use troupe_runtime::store::Store;
use troupe_runtime::supervision::SupervisorMsg;

use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::scheduler::SchedulerMsg;
use crate::slots::Slots;

pub(crate) use crate::call::{ask, keep, split};

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
    /// Restart backoff of the supervisors the node makes as it runs (a swarm's).
    pub backoff: troupe_runtime::supervision::Backoff,
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

    /// Whether this node holds the entity with this id (see [`Cluster::holder`]).
    pub fn holds(&self, id: &str) -> bool {
        self.cluster.holds(id)
    }

    /// The node holding `id`, when it is a peer (see [`Cluster::holder`]).
    pub fn peer_holding(&self, id: &str) -> Option<String> {
        self.cluster.holder(id)
    }

    /// Claims an idempotency key, when the caller gave one.
    pub async fn claim<T: DeserializeOwned>(
        &self,
        scope: &str,
        key: Option<&str>,
        request: &impl Serialize,
    ) -> Result<Option<Claim<T>>, ApiError> {
        crate::call::claim(&self.idempotency, scope, key, request).await
    }
}

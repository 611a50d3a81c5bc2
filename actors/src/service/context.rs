//! What every domain service of a node shares: its identity, the store, the cluster,
//! idempotency keys, tokens, its limits, whether it still serves, and the helpers to route,
//! forward and answer. Each domain's own state lives with its service (see `Api`'s fields).

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use troupe_runtime::auth::Tokens;
use troupe_runtime::idempotency::{Claim, Idempotency};
use troupe_runtime::store::Store;

use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::serving::Serving;

pub(crate) use crate::call::{ask, keep, split};

pub(crate) struct Context {
    pub node_id: String,
    pub node_name: String,
    pub started_at: DateTime<Utc>,
    pub store: Store,
    pub cluster: Cluster,
    pub idempotency: Idempotency,
    pub tokens: Tokens,
    pub max_payload_bytes: usize,
    /// How many members of the cluster vote (the rest learn).
    pub voters: usize,
    /// Cleared when the node begins to shut down.
    pub serving: Serving,
}

impl Context {
    pub fn ensure_serving(&self) -> Result<(), ApiError> {
        self.serving.ensure()
    }

    /// Whether this node holds the entity with this id (see [`Cluster::holder`]).
    pub fn holds(&self, id: &str) -> bool {
        self.cluster.holds(id)
    }

    /// The node holding `id`, when it is a peer (see [`Cluster::holder`]).
    pub fn peer_holding(&self, id: &str) -> Option<String> {
        self.cluster.holder(id)
    }

    /// Refuses a node name that names no member of the cluster (as the replica's membership
    /// says): INVALID_INPUT naming the members, not UNAVAILABLE, which reads as "try again".
    pub fn ensure_member(&self, node: &str) -> Result<(), ApiError> {
        let members = self.store.status().members;
        if members.iter().any(|m| m.name == node) {
            return Ok(());
        }
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        Err(ApiError::invalid(format!(
            "{node} is not a member of the cluster; members: {}",
            names.join(", ")
        )))
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

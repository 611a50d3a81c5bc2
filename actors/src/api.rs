//! [`Api`]: the typed handle through which the gateway (and peers, through the router) act on
//! a node. It writes what must be durable before it answers, and routes requests for agents
//! and tasks that live on other nodes to their node.

mod agents;
mod peer;
mod tasks;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::Stream;
use ractor::rpc::CallResult;
use troupe_runtime::auth::{self, Role};
use troupe_runtime::events::{self, Event, EventFilter};
use troupe_runtime::store::{Store, StoreError};

use crate::cluster::{Cluster, Member};
use crate::error::ApiError;
use crate::scheduler::SchedulerMsg;
use crate::services::Services;

/// How long a call into a local service actor may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Api {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: String,
    node_name: String,
    started_at: DateTime<Utc>,
    data_dir: PathBuf,
    store: Store,
    services: Services,
    cluster: Cluster,
    max_payload_bytes: usize,
    draining: AtomicBool,
}

/// Settings the API needs from the node's configuration.
pub struct ApiSettings {
    pub node_id: String,
    pub node_name: String,
    pub data_dir: PathBuf,
    pub max_payload_bytes: usize,
}

pub(crate) const DEFAULT_MAX_ATTEMPTS: u32 = 3;

impl Api {
    pub(crate) fn new(settings: ApiSettings, store: Store, services: Services, cluster: Cluster) -> Self {
        Self {
            inner: Arc::new(Inner {
                node_id: settings.node_id,
                node_name: settings.node_name,
                started_at: troupe_runtime::clock::now(),
                data_dir: settings.data_dir,
                store,
                services,
                cluster,
                max_payload_bytes: settings.max_payload_bytes,
                draining: AtomicBool::new(false),
            }),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    pub fn node_name(&self) -> &str {
        &self.inner.node_name
    }

    pub fn started_at(&self) -> DateTime<Utc> {
        self.inner.started_at
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    pub fn members(&self) -> Vec<Member> {
        self.inner.cluster.members()
    }

    /// The role of a bearer token, importing tokens created while the node runs.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Role>, ApiError> {
        if let Some(role) = auth::lookup(&self.inner.store, token).await? {
            return Ok(Some(role));
        }
        match auth::import_pending(&self.inner.store, &self.inner.data_dir).await {
            Ok(0) => Ok(None),
            Ok(_) => Ok(auth::lookup(&self.inner.store, token).await?),
            Err(e) => Err(ApiError::Internal(e.to_string())),
        }
    }

    fn scheduler(&self) -> Result<ractor::ActorRef<SchedulerMsg>, ApiError> {
        self.inner
            .services
            .scheduler
            .get()
            .ok_or_else(|| ApiError::Unavailable("the scheduler is not running".into()))
    }

    fn ensure_serving(&self) -> Result<(), ApiError> {
        if self.inner.draining.load(Ordering::SeqCst) {
            Err(ApiError::Unavailable("the node is shutting down".into()))
        } else {
            Ok(())
        }
    }

    // ---- events ----

    /// Up to `first` events after `after` that pass the filter, oldest first.
    pub async fn events(&self, after: u64, filter: EventFilter, first: usize) -> Result<Vec<Event>, ApiError> {
        let mut out = Vec::new();
        let mut cursor = after;
        while out.len() < first {
            let page = self.inner.store.events_after(cursor, 1024).await?;
            let Some(last) = page.last() else { break };
            cursor = last.seq;
            out.extend(page.into_iter().filter(|e| filter.matches(e)));
        }
        out.truncate(first);
        Ok(out)
    }

    pub fn subscribe(
        &self,
        after: u64,
        filter: EventFilter,
    ) -> impl Stream<Item = Result<Event, StoreError>> + Send + 'static {
        events::subscribe(&self.inner.store, after, filter)
    }

    // ---- shutdown ----

    /// Stops accepting work and starting tasks; returns how many tasks still run.
    pub async fn begin_drain(&self) -> usize {
        self.inner.draining.store(true, Ordering::SeqCst);
        self.scheduler_count(SchedulerMsg::Drain).await
    }

    pub async fn running_tasks(&self) -> usize {
        self.scheduler_count(SchedulerMsg::Running).await
    }

    async fn scheduler_count(&self, msg: fn(ractor::RpcReplyPort<usize>) -> SchedulerMsg) -> usize {
        match self.inner.services.scheduler.get() {
            Some(s) => match s.call(msg, Some(CALL_TIMEOUT)).await {
                Ok(CallResult::Success(n)) => n,
                _ => 0,
            },
            None => 0,
        }
    }
}

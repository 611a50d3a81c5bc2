//! Starting and stopping a node: the store, the admin token, and the supervision tree.
//!
//! ```text
//! node (one_for_one)
//! ├── core (rest_for_one: agents hold the scheduler's ref, so they restart after it)
//! │   ├── scheduler
//! │   └── agents (one_for_one) ── agent …
//! ├── cluster ── NodeServer, router
//! └── (extra children from the caller, e.g. the gateway)
//! ```
//!
//! The store is opened before the tree and outlives it: a redb failure is fatal to the node,
//! not something a restart repairs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;
use troupe_runtime::auth;
use troupe_runtime::config::Config;
use troupe_runtime::store::{Batch, Store, StoreError, StoreOptions, Table};
use troupe_runtime::supervision::{
    Backoff, ChildSpec, Intensity, Strategy, Supervisor, SupervisorArgs, SupervisorMsg, SupervisorSpec,
};

use crate::agent::AgentsChild;
use crate::api::{Api, ApiSettings};
use crate::cluster::{Cluster, ClusterChild, PeerInfo};
use crate::scheduler::{Scheduler, SchedulerArgs};
use crate::services::Services;

#[derive(Debug, thiserror::Error)]
pub enum StartNodeError {
    #[error("cannot create data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("data dir {0} is in use by another running node")]
    Locked(PathBuf),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("tokens: {0}")]
    Token(#[from] auth::TokenError),
    #[error("cluster cookie: {0}")]
    Cookie(String),
    #[error("supervision tree did not start: {0}")]
    Tree(String),
}

/// A running node.
pub struct Node {
    api: Api,
    root: ActorRef<SupervisorMsg>,
    root_done: JoinHandle<()>,
    admin_token_path: PathBuf,
}

/// Builds the caller's extra root children once the API exists.
pub type ExtraChildren = Box<dyn FnOnce(&Api) -> Vec<Arc<dyn ChildSpec>> + Send>;

impl Node {
    pub async fn start(config: &Config, extra: ExtraChildren) -> Result<Self, StartNodeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartNodeError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let options = StoreOptions {
            event_retention: config.event_retention,
        };
        let store = match Store::open_with(&config.store_path(), options) {
            Err(StoreError::Locked) => return Err(StartNodeError::Locked(config.data_dir.clone())),
            other => other?,
        };
        let admin_token_path = auth::ensure_admin_token(&store, &config.data_dir).await?;
        auth::import_pending(&store, &config.data_dir).await?;
        let cookie = resolve_cookie(config)?;
        let node_id = node_id(&store).await?;
        let services = Services::default();
        let cluster = Cluster::new(PeerInfo {
            name: config.node_name.clone(),
            cluster_address: config.cluster_listen.to_string(),
            gateway_address: None,
        });
        let api = Api::new(
            ApiSettings {
                node_id,
                node_name: config.node_name.clone(),
                data_dir: config.data_dir.clone(),
                max_payload_bytes: config.max_payload_bytes,
            },
            store.clone(),
            services.clone(),
            cluster,
        );
        let intensity = Intensity {
            max_restarts: config.supervisor_max_restarts,
            window: config.supervisor_window,
        };
        let backoff = Backoff {
            base: config.supervisor_backoff,
            max: Duration::from_secs(5).max(config.supervisor_backoff),
        };
        let scheduler: Arc<dyn ChildSpec> = Arc::new(SchedulerChild {
            store: store.clone(),
            services: services.clone(),
            retry: Backoff {
                base: config.retry_base,
                max: config.retry_max,
            },
        });
        let agents: Arc<dyn ChildSpec> = Arc::new(AgentsChild {
            store: store.clone(),
            services: services.clone(),
            intensity,
            backoff,
        });
        let core_store = store.clone();
        let core = SupervisorSpec {
            id: "core".into(),
            args: Box::new(move || SupervisorArgs {
                name: "core".into(),
                strategy: Strategy::RestForOne,
                intensity,
                backoff,
                children: vec![scheduler.clone(), agents.clone()],
                store: core_store.clone(),
            }),
        };
        let mut children: Vec<Arc<dyn ChildSpec>> = vec![
            Arc::new(core),
            Arc::new(ClusterChild {
                api: api.clone(),
                listen: config.cluster_listen,
                join: config.join.clone(),
                cookie,
            }),
        ];
        children.extend(extra(&api));
        let args = SupervisorArgs {
            name: "node".into(),
            strategy: Strategy::OneForOne,
            intensity,
            backoff,
            children,
            store: store.clone(),
        };
        let (root, root_done) = Actor::spawn(None, Supervisor, args)
            .await
            .map_err(|e| StartNodeError::Tree(e.to_string()))?;
        tracing::info!(node = %config.node_name, admin_token = %admin_token_path.display(), "node started");
        Ok(Self {
            api,
            root,
            root_done,
            admin_token_path,
        })
    }

    pub fn api(&self) -> &Api {
        &self.api
    }

    pub fn admin_token_path(&self) -> &Path {
        &self.admin_token_path
    }

    /// Resolves when the supervision tree has died on its own: the root gave up.
    pub async fn failed(&mut self) {
        let _ = (&mut self.root_done).await;
    }

    /// Stops taking work, lets running tasks finish within `grace`, stops the tree and makes
    /// every write durable. Tasks still running after the grace period are retried at the
    /// next start.
    pub async fn shutdown(self, grace: Duration) {
        let running = self.api.begin_drain().await;
        tracing::info!(running, grace = ?grace, "shutting down: draining running tasks");
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let running = self.api.running_tasks().await;
            if running == 0 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    running,
                    "grace period over; these tasks will be retried at the next start"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Err(e) = self
            .root
            .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(15)))
            .await
        {
            tracing::warn!(error = %e, "supervision tree did not stop in time");
        }
        if let Err(e) = self.api.store().flush().await {
            tracing::error!(error = %e, "final flush failed");
        }
    }
}

/// The node's stable id, made on first start.
async fn node_id(store: &Store) -> Result<String, StoreError> {
    if let Some(bytes) = store.get(Table::Meta, "node_id").await? {
        return Ok(String::from_utf8_lossy(&bytes).into_owned());
    }
    let id = uuid::Uuid::now_v7().to_string();
    store
        .write(Batch::new().put(Table::Meta, "node_id", id.as_bytes().to_vec()))
        .await?;
    Ok(id)
}

/// The cluster cookie: from the cookie file, else `TROUPE_COOKIE`, else one kept in the data dir.
fn resolve_cookie(config: &Config) -> Result<String, StartNodeError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| StartNodeError::Cookie(format!("{}: {e}", path.display())))
    };
    if let Some(path) = &config.cookie_file {
        return read(path);
    }
    if let Ok(cookie) = std::env::var("TROUPE_COOKIE") {
        if !cookie.trim().is_empty() {
            return Ok(cookie.trim().to_owned());
        }
    }
    let path = config.data_dir.join("cookie");
    if path.exists() {
        return read(&path);
    }
    let cookie = uuid::Uuid::new_v4().simple().to_string();
    auth::write_private(&path, &cookie).map_err(|e| StartNodeError::Cookie(e.to_string()))?;
    Ok(cookie)
}

struct SchedulerChild {
    store: Store,
    services: Services,
    retry: Backoff,
}

impl ChildSpec for SchedulerChild {
    fn id(&self) -> &str {
        "scheduler"
    }

    fn kind(&self) -> &str {
        "SERVICE"
    }

    fn start(self: Arc<Self>, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>> {
        Box::pin(async move {
            let args = SchedulerArgs {
                store: self.store.clone(),
                retry: self.retry,
            };
            let (scheduler, _) = Actor::spawn_linked(None, Scheduler, args, supervisor).await?;
            self.services.scheduler.set(scheduler.clone());
            Ok(scheduler.get_cell())
        })
    }
}

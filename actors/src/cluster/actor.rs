//! The cluster service: runs ractor_cluster's NodeServer and this node's remotable service
//! actors (node, agents, tasks), keeps joined to the configured peers (reconnecting with
//! backoff when a session drops) and runs the heartbeat.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::{NodeServer, NodeServerMessage};
use tokio::task::JoinHandle;
use troupe_runtime::supervision::ChildSpec;

use super::remote::ServiceActor;
use crate::service::Api;

pub struct ClusterChild {
    pub api: Api,
    pub listen: SocketAddr,
    pub join: Vec<String>,
    pub cookie: String,
}

impl ChildSpec for ClusterChild {
    fn id(&self) -> &str {
        "cluster"
    }

    fn kind(&self) -> &str {
        "SERVICE"
    }

    fn start(self: Arc<Self>, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>> {
        Box::pin(async move {
            let (actor, _) = Actor::spawn_linked(None, ClusterActor, self.clone(), supervisor).await?;
            Ok(actor.get_cell())
        })
    }
}

struct ClusterActor;

/// The background loops this service owns: re-dialling joins and the heartbeat.
struct State {
    joiners: Vec<JoinHandle<()>>,
}

impl Drop for State {
    fn drop(&mut self) {
        for j in &self.joiners {
            j.abort();
        }
    }
}

impl ractor::Message for ClusterMsg {}
enum ClusterMsg {}

impl Actor for ClusterActor {
    type Msg = ClusterMsg;
    type State = State;
    type Arguments = Arc<ClusterChild>;

    async fn pre_start(
        &self,
        myself: ActorRef<ClusterMsg>,
        cfg: Arc<ClusterChild>,
    ) -> Result<State, ActorProcessingErr> {
        let name = cfg.api.node_name().to_owned();
        // ractor_cluster binds inside its own actor and reports a failure without the address.
        drop(
            std::net::TcpListener::bind(cfg.listen)
                .map_err(|e| format!("the cluster cannot listen on {}: {e}", cfg.listen))?,
        );
        let server = NodeServer::new(
            cfg.listen.port(),
            cfg.cookie.clone(),
            name.clone(),
            cfg.listen.ip().to_string(),
            None,
            Some(ractor_cluster::node::NodeConnectionMode::Transitive),
        )
        .with_listen_addr(cfg.listen.ip());
        let (server, _) = Actor::spawn_linked(None, server, (), myself.get_cell()).await?;
        let cell = myself.get_cell();
        Actor::spawn_linked(None, ServiceActor::default(), cfg.api.node_service(), cell.clone()).await?;
        Actor::spawn_linked(None, ServiceActor::default(), cfg.api.agents().clone(), cell.clone()).await?;
        Actor::spawn_linked(None, ServiceActor::default(), cfg.api.tasks().clone(), cell.clone()).await?;
        Actor::spawn_linked(None, ServiceActor::default(), cfg.api.messages().clone(), cell.clone()).await?;
        Actor::spawn_linked(None, ServiceActor::default(), cfg.api.hosts().clone(), cell.clone()).await?;
        Actor::spawn_linked(None, ServiceActor::default(), cfg.api.vms().clone(), cell.clone()).await?;
        Actor::spawn_linked(None, ServiceActor::default(), cfg.api.swarms().clone(), cell).await?;
        let mut joiners: Vec<JoinHandle<()>> = cfg
            .join
            .iter()
            .map(|peer| tokio::spawn(keep_joined(server.clone(), peer.clone())))
            .collect();
        joiners.push(tokio::spawn(
            cfg.api.cluster().clone().heartbeat(cfg.api.store().clone()),
        ));
        tracing::info!(node = %name, listen = %cfg.listen, peers = ?cfg.join, "cluster listening");
        Ok(State { joiners })
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<ClusterMsg>,
        evt: SupervisionEvent,
        _state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(who, e) => Err(format!("cluster actor {} failed: {e}", who.get_id()).into()),
            SupervisionEvent::ActorTerminated(who, _, reason) => {
                Err(format!("cluster actor {} stopped: {}", who.get_id(), reason.unwrap_or_default()).into())
            }
            _ => Ok(()),
        }
    }
}

/// Keeps a session to `peer` open: connects, checks every few seconds, reconnects with
/// exponential backoff (0.5 s doubling to 30 s) while it cannot.
async fn keep_joined(server: ActorRef<NodeServerMessage>, peer: String) {
    let mut backoff = Duration::from_millis(500);
    loop {
        if connected(&server, &peer).await {
            backoff = Duration::from_millis(500);
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        match tokio::time::timeout(
            Duration::from_secs(5),
            ractor_cluster::client_connect(&server, peer.as_str()),
        )
        .await
        {
            Ok(Ok(())) => {
                tracing::info!(%peer, "connected to peer");
                // Give the handshake a moment before checking the session.
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Ok(Err(e)) => tracing::warn!(%peer, error = %e, retry_in = ?backoff, "cannot reach peer"),
            Err(_) => tracing::warn!(%peer, retry_in = ?backoff, "connecting to peer timed out"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn connected(server: &ActorRef<NodeServerMessage>, peer: &str) -> bool {
    let resolved: Vec<String> = match tokio::net::lookup_host(peer).await {
        Ok(addrs) => addrs.map(|a| a.to_string()).collect(),
        Err(_) => Vec::new(),
    };
    let Ok(ractor::rpc::CallResult::Success(sessions)) = server
        .call(NodeServerMessage::GetSessions, Some(Duration::from_secs(2)))
        .await
    else {
        return false;
    };
    sessions
        .values()
        .any(|s| resolved.contains(&s.peer_addr) || s.peer_name.as_ref().is_some_and(|n| n.connection_string == peer))
}

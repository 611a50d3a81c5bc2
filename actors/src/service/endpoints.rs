//! What a node serves its peers: the domains' remotable service actors (agents, tasks,
//! messages, hosts, VMs, swarms) under their own child of the tree, and, under the cluster
//! link, the node and Raft services with the Raft lane and the heartbeat ([`Peers`]).

use std::sync::Arc;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::task::JoinHandle;
use troupe_runtime::supervision::ChildSpec;

use super::node::NodeService;
use super::raft::RaftService;
use super::Api;
use crate::cluster::{child_lost, serve_ping_and_hold, ClusterMsg, Endpoints, Link, Served};
use crate::failover::BeatSink;

/// What the cluster link serves beside its NodeServer: this node's node and Raft services,
/// the Raft lane, and the heartbeat, whose answers go to `beats` beyond membership.
pub struct Peers {
    pub node: NodeService,
    pub raft: RaftService,
    pub beats: BeatSink,
}

impl Served for Peers {
    fn start<'a>(
        &'a self,
        link: &'a Link,
        endpoints: &'a mut Endpoints,
        parent: &'a ActorCell,
    ) -> BoxFuture<'a, Result<Vec<JoinHandle<()>>, ActorProcessingErr>> {
        Box::pin(async move {
            endpoints.serve(self.node.clone(), parent).await?;
            endpoints.serve(self.raft.clone(), parent).await?;
            self.raft
                .carry(
                    link.raft_listen,
                    link.advertise_host.as_deref(),
                    link.tls.as_ref(),
                    endpoints.held(),
                )
                .await?;
            let heartbeat = crate::failover::heartbeat(link.cluster.clone(), link.store.clone(), self.beats.clone());
            Ok(vec![tokio::spawn(heartbeat)])
        })
    }
}

/// The tree's name of [`ServicesChild`].
pub const SERVICES_CHILD: &str = "services";

/// The domains' remotable service actors (agents, tasks, messages, hosts, VMs, swarms).
pub struct ServicesChild {
    pub api: Api,
}

impl ChildSpec for ServicesChild {
    fn id(&self) -> &str {
        SERVICES_CHILD
    }

    fn kind(&self) -> &str {
        "SERVICE"
    }

    crate::liveness::pinged_and_held!(ClusterMsg);

    fn start(self: Arc<Self>, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>> {
        Box::pin(async move {
            let (actor, _) = Actor::spawn_linked(None, ServicesActor, self.api.clone(), supervisor).await?;
            Ok(actor.get_cell())
        })
    }
}

struct ServicesActor;

impl Actor for ServicesActor {
    type Msg = ClusterMsg;
    type State = Endpoints;
    type Arguments = Api;

    async fn pre_start(&self, myself: ActorRef<ClusterMsg>, api: Api) -> Result<Endpoints, ActorProcessingErr> {
        let cell = myself.get_cell();
        let mut endpoints = Endpoints::new().closing_with(api.cluster().peer_calls().clone());
        endpoints.serve(api.agents().clone(), &cell).await?;
        endpoints.serve(api.tasks().clone(), &cell).await?;
        endpoints.serve(api.messages().clone(), &cell).await?;
        endpoints.serve(api.hosts().clone(), &cell).await?;
        endpoints.serve(api.vms().clone(), &cell).await?;
        endpoints.serve(api.swarms().clone(), &cell).await?;
        Ok(endpoints)
    }

    async fn handle(
        &self,
        _myself: ActorRef<ClusterMsg>,
        msg: ClusterMsg,
        endpoints: &mut Endpoints,
    ) -> Result<(), ActorProcessingErr> {
        serve_ping_and_hold("the services", msg, endpoints).await;
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<ClusterMsg>,
        evt: SupervisionEvent,
        _state: &mut Endpoints,
    ) -> Result<(), ActorProcessingErr> {
        child_lost(evt)
    }
}

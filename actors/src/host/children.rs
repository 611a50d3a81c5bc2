//! The node's `hosts` supervisor and its children: one host driver per host, each with a
//! restart intensity of its own.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use serde_json::json;
use troupe_runtime::supervision::{
    Backoff, ChildSpec, Intensity, Nest, StartOrder, Strategy, SupervisorArgs, SupervisorMsg,
};

use super::driver::{HostDriver, HostMsg};
use super::Fleet;

/// How long starting a host waits for its driver's first look at it (the host is UP, or
/// UNREACHABLE with the reason): up to about two libvirt calls on an unreachable one.
pub(crate) const FIRST_LOOK: Duration = Duration::from_secs(30);

/// The node's `hosts` supervisor as a child of the root: one host driver per host.
pub struct HostsChild {
    pub fleet: Arc<Fleet>,
    pub backoff: Backoff,
    pub intensity: Intensity,
}

impl Nest for HostsChild {
    fn id(&self) -> &str {
        "hosts"
    }

    fn start_timeout(&self) -> Duration {
        FIRST_LOOK + Duration::from_secs(10)
    }

    fn actor_name(&self) -> Option<String> {
        Some(format!("hosts@{}", self.fleet.node))
    }

    fn args(&self) -> BoxFuture<'static, Result<SupervisorArgs, ActorProcessingErr>> {
        let (fleet, intensity, backoff) = (self.fleet.clone(), self.intensity, self.backoff);
        Box::pin(async move {
            // The node's work starts once its replica caught up with the cluster: a host
            // the cluster moved off this node while it was down is driven elsewhere now.
            fleet.forget_moved_away().await?;
            let children = fleet
                .host_ids()
                .into_iter()
                .map(|id| host_child(&fleet, id, intensity))
                .collect();
            Ok(SupervisorArgs {
                name: "hosts".into(),
                strategy: Strategy::OneForOne,
                intensity: None,
                backoff,
                children,
                start_order: StartOrder::Concurrent,
                store: fleet.store.clone(),
            })
        })
    }

    fn started(&self, supervisor: &ActorRef<SupervisorMsg>) -> BoxFuture<'static, ()> {
        self.fleet.supervisor.set(supervisor.clone());
        // The node serves once each host is UP or known not to answer, as a host added later
        // is (the drivers connect off their starts).
        let fleet = self.fleet.clone();
        Box::pin(async move { fleet.first_looks(&fleet.host_ids(), FIRST_LOOK).await })
    }
}

pub fn host_child(fleet: &Arc<Fleet>, id: String, intensity: Intensity) -> Arc<dyn ChildSpec> {
    Arc::new(HostChild {
        fleet: fleet.clone(),
        id,
        intensity,
    })
}

struct HostChild {
    fleet: Arc<Fleet>,
    id: String,
    intensity: Intensity,
}

impl ChildSpec for HostChild {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &str {
        "HOST"
    }

    fn intensity(&self) -> Option<Intensity> {
        Some(self.intensity)
    }

    fn start_timeout(&self) -> Duration {
        // The start reads the host's VMs and starts their actors; it asks nothing of the host.
        Duration::from_secs(30)
    }

    crate::liveness::pinged_and_held!(HostMsg);

    fn start(self: Arc<Self>, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>> {
        Box::pin(async move {
            let args = (self.fleet.clone(), self.id.clone());
            let (driver, _) = Actor::spawn_linked(None, HostDriver, args, supervisor)
                .await
                .map_err(troupe_runtime::supervision::start_failed)?;
            Ok(driver.get_cell())
        })
    }

    fn event_data(&self) -> serde_json::Value {
        json!({ "name": self.fleet.spec(&self.id).map(|s| s.name) })
    }
}

//! The node's `hosts` supervisor and its children: one host driver per host, each with a
//! restart intensity of its own.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr};
use serde_json::json;
use troupe_runtime::supervision::{
    Backoff, ChildSpec, Intensity, Shutdown, StartOrder, Strategy, Supervisor, SupervisorArgs,
};

use super::driver::HostDriver;
use super::Fleet;

/// The node's `hosts` supervisor as a child of the root: one host driver per host.
pub struct HostsChild {
    pub fleet: Arc<Fleet>,
    pub backoff: Backoff,
    pub intensity: Intensity,
}

impl ChildSpec for HostsChild {
    fn id(&self) -> &str {
        "hosts"
    }

    fn kind(&self) -> &str {
        "SUPERVISOR"
    }

    fn shutdown(&self) -> Shutdown {
        Shutdown::Infinity
    }

    fn is_supervisor(&self) -> bool {
        true
    }

    fn start(self: Arc<Self>, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>> {
        Box::pin(async move {
            let children = self
                .fleet
                .host_ids()
                .into_iter()
                .map(|id| host_child(&self.fleet, id, self.intensity))
                .collect();
            let args = SupervisorArgs {
                name: "hosts".into(),
                strategy: Strategy::OneForOne,
                intensity: None,
                backoff: self.backoff,
                children,
                start_order: StartOrder::Concurrent,
                store: self.fleet.store.clone(),
            };
            let (sup, _) =
                Actor::spawn_linked(Some(format!("hosts@{}", self.fleet.node)), Supervisor, args, supervisor).await?;
            self.fleet.supervisor.set(sup.clone());
            Ok(sup.get_cell())
        })
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
        // Connecting to a remote host may take a while; an unreachable one still starts.
        Duration::from_secs(30)
    }

    fn start(self: Arc<Self>, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>> {
        Box::pin(async move {
            let args = (self.fleet.clone(), self.id.clone());
            let (driver, _) = Actor::spawn_linked(None, HostDriver, args, supervisor).await?;
            Ok(driver.get_cell())
        })
    }

    fn event_data(&self) -> serde_json::Value {
        json!({ "name": self.fleet.spec(&self.id).map(|s| s.name) })
    }
}

//! A supervisor that is itself a child of another: at each start, and each restart, it makes
//! its children afresh (most load them from the store: the agents a supervisor owns, the
//! swarms or hosts of the node), starts them under its own strategy, and says where it runs.
//! Its failure is one child failure for its parent.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};

use super::{ChildSpec, Shutdown, Supervisor, SupervisorArgs, SupervisorMsg};

/// What makes a nested supervisor: its id, and its arguments as they are now.
pub trait Nest: Send + Sync + 'static {
    fn id(&self) -> &str;
    /// Prefix of its events (`SUPERVISOR_STARTED`, ...).
    fn kind(&self) -> &str {
        "SUPERVISOR"
    }
    /// Extra fields for its events.
    fn event_data(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    /// The supervisor's arguments, its children included, made afresh at each (re)start.
    fn args(&self) -> BoxFuture<'static, Result<SupervisorArgs, ActorProcessingErr>>;
    /// How long reading the children and starting them may take.
    fn start_timeout(&self) -> Duration {
        Duration::from_secs(300)
    }
    /// The supervisor actor's registered name, if it has one.
    fn actor_name(&self) -> Option<String> {
        None
    }
    /// Told of the running supervisor (to put it where callers look it up); the start ends
    /// when what this returns does (a wait for the children's first word, say).
    fn started(&self, _supervisor: &ActorRef<SupervisorMsg>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// A [`Nest`] as a child of another supervisor.
pub struct Nested<N: Nest>(pub N);

impl<N: Nest> Nested<N> {
    pub fn child(nest: N) -> Arc<dyn ChildSpec> {
        Arc::new(Self(nest))
    }
}

impl<N: Nest> ChildSpec for Nested<N> {
    fn id(&self) -> &str {
        self.0.id()
    }

    fn kind(&self) -> &str {
        self.0.kind()
    }

    fn event_data(&self) -> serde_json::Value {
        self.0.event_data()
    }

    fn shutdown(&self) -> Shutdown {
        Shutdown::Infinity
    }

    fn start_timeout(&self) -> Duration {
        self.0.start_timeout()
    }

    fn is_supervisor(&self) -> bool {
        true
    }

    fn ping(&self, child: &ActorCell) -> Option<BoxFuture<'static, bool>> {
        let sup = ActorRef::<SupervisorMsg>::from(child.clone());
        Some(Box::pin(async move {
            matches!(
                sup.call(SupervisorMsg::Ping, None).await,
                Ok(ractor::rpc::CallResult::Success(()))
            )
        }))
    }

    fn hold(
        &self,
        child: &ActorCell,
        release: tokio::sync::watch::Receiver<bool>,
        held: tokio::sync::mpsc::UnboundedSender<()>,
    ) -> bool {
        ActorRef::<SupervisorMsg>::from(child.clone())
            .cast(SupervisorMsg::Hold(release, held))
            .is_ok()
    }

    fn start(self: Arc<Self>, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>> {
        Box::pin(async move {
            let args = self.0.args().await?;
            let (sup, _) = Actor::spawn_linked(self.0.actor_name(), Supervisor, args, supervisor).await?;
            self.0.started(&sup).await;
            Ok(sup.get_cell())
        })
    }
}

/// A nested supervisor whose arguments come from a function (its children known up front).
pub struct SupervisorSpec {
    pub args: Box<dyn Fn() -> SupervisorArgs + Send + Sync>,
    pub id: String,
}

impl Nest for SupervisorSpec {
    fn id(&self) -> &str {
        &self.id
    }

    fn args(&self) -> BoxFuture<'static, Result<SupervisorArgs, ActorProcessingErr>> {
        let args = (self.args)();
        Box::pin(async move { Ok(args) })
    }
}

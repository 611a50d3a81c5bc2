//! Chores: loops a node runs for its whole life (keeping its lease, judging the members,
//! following moves, purging expired keys…), each a child of a supervisor like any actor. A
//! chore that panics, or whose loop ends while it should run, is a failure its supervisor
//! sees (`SERVICE_FAILED`) and restarts by its strategy; stopping the chore ends its loop.

use std::sync::Arc;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use tokio::task::AbortHandle;

use super::ChildSpec;

/// Makes a chore's loop afresh at each start.
pub type Run = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// A chore as a child: `id` names it in the tree and in its events.
pub struct Chore {
    id: String,
    run: Run,
}

impl Chore {
    pub fn new(id: impl Into<String>, run: impl Fn() -> BoxFuture<'static, ()> + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            id: id.into(),
            run: Arc::new(run),
        })
    }
}

impl ChildSpec for Chore {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &str {
        "SERVICE"
    }

    fn start(self: Arc<Self>, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>> {
        Box::pin(async move {
            let actor = ChoreActor(self.id.clone());
            let (actor, _) = Actor::spawn_linked(None, actor, self.run.clone(), supervisor).await?;
            Ok(actor.get_cell())
        })
    }
}

struct ChoreActor(String);

/// How the chore's loop ended, as its watcher saw it.
pub struct Ended(String);

impl ractor::Message for Ended {}

impl Actor for ChoreActor {
    type Msg = Ended;
    type State = AbortHandle;
    type Arguments = Run;

    async fn pre_start(&self, myself: ActorRef<Ended>, run: Run) -> Result<AbortHandle, ActorProcessingErr> {
        let looping = tokio::spawn(run());
        let abort = looping.abort_handle();
        tokio::spawn(async move {
            let why = match looping.await {
                Ok(()) => "its loop ended".to_owned(),
                // Stopped: the actor ended it.
                Err(e) if e.is_cancelled() => return,
                Err(e) => format!("its loop panicked: {e}"),
            };
            let _ = myself.cast(Ended(why));
        });
        Ok(abort)
    }

    async fn post_stop(&self, _: ActorRef<Ended>, looping: &mut AbortHandle) -> Result<(), ActorProcessingErr> {
        looping.abort();
        Ok(())
    }

    async fn handle(&self, _: ActorRef<Ended>, ended: Ended, _: &mut AbortHandle) -> Result<(), ActorProcessingErr> {
        Err(format!("the chore {} failed: {}", self.0, ended.0).into())
    }
}

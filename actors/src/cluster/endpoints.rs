//! A node's service actors as one endpoint: the cluster link's (node, Raft) and the
//! domains' (agents, tasks, messages, hosts, VMs, swarms), each group under its parent.
//! The parent answers the watchdog's ping only once every one of its service actors has
//! taken a message (an empty request, which each answers with an error at once), and a HANG
//! of the parent holds them all: peers' calls queue unanswered until the release, as they
//! would at a node whose endpoint froze. However the parent ends (killed by the watchdog
//! included, when ractor runs no `post_stop`), its service actors end with it, so the
//! restarted parent's are the only ones peers reach.

use std::time::Duration;

use futures::future::{join_all, BoxFuture};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use tokio::sync::watch;

use super::remote::{Envelope, PeerCalls, Service, ServiceActor};

/// How long a ping waits for the service actors at most (the watchdog's own deadline is
/// what decides a miss; this only bounds the task that asks them).
const PING_WITHIN: Duration = Duration::from_secs(60);

type Ping = Box<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

pub struct Endpoints {
    /// True while a HANG holds the service actors.
    held: watch::Sender<bool>,
    pings: Vec<Ping>,
    /// The actors that end with the parent (its service actors, and the link's NodeServer).
    cells: Vec<ActorCell>,
    /// Closes its service actors as the node stops (the domains' do; the link's never).
    closing: Option<PeerCalls>,
}

impl Default for Endpoints {
    fn default() -> Self {
        Self::new()
    }
}

impl Endpoints {
    pub fn new() -> Self {
        Self {
            held: watch::channel(false).0,
            pings: Vec::new(),
            cells: Vec::new(),
            closing: None,
        }
    }

    /// Service actors started from now on stop taking requests once `calls` closes.
    pub fn closing_with(mut self, calls: PeerCalls) -> Self {
        self.closing = Some(calls);
        self
    }

    /// Starts `service`'s actor under `parent`.
    pub async fn serve<S: Service>(&mut self, service: S, parent: &ActorCell) -> Result<(), ActorProcessingErr> {
        let args = (service, self.held.subscribe(), self.closing.clone());
        let (actor, _) = Actor::spawn_linked(None, ServiceActor::<S>::default(), args, parent.clone()).await?;
        self.cells.push(actor.get_cell());
        self.pings.push(Box::new(move || ping::<S>(actor.clone())));
        Ok(())
    }

    /// Whether a HANG holds the service actors now, and when that changes.
    pub fn held(&self) -> watch::Receiver<bool> {
        self.held.subscribe()
    }

    /// Ends `cell` with the parent too.
    pub fn own(&mut self, cell: ActorCell) {
        self.cells.push(cell);
    }

    /// Answers `reply` once every service actor answered (never, while they are held).
    pub fn ping(&self, reply: ractor::RpcReplyPort<()>) {
        let answers = join_all(self.pings.iter().map(|p| p()));
        tokio::spawn(async move {
            if answers.await.into_iter().all(|answered| answered) {
                let _ = reply.send(());
            }
        });
    }

    /// Holds the service actors and the parent's loop until released.
    pub async fn hold(&self, what: &str, release: watch::Receiver<bool>, held: tokio::sync::mpsc::UnboundedSender<()>) {
        self.held.send_replace(true);
        crate::liveness::held(what, release, held).await;
        self.held.send_replace(false);
    }
}

impl Drop for Endpoints {
    fn drop(&mut self) {
        // Dropping `held` releases held service actors, which then take the stop.
        for cell in &self.cells {
            cell.stop(Some("their parent stopped".into()));
        }
    }
}

/// Whether a service actor takes a message within [`PING_WITHIN`].
fn ping<S: Service>(actor: ActorRef<S::Msg>) -> BoxFuture<'static, bool> {
    Box::pin(async move {
        let asked = actor.call(|r| S::Msg::wrap(Vec::new(), r), Some(PING_WITHIN)).await;
        matches!(asked, Ok(CallResult::Success(_)))
    })
}

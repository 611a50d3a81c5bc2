//! The watchdog's ping and a HANG's hold for the actors of this crate, each through its own
//! message type's `Ping` and `Hold` variants (see `ChildSpec::ping` and `ChildSpec::hold`).

use futures::future::BoxFuture;
use ractor::{ActorCell, ActorRef, RpcReplyPort};
use tokio::sync::{mpsc, watch};

/// Asks the actor's loop a question it answers at once unless stuck.
pub(crate) fn ping<M: ractor::Message>(cell: &ActorCell, ping: fn(RpcReplyPort<()>) -> M) -> BoxFuture<'static, bool> {
    let actor = ActorRef::<M>::from(cell.clone());
    Box::pin(async move { matches!(actor.call(ping, None).await, Ok(ractor::rpc::CallResult::Success(()))) })
}

/// Sends the actor its hold; whether it was sent.
pub(crate) fn hold<M: ractor::Message>(
    cell: &ActorCell,
    hold: fn(watch::Receiver<bool>, mpsc::UnboundedSender<()>) -> M,
    release: watch::Receiver<bool>,
    held: mpsc::UnboundedSender<()>,
) -> bool {
    ActorRef::<M>::from(cell.clone()).cast(hold(release, held)).is_ok()
}

/// The held side, run inside the actor's `handle`: says it is held, then takes no message
/// until released (or until whoever held it is gone).
pub(crate) async fn held(what: &str, mut release: watch::Receiver<bool>, held: mpsc::UnboundedSender<()>) {
    tracing::warn!(actor = %what, "holding this actor's loop (fault injection: HANG)");
    let _ = held.send(());
    while !*release.borrow_and_update() {
        if release.changed().await.is_err() {
            break;
        }
    }
}

/// The `ping` and `hold` of a `ChildSpec` whose actor's message type (`$msg`, in scope) has
/// `Ping` and `Hold` variants.
macro_rules! pinged_and_held {
    ($msg:ident) => {
        fn ping(&self, child: &ractor::ActorCell) -> Option<futures::future::BoxFuture<'static, bool>> {
            Some($crate::liveness::ping(child, $msg::Ping))
        }

        fn hold(
            &self,
            child: &ractor::ActorCell,
            release: tokio::sync::watch::Receiver<bool>,
            held: tokio::sync::mpsc::UnboundedSender<()>,
        ) -> bool {
            $crate::liveness::hold(child, $msg::Hold, release, held)
        }
    };
}
pub(crate) use pinged_and_held;

//! The courier: carries what agents send of their own accord (a process agent's `send`,
//! `publish`, `memory` and `team_task` lines) to the services that carry it out, each in a
//! task of its own, and answers the agent.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use tokio::sync::{mpsc, Mutex};
use troupe_runtime::supervision::{ChildSpec, Chore};

use crate::agent::{Outgoing, OutgoingKind};
use crate::error::ApiError;

/// What carries an agent's outgoing line out: the node's services, as the courier sees them.
pub trait Desk: Clone + Send + Sync + 'static {
    fn carry(&self, from: String, what: OutgoingKind) -> impl Future<Output = Result<Value, ApiError>> + Send;
}

/// The courier, a child of the node (`courier`): agents put their lines in `outbox`, the
/// courier takes them to `desk`. A restarted courier takes up the lines queued meanwhile.
pub fn child(outbox: &OnceLock<mpsc::UnboundedSender<Outgoing>>, desk: impl Desk) -> Arc<dyn ChildSpec> {
    let (tx, rx) = mpsc::unbounded_channel::<Outgoing>();
    let _ = outbox.set(tx);
    let rx = Arc::new(Mutex::new(rx));
    Chore::new("courier", move || {
        let (rx, desk) = (rx.clone(), desk.clone());
        Box::pin(async move {
            let mut rx = rx.lock().await;
            while let Some(out) = rx.recv().await {
                let desk = desk.clone();
                tokio::spawn(async move {
                    let answer = desk.carry(out.from, out.what).await;
                    let _ = out.answer.send(answer.map_err(|e| e.to_string()));
                });
            }
            // The node holds the outbox for its whole life: no line comes any more only
            // while it ends.
            std::future::pending::<()>().await
        })
    })
}

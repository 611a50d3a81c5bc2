//! The courier: carries what agents send of their own accord (a process agent's `send`,
//! `publish`, `memory` and `team_task` lines) to the services that carry it out, each in a
//! task of its own, and answers the agent.

use std::future::Future;
use std::sync::OnceLock;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::agent::{Outgoing, OutgoingKind};
use crate::error::ApiError;

/// What carries an agent's outgoing line out: the node's services, as the courier sees them.
pub trait Desk: Clone + Send + Sync + 'static {
    fn carry(&self, from: String, what: OutgoingKind) -> impl Future<Output = Result<Value, ApiError>> + Send;
}

/// Starts the courier: agents put their lines in `outbox`, the courier takes them to `desk`.
pub fn start(outbox: &OnceLock<mpsc::UnboundedSender<Outgoing>>, desk: impl Desk) -> tokio::task::JoinHandle<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    let _ = outbox.set(tx);
    tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            let desk = desk.clone();
            tokio::spawn(async move {
                let answer = desk.carry(out.from, out.what).await;
                let _ = out.answer.send(answer.map_err(|e| e.to_string()));
            });
        }
    })
}

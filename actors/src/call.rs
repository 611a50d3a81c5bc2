//! Calls into this node's own actors (a supervisor, an agent, the scheduler), each bounded
//! in time, and the bookkeeping of a keyed mutation's idempotency claim: what every room
//! and the services share.

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};
use serde::de::DeserializeOwned;
use serde::Serialize;
use troupe_runtime::idempotency::{Claim, Guard, Idempotency};
use troupe_runtime::store::Store;

use crate::error::ApiError;

/// How long a call into a local actor may take.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Calls a local actor and waits at most [`CALL_TIMEOUT`].
pub(crate) async fn ask<M: ractor::Message, T: Send + 'static>(
    actor: &ActorRef<M>,
    msg: impl FnOnce(RpcReplyPort<T>) -> M,
    what: &str,
) -> Result<T, ApiError> {
    ask_within(actor, msg, what, CALL_TIMEOUT).await
}

/// Calls a local actor whose answer may take longer than a call (a start that waits for its
/// child); waits at most `limit`.
pub(crate) async fn ask_within<M: ractor::Message, T: Send + 'static>(
    actor: &ActorRef<M>,
    msg: impl FnOnce(RpcReplyPort<T>) -> M,
    what: &str,
    limit: Duration,
) -> Result<T, ApiError> {
    // Gone between the look and the call: said of the actor, not in ractor's words.
    let asked = actor
        .call(msg, Some(limit))
        .await
        .map_err(|_| ApiError::Unavailable(format!("{what} is not running")))?;
    match asked {
        CallResult::Success(answer) => Ok(answer),
        _ => Err(ApiError::Unavailable(format!("{what} did not answer"))),
    }
}

/// Keeps the id a keyed mutation answered with, in a batch of its own.
pub(crate) async fn keep(store: &Store, guard: Option<Guard>, id: &str) -> Result<(), ApiError> {
    if let Some(guard) = guard {
        guard.save(store, &id.to_owned()).await?;
    }
    Ok(())
}

/// The guard of a fresh claim, or the id a replayed one answered with.
pub(crate) fn split(claim: Option<Claim<String>>) -> Result<Option<Guard>, String> {
    match claim {
        None => Ok(None),
        Some(Claim::Fresh(guard)) => Ok(Some(guard)),
        Some(Claim::Replay(id)) => Err(id),
    }
}

/// Claims an idempotency key, when the caller gave one.
pub(crate) async fn claim<T: DeserializeOwned>(
    idempotency: &Idempotency,
    scope: &str,
    key: Option<&str>,
    request: &impl Serialize,
) -> Result<Option<Claim<T>>, ApiError> {
    match key {
        Some(key) => Ok(Some(idempotency.claim(scope, key, request).await?)),
        None => Ok(None),
    }
}

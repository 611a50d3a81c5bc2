//! Remotable service actors, one per domain and node, and calls to them.
//!
//! ```text
//!  node a: Api ──call::<Agents>("b", request)──▶ pg "troupe.agents.b" ──▶ node b: ServiceActor<Agents>
//!                                                                              └─ serve(request) in a task
//! ```
//!
//! Each domain has its own message type (a `RactorClusterMessage` with one `Call` variant)
//! and its own request and response enums, carried as rmp-serde bytes and decoded in the
//! handler, where a bad payload is an error answer, not a dropped message.

use std::marker::PhantomData;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ApiError;

/// How long a call to a peer's service may take.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// A domain's wire envelope: bytes in, bytes out.
pub trait Envelope: ractor::Message + Sized {
    fn wrap(request: Vec<u8>, reply: RpcReplyPort<Vec<u8>>) -> Self;
    fn unwrap(self) -> (Vec<u8>, RpcReplyPort<Vec<u8>>);
}

/// Declares a domain's remotable message type.
macro_rules! envelope {
    ($name:ident) => {
        #[derive(ractor_cluster::RactorClusterMessage)]
        pub enum $name {
            /// An rmp-serde request; the reply is an rmp-serde `Result<response, ApiError>`.
            #[rpc]
            Call(Vec<u8>, ractor::RpcReplyPort<Vec<u8>>),
        }

        impl $crate::cluster::remote::Envelope for $name {
            fn wrap(request: Vec<u8>, reply: ractor::RpcReplyPort<Vec<u8>>) -> Self {
                Self::Call(request, reply)
            }
            fn unwrap(self) -> (Vec<u8>, ractor::RpcReplyPort<Vec<u8>>) {
                match self {
                    Self::Call(request, reply) => (request, reply),
                }
            }
        }
    };
}
pub(crate) use envelope;

/// One domain's service: what it answers peers.
pub trait Service: Clone + Send + Sync + 'static {
    /// Its process group on each node: `troupe.<ROLE>.<node>`.
    const ROLE: &'static str;
    type Request: Serialize + DeserializeOwned + Send + 'static;
    type Response: Serialize + DeserializeOwned + Send + 'static;
    type Msg: Envelope;
    fn node_name(&self) -> &str;
    /// Answers a peer from this node's own state (never forwarding again).
    fn serve(&self, request: Self::Request) -> BoxFuture<'static, Result<Self::Response, ApiError>>;
}

pub fn group(role: &str, node: &str) -> String {
    format!("troupe.{role}.{node}")
}

/// The actor that serves a domain to peers. Each request runs in its own task, so a slow
/// one never holds up the others.
pub struct ServiceActor<S: Service>(PhantomData<S>);

impl<S: Service> Default for ServiceActor<S> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<S: Service> Actor for ServiceActor<S> {
    type Msg = S::Msg;
    type State = S;
    type Arguments = S;

    async fn pre_start(&self, myself: ActorRef<S::Msg>, service: S) -> Result<S, ActorProcessingErr> {
        ractor::pg::join(group(S::ROLE, service.node_name()), vec![myself.get_cell()]);
        Ok(service)
    }

    async fn handle(&self, _myself: ActorRef<S::Msg>, msg: S::Msg, service: &mut S) -> Result<(), ActorProcessingErr> {
        let (bytes, reply) = msg.unwrap();
        let service = service.clone();
        tokio::spawn(async move {
            let answer = match troupe_runtime::codec::decode::<S::Request>(&bytes) {
                Ok(request) => service.serve(request).await,
                Err(e) => Err(ApiError::invalid(format!("undecodable {} request: {e}", S::ROLE))),
            };
            match troupe_runtime::codec::encode(&answer) {
                Ok(bytes) => {
                    let _ = reply.send(bytes);
                }
                Err(e) => tracing::error!(error = %e, role = S::ROLE, "cannot encode a peer answer"),
            }
        });
        Ok(())
    }
}

/// Whether `node` has a `role` service connected to this node now.
pub fn is_connected(role: &str, node: &str) -> bool {
    !ractor::pg::get_members(&group(role, node)).is_empty()
}

/// Calls the `S` service of `node`.
pub async fn call<S: Service>(node: &str, request: &S::Request, timeout: Duration) -> Result<S::Response, ApiError> {
    let cell = ractor::pg::get_members(&group(S::ROLE, node))
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::Unavailable(format!("node {node} is not connected")))?;
    let bytes = troupe_runtime::codec::encode(request)?;
    let service: ActorRef<S::Msg> = cell.into();
    match service.call(|reply| S::Msg::wrap(bytes, reply), Some(timeout)).await {
        Ok(CallResult::Success(reply)) => troupe_runtime::codec::decode::<Result<S::Response, ApiError>>(&reply)?,
        Ok(CallResult::Timeout) => Err(ApiError::Unavailable(format!(
            "node {node} did not answer within {} ms",
            timeout.as_millis()
        ))),
        Ok(CallResult::SenderError) | Err(_) => Err(ApiError::Unavailable(format!("node {node} went away"))),
    }
}

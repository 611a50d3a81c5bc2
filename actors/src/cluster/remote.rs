//! Remotable service actors, one per domain and node, and calls to them.
//!
//! ```text
//!  node a: agents.holding(id).get(id) ──▶ pg "troupe.agents.b" ──▶ node b: ServiceActor<Agents>
//!            │ (id held here)                                          └─ serve(call) in a task
//!            └──▶ <Agents as AgentsLocal>::get(id)       (the same local function)
//! ```
//!
//! Each domain declares its peer requests once, with [`service!`]: one line per request gives
//! the request and response enums, the trait of the domain's local functions, the typed calls
//! through [`At`] (this node or the one that holds an entity) and [`Everywhere`] (every member,
//! answers merged and missing nodes named), and the dispatch of a peer's request to the local
//! function. A request travels as rmp-serde bytes in a domain's own envelope and is decoded in
//! the handler, where a bad payload is an error answer, not a dropped message.

use std::time::Duration;

use futures::future::BoxFuture;
use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Cluster, Gathered, MemberStatus};
use crate::error::ApiError;

tokio::task_local! {
    /// While a client's request runs ([`noting_peer_commits`]): the highest log index a peer
    /// that answered part of it had applied when it answered.
    static PEER_APPLIED: std::cell::Cell<u64>;
    /// While a peer's request is served: the Raft id its sender said it is ([`call_as`]).
    static CALLER_RAFT_ID: Option<u64>;
}

/// The Raft id the sender of the request being served said it is: a beat says it, so a
/// node under a member's name that is not that member is told apart. `None` outside a
/// peer's request, and from a peer of an earlier release.
pub fn caller_raft_id() -> Option<u64> {
    CALLER_RAFT_ID.try_with(|id| *id).ok().flatten()
}

/// Serves one peer's request, its sender's Raft id known to it ([`caller_raft_id`]).
pub(super) async fn served_as<F: std::future::Future>(raft_id: Option<u64>, serve: F) -> F::Output {
    CALLER_RAFT_ID.scope(raft_id, serve).await
}

/// Runs a client's request, and tells the highest log index a peer that answered part of
/// it had applied by then (0: no peer did). A write a peer made for it is in the log at or
/// below that index, which this node may not have applied yet: a mutation's answer carries
/// the higher of the two as its `commitIndex`, so a read that waits for it, on any node,
/// sees the write. A peer of an earlier release tells no index.
pub async fn noting_peer_commits<F: std::future::Future>(request: F) -> (F::Output, u64) {
    PEER_APPLIED
        .scope(std::cell::Cell::new(0), async move {
            let out = request.await;
            (out, PEER_APPLIED.with(std::cell::Cell::get))
        })
        .await
}

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
            /// An rmp-serde [`Call`]; the reply is an rmp-serde `Result<response, ApiError>`.
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

/// What a peer sends: a request, and for a keyed mutation the idempotency key it carries, so a
/// call retried after a timeout gets the first answer instead of acting twice.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Call<R> {
    pub key: Option<String>,
    pub request: R,
}

/// A request that knows how long the peer may take over it (a VM stop waits for its guest).
pub trait Within {
    fn within(&self) -> Duration;
}

/// The role of the service every member serves (the node's own, which answers beats): a
/// peer is connected while its process group of this role is.
pub const MEMBER_ROLE: &str = "node";

/// One domain's service: what it answers peers. Written by [`service!`], never by hand.
pub trait Service: Clone + Send + Sync + 'static {
    /// Its process group on each node: `troupe.<ROLE>.<node>`.
    const ROLE: &'static str;
    type Request: Serialize + DeserializeOwned + Clone + Within + Send + Sync + 'static;
    type Response: Serialize + DeserializeOwned + Send + 'static;
    type Msg: Envelope;
    /// The cluster this node's service belongs to.
    fn cluster(&self) -> &Cluster;
    /// Answers a peer from this node's own state (never forwarding again).
    fn serve(&self, call: Call<Self::Request>) -> BoxFuture<'static, Result<Self::Response, ApiError>>;
}

/// Declares a domain's peer requests once.
///
/// ```ignore
/// service! {
///     service Tasks as "tasks" (TasksMsg, TasksRequest, TasksResponse, TasksLocal);
///     /// Queues a task here.
///     keyed Submit => submit(request: Box<SubmitTaskRequest>) -> TaskRecord;
///     call Get => get(id: String) -> Option<TaskRecord>;
///     call List => list(filter: TaskFilter, after: Option<String>, first: u32) -> (Vec<TaskRecord>, bool);
/// }
/// ```
///
/// gives `TasksRequest::{Submit, Get, List}`, `TasksResponse::{…}`, the trait `TasksLocal`
/// (`submit(&self, request, key: Option<String>)`, `get(&self, id)`, …: what `Tasks`
/// implements), the calls `At<'_, Tasks>::submit(request, key)` and
/// `Everywhere<'_, Tasks>::list(…)`, and `impl Service for Tasks`. A `keyed` request is a
/// mutation: its call carries the caller's idempotency key, or a fresh one, and is retried
/// once with it when the peer did not answer. `, within <expr>` says how long a peer may take
/// (the expression sees the request's fields by reference); [`PEER_TIMEOUT`] by default.
macro_rules! service {
    (
        service $svc:ident as $role:literal ($msg:ident, $req:ident, $resp:ident, $local:ident);
        $(
            $(#[$meta:meta])*
            $kind:ident $variant:ident => $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) -> $out:ty
            $(, within $within:expr)? ;
        )*
    ) => {
        $crate::cluster::remote::envelope!($msg);

        /// A request to a peer's service: one variant per declared request.
        #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
        #[allow(clippy::large_enum_variant)]
        pub enum $req {
            $( $variant { $($arg: $ty),* }, )*
        }

        /// A peer's answer: one variant per declared request.
        #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
        #[allow(clippy::large_enum_variant)]
        pub enum $resp {
            $( $variant($out), )*
        }

        impl $crate::cluster::remote::Within for $req {
            #[allow(unused_variables)]
            fn within(&self) -> std::time::Duration {
                match self {
                    $( Self::$variant { $($arg),* } => $crate::cluster::remote::within!($($within)?), )*
                }
            }
        }

        /// What this node does for each request, whoever sent it.
        pub trait $local {
            $(
                $crate::cluster::remote::local_fn!($(#[$meta])* $kind $name ($($arg: $ty),*) -> $out);
            )*
        }

        impl $crate::cluster::remote::At<'_, $svc> {
            $(
                $crate::cluster::remote::at_fn!($(#[$meta])* $kind $svc $local $req $resp $variant $name ($($arg: $ty),*) -> $out);
            )*
        }

        impl $crate::cluster::remote::Peer<'_, $svc> {
            $(
                $crate::cluster::remote::peer_fn!($(#[$meta])* $kind $svc $local $req $resp $variant $name ($($arg: $ty),*) -> $out);
            )*
        }

        impl $crate::cluster::remote::Everywhere<'_, $svc> {
            $(
                $crate::cluster::remote::every_fn!($(#[$meta])* $kind $svc $local $req $resp $variant $name ($($arg: $ty),*) -> $out);
            )*
        }

        impl $crate::cluster::remote::Service for $svc {
            const ROLE: &'static str = $role;
            type Request = $req;
            type Response = $resp;
            type Msg = $msg;

            fn cluster(&self) -> &$crate::cluster::Cluster {
                $crate::cluster::remote::Located::cluster(self)
            }

            fn serve(
                &self,
                call: $crate::cluster::remote::Call<$req>,
            ) -> futures::future::BoxFuture<'static, Result<$resp, $crate::error::ApiError>> {
                let me = self.clone();
                #[allow(unused_variables)]
                let key = call.key;
                Box::pin(async move {
                    match call.request {
                        $(
                            $req::$variant { $($arg),* } => $crate::cluster::remote::local_call!(
                                $kind $svc $local $name (&me $(, $arg)*), key
                            )
                            .await
                            .map($resp::$variant),
                        )*
                    }
                })
            }
        }
    };
}
pub(crate) use service;

#[doc(hidden)]
macro_rules! within {
    () => {
        $crate::cluster::remote::PEER_TIMEOUT
    };
    ($within:expr) => {
        $within
    };
}
pub(crate) use within;

#[doc(hidden)]
macro_rules! local_fn {
    ($(#[$meta:meta])* call $name:ident ($($arg:ident: $ty:ty),*) -> $out:ty) => {
        $(#[$meta])*
        fn $name(&self, $($arg: $ty),*)
            -> impl std::future::Future<Output = Result<$out, $crate::error::ApiError>> + Send;
    };
    ($(#[$meta:meta])* keyed $name:ident ($($arg:ident: $ty:ty),*) -> $out:ty) => {
        $(#[$meta])*
        fn $name(&self, $($arg: $ty,)* key: Option<String>)
            -> impl std::future::Future<Output = Result<$out, $crate::error::ApiError>> + Send;
    };
}
pub(crate) use local_fn;

#[doc(hidden)]
macro_rules! local_call {
    (call $svc:ident $local:ident $name:ident ($($a:expr),*), $key:ident) => {
        <$svc as $local>::$name($($a),*)
    };
    (keyed $svc:ident $local:ident $name:ident ($($a:expr),*), $key:ident) => {
        <$svc as $local>::$name($($a,)* $key)
    };
}
pub(crate) use local_call;

#[doc(hidden)]
macro_rules! at_fn {
    ($(#[$meta:meta])* call $svc:ident $local:ident $req:ident $resp:ident $variant:ident $name:ident ($($arg:ident: $ty:ty),*) -> $out:ty) => {
        $(#[$meta])*
        pub async fn $name(&self, $($arg: $ty),*) -> Result<$out, $crate::error::ApiError> {
            match self {
                Self::Here(me) => <$svc as $local>::$name(me, $($arg),*).await,
                Self::Peer(me, node) => $crate::cluster::remote::Peer(*me, node.clone()).$name($($arg),*).await,
            }
        }
    };
    ($(#[$meta:meta])* keyed $svc:ident $local:ident $req:ident $resp:ident $variant:ident $name:ident ($($arg:ident: $ty:ty),*) -> $out:ty) => {
        $(#[$meta])*
        pub async fn $name(&self, $($arg: $ty,)* key: Option<String>) -> Result<$out, $crate::error::ApiError> {
            match self {
                Self::Here(me) => <$svc as $local>::$name(me, $($arg,)* key).await,
                Self::Peer(me, node) => $crate::cluster::remote::Peer(*me, node.clone()).$name($($arg,)* key).await,
            }
        }
    };
}
pub(crate) use at_fn;

#[doc(hidden)]
macro_rules! peer_fn {
    ($(#[$meta:meta])* call $svc:ident $local:ident $req:ident $resp:ident $variant:ident $name:ident ($($arg:ident: $ty:ty),*) -> $out:ty) => {
        $(#[$meta])*
        pub async fn $name(&self, $($arg: $ty),*) -> Result<$out, $crate::error::ApiError> {
            let request = $req::$variant { $($arg),* };
            match $crate::cluster::remote::ask(self.0, &self.1, request).await? {
                $resp::$variant(out) => Ok(out),
                #[allow(unreachable_patterns)]
                _ => Err($crate::cluster::remote::unexpected(stringify!($name))),
            }
        }
    };
    ($(#[$meta:meta])* keyed $svc:ident $local:ident $req:ident $resp:ident $variant:ident $name:ident ($($arg:ident: $ty:ty),*) -> $out:ty) => {
        $(#[$meta])*
        pub async fn $name(&self, $($arg: $ty,)* key: Option<String>) -> Result<$out, $crate::error::ApiError> {
            let request = $req::$variant { $($arg),* };
            match $crate::cluster::remote::forward(self.0, &self.1, request, key).await? {
                $resp::$variant(out) => Ok(out),
                #[allow(unreachable_patterns)]
                _ => Err($crate::cluster::remote::unexpected(stringify!($name))),
            }
        }
    };
}
pub(crate) use peer_fn;

#[doc(hidden)]
macro_rules! every_fn {
    ($(#[$meta:meta])* call $svc:ident $local:ident $req:ident $resp:ident $variant:ident $name:ident ($($arg:ident: $ty:ty),*) -> $out:ty) => {
        $(#[$meta])*
        pub async fn $name(&self, $($arg: $ty),*) -> Result<$crate::cluster::Gathered<$out>, $crate::error::ApiError> {
            let gathered = $crate::cluster::remote::gather(self.0, $req::$variant { $($arg),* }).await?;
            let answers = gathered
                .answers
                .into_iter()
                .map(|answer| match answer {
                    $resp::$variant(out) => Ok(out),
                    #[allow(unreachable_patterns)]
                    _ => Err($crate::cluster::remote::unexpected(stringify!($name))),
                })
                .collect::<Result<Vec<$out>, _>>()?;
            Ok($crate::cluster::Gathered { answers, missing: gathered.missing })
        }
    };
    ($(#[$meta:meta])* keyed $($rest:tt)*) => {};
}
pub(crate) use every_fn;

/// A service that knows its node's cluster (the one hand-written part of a service).
pub trait Located {
    fn cluster(&self) -> &Cluster;
}

/// A domain's service on one node: this one (its local functions, called directly) or a peer
/// (the same request, sent). Its typed calls come from the domain's [`service!`].
pub enum At<'a, S> {
    Here(&'a S),
    Peer(&'a S, String),
}

impl<'a, S: Service> At<'a, S> {
    /// The service on the node that holds the entity `id`: the one routing decision.
    pub fn holding(service: &'a S, id: &str) -> Self {
        match service.cluster().holder(id) {
            Some(node) => Self::Peer(service, node),
            None => Self::Here(service),
        }
    }

    /// The service on `node`, or on this node when `node` is `None` or this node.
    pub fn on(service: &'a S, node: Option<&str>) -> Self {
        match node {
            Some(node) if node != service.cluster().name() => Self::Peer(service, node.to_owned()),
            _ => Self::Here(service),
        }
    }

    /// The node the calls go to, when it is a peer.
    pub fn peer(&self) -> Option<&str> {
        match self {
            Self::Here(_) => None,
            Self::Peer(_, node) => Some(node),
        }
    }
}

/// A domain's service on one peer, always sent (a method that routes by itself asks the
/// holder this way, and goes on with its own work when it is the holder).
pub struct Peer<'a, S>(pub &'a S, pub String);

/// A domain's service on every member at once: each call answers this node's part and every
/// reachable peer's, and names the peers whose part is missing.
pub struct Everywhere<'a, S>(pub &'a S);

pub fn unexpected(what: &str) -> ApiError {
    ApiError::Internal(format!("a peer answered {what} with something else"))
}

/// Asks this node's service and every reachable peer's at once: this node's answer first
/// (its error fails the whole), then each peer's that came in time; `missing` names the rest.
pub async fn gather<S: Service>(service: &S, request: S::Request) -> Result<Gathered<S::Response>, ApiError> {
    let peers = service.cluster().gather::<S>(&request);
    let here = service.serve(Call {
        key: None,
        request: request.clone(),
    });
    let (here, peers) = futures::join!(here, peers);
    let mut answers = Vec::with_capacity(peers.answers.len() + 1);
    answers.push(here?);
    answers.extend(peers.answers);
    Ok(Gathered {
        answers,
        missing: peers.missing,
    })
}

/// Sends a request to `node`'s service and waits as long as the request may take there.
pub async fn ask<S: Service>(service: &S, node: &str, request: S::Request) -> Result<S::Response, ApiError> {
    let cluster = service.cluster();
    cluster.ensure_reachable(node)?;
    let within = request.within().max(PEER_TIMEOUT);
    call::<S>(node, &Call { key: None, request }, within).await
}

/// Sends a mutation to the peer that must carry it out. It always carries an idempotency
/// key (the caller's or a new one), so a call that timed out after the peer acted is
/// retried once and gets the first answer instead of acting twice.
pub async fn forward<S: Service>(
    service: &S,
    node: &str,
    request: S::Request,
    key: Option<String>,
) -> Result<S::Response, ApiError> {
    let cluster = service.cluster();
    if !is_connected(S::ROLE, node) && cluster.status(node).is_none() {
        return Err(ApiError::invalid(format!("unknown or unreachable node {node:?}")));
    }
    let within = request.within().max(PEER_TIMEOUT);
    let key = key.unwrap_or_else(|| format!("fwd-{}", uuid::Uuid::new_v4()));
    let call_ = Call {
        key: Some(key.clone()),
        request,
    };
    let first = async {
        cluster.ensure_reachable(node)?;
        call::<S>(node, &call_, within).await
    };
    match first.await {
        // Refused before it acted (the peer began to shut down): nothing to ask again.
        Err(e) if crate::serving::refused_for_stop(&e) => Err(e),
        Err(ApiError::Unavailable(first)) if cluster.status(node) != Some(MemberStatus::Down) => {
            tracing::warn!(%node, error = %first, %key, "forwarding failed; retrying once with the same key");
            call::<S>(node, &call_, within).await.map_err(|e| match e {
                // Sent, and not answered: the keyed call's advice, not the one `call` gives.
                // (Neither try left this node, as for a peer not connected: nothing was done,
                // and the error says so as it is.)
                ApiError::Unavailable(m) if m.contains(MAY_HAVE_ACTED) || first.contains(MAY_HAVE_ACTED) => {
                    let m = m.split(&format!("; {MAY_HAVE_ACTED}")).next().unwrap_or(&m);
                    ApiError::Unavailable(format!(
                        "{m}; {MAY_HAVE_ACTED}: retry with idempotencyKey {key:?} to get its answer"
                    ))
                }
                other => other,
            })
        }
        other => other,
    }
}

pub fn group(role: &str, node: &str) -> String {
    format!("troupe.{role}.{node}")
}

/// Whether a call failed before its request left this node (the peer is not connected, is
/// down or cut off): nothing was done there, and the caller may do it elsewhere.
pub fn never_sent(e: &ApiError) -> bool {
    matches!(e, ApiError::Unavailable(m) if !m.contains(MAY_HAVE_ACTED))
}

/// Whether `node` has a `role` service connected to this node now.
pub fn is_connected(role: &str, node: &str) -> bool {
    !ractor::pg::get_members(&group(role, node)).is_empty()
}

/// What an error of a request that reached a peer and was not answered says: read before
/// sending it again (or send it with the same idempotency key).
const MAY_HAVE_ACTED: &str = "it may have acted";
const READ_FIRST: &str = "read what it would change before sending it again";

/// Calls the `S` service of `node`, waiting at most `timeout`. A request that was sent and
/// not answered (the peer went away, or did not answer in time) is `UNAVAILABLE` saying the
/// peer may have acted; one that could not be sent says so.
pub async fn call<S: Service>(node: &str, call: &Call<S::Request>, timeout: Duration) -> Result<S::Response, ApiError> {
    send::<S>(node, troupe_runtime::codec::encode(call)?, timeout).await
}

/// [`call`], saying this node's Raft id after the request (where a peer of an earlier
/// release, which reads the request alone, does not look).
pub async fn call_as<S: Service>(
    node: &str,
    call: &Call<S::Request>,
    raft_id: u64,
    timeout: Duration,
) -> Result<S::Response, ApiError> {
    let mut bytes = troupe_runtime::codec::encode(call)?;
    bytes.extend(troupe_runtime::codec::encode(&raft_id)?);
    send::<S>(node, bytes, timeout).await
}

async fn send<S: Service>(node: &str, bytes: Vec<u8>, timeout: Duration) -> Result<S::Response, ApiError> {
    if cut_off(node) {
        return Err(ApiError::Unavailable(format!(
            "node {node} is cut off from this node (injected partition)"
        )));
    }
    let cell = ractor::pg::get_members(&group(S::ROLE, node))
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::Unavailable(format!("node {node} is not connected")))?;
    let service: ActorRef<S::Msg> = cell.into();
    troupe_runtime::pauses::watch_from_now();
    let asked = std::time::Instant::now();
    // Sent, and not answered: the peer may have carried the request out, and the caller must
    // not take the error for "nothing was done". When this node itself did not run for much
    // of the wait (frozen, starved), that is said: the peer may well have answered in time.
    let late = || {
        let paused = troupe_runtime::pauses::paused_since(asked);
        ApiError::Unavailable(match paused >= Duration::from_secs(1) {
            true => format!(
                "no answer from node {node} within {} ms, while this node itself did not run for {:.1} s of \
                 that time (its process stopped or starved: SIGSTOP, a paused VM, an overloaded machine); \
                 {MAY_HAVE_ACTED}: {READ_FIRST}",
                timeout.as_millis(),
                paused.as_secs_f64()
            ),
            false => format!(
                "node {node} did not answer within {} ms; {MAY_HAVE_ACTED}: {READ_FIRST}",
                timeout.as_millis()
            ),
        })
    };
    match service.call(|reply| S::Msg::wrap(bytes, reply), Some(timeout)).await {
        Ok(CallResult::Success(reply)) => {
            let (answer, applied) = troupe_runtime::codec::decode_then::<Result<S::Response, ApiError>, u64>(&reply)?;
            if let Some(applied) = applied {
                let _ = PEER_APPLIED.try_with(|seen| seen.set(seen.get().max(applied)));
            }
            // Said of the peer, for this node's client.
            answer.map_err(|e| match crate::serving::refused_for_stop(&e) {
                true => crate::serving::peer_shutting_down(node),
                false => e,
            })
        }
        Ok(CallResult::Timeout) => Err(late()),
        // ractor_cluster drops a pending call's reply port once it has expired, which can
        // beat the call's own timeout: that is a peer that did not answer, not one gone.
        Ok(CallResult::SenderError) | Err(_) if asked.elapsed() >= timeout => Err(late()),
        Ok(CallResult::SenderError) | Err(_) => Err(ApiError::Unavailable(format!(
            "node {node} went away before it answered; {MAY_HAVE_ACTED}: {READ_FIRST}"
        ))),
    }
}

mod actor;
mod closing;
mod gates;
pub use actor::ServiceActor;
pub use closing::PeerCalls;
pub(crate) use gates::{cut_off, raft_cut_off};
pub use gates::{set_armed_faults, set_partition_gates};

#[cfg(test)]
mod tests;

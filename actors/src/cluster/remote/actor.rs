//! The actor that serves one domain to peers: each request in a task of its own, held while
//! a HANG holds its parent, and refused (nothing done) once its node closes it as it stops.

use std::marker::PhantomData;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::watch;

use super::{group, Call, Envelope, PeerCalls, Service};
use crate::error::ApiError;

/// The actor that serves a domain to peers. Each request runs in its own task, so a slow
/// one never holds up the others. While its flag is set (a HANG of its parent, see
/// `endpoints`), it takes no request.
pub struct ServiceActor<S: Service>(PhantomData<S>);

impl<S: Service> Default for ServiceActor<S> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<S: Service> Actor for ServiceActor<S> {
    type Msg = S::Msg;
    type State = Served<S>;
    type Arguments = (S, watch::Receiver<bool>, Option<PeerCalls>);

    async fn pre_start(
        &self,
        myself: ActorRef<S::Msg>,
        (service, held, closing): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let name = group(S::ROLE, &service.cluster().name());
        ractor::pg::join(name.clone(), vec![myself.get_cell()]);
        // Once closed, peers soon stop sending it anything (those that still do are refused).
        let leave = closing.clone().map(|calls| {
            let cell = myself.get_cell();
            tokio::spawn(async move {
                calls.closed().await;
                ractor::pg::leave(name, vec![cell]);
            })
        });
        Ok(Served {
            service,
            held,
            closing,
            leave,
        })
    }

    async fn post_stop(&self, _myself: ActorRef<S::Msg>, served: &mut Self::State) -> Result<(), ActorProcessingErr> {
        if let Some(leave) = served.leave.take() {
            leave.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<S::Msg>,
        msg: S::Msg,
        served: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Held: the request waits in the loop (and those behind it in the mailbox).
        while *served.held.borrow_and_update() {
            if served.held.changed().await.is_err() {
                break;
            }
        }
        let (bytes, reply) = msg.unwrap();
        let service = served.service.clone();
        let taken = match served.closing.as_ref().map(PeerCalls::take) {
            // The node is stopping: refused before anything of it is done.
            Some(None) => {
                let refused: Result<S::Response, ApiError> = Err(crate::serving::shutting_down());
                if let Some(bytes) = answer(&service, &refused) {
                    let _ = reply.send(bytes);
                }
                return Ok(());
            }
            Some(taken) => taken,
            None => None,
        };
        tokio::spawn(async move {
            let answered = match troupe_runtime::codec::decode_then::<Call<S::Request>, u64>(&bytes) {
                Ok((call, raft_id)) => super::served_as(raft_id, service.serve(call)).await,
                Err(e) => Err(ApiError::invalid(format!("undecodable {} request: {e}", S::ROLE))),
            };
            if let Some(bytes) = answer(&service, &answered) {
                let _ = reply.send(bytes);
            }
            drop(taken);
        });
        Ok(())
    }
}

/// What a [`ServiceActor`] keeps.
pub struct Served<S: Service> {
    service: S,
    /// True while a HANG holds it.
    held: watch::Receiver<bool>,
    /// The domains' services close as their node stops (the node and Raft services, which
    /// its stop itself needs, never do).
    closing: Option<PeerCalls>,
    leave: Option<tokio::task::JoinHandle<()>>,
}

/// An answer's bytes, and after them what this node applied by now (it holds what the
/// request wrote): see [`super::noting_peer_commits`].
fn answer<S: Service>(service: &S, answer: &Result<S::Response, ApiError>) -> Option<Vec<u8>> {
    match troupe_runtime::codec::encode(answer) {
        Ok(mut bytes) => {
            if let Ok(applied) = troupe_runtime::codec::encode(&service.cluster().applied_index()) {
                bytes.extend(applied);
            }
            Some(bytes)
        }
        Err(e) => {
            tracing::error!(error = %e, role = S::ROLE, "cannot encode a peer answer");
            None
        }
    }
}

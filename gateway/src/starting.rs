//! What the gateway's address answers while the node starts: its store opening, a joining
//! node waiting to be admitted to the cluster's log and catching up (up to two minutes on a
//! long log). `/livez` says the process is alive, so an orchestrator's liveness probe does
//! not restart a node in the middle of its join; `/healthz`, `/readyz` and every other path
//! answer 503 with what the start is waiting for. The gateway takes the same socket over
//! once the node runs ([`Starting::hand_over`]), so a connection waiting to be accepted is
//! answered by one of the two.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// How long the hand-over waits for the answers the early server is writing.
const ANSWERS_WITHIN: Duration = Duration::from_secs(1);

/// The early server on the gateway's socket.
pub struct Starting {
    listener: std::net::TcpListener,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

#[derive(Clone)]
struct Phase {
    node: String,
    since: Instant,
    now: watch::Receiver<String>,
}

impl Phase {
    /// "node b has been starting for 12 s: waiting to be admitted …".
    fn said(&self) -> String {
        format!(
            "node {} has been starting for {} s: {}",
            self.node,
            self.since.elapsed().as_secs(),
            *self.now.borrow()
        )
    }
}

impl Starting {
    /// Answers on `listener` (bound, not yet accepting) what the node's start is doing, as
    /// `phase` says, until [`Self::hand_over`].
    pub fn answer(
        listener: std::net::TcpListener,
        node: &str,
        phase: watch::Receiver<String>,
    ) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        let accepting = tokio::net::TcpListener::from_std(listener.try_clone()?)?;
        let state = Phase {
            node: node.to_owned(),
            since: Instant::now(),
            now: phase,
        };
        let app = Router::new()
            .route("/livez", get(alive))
            .route("/healthz", get(not_yet))
            .route("/readyz", get(not_yet))
            .fallback(not_yet)
            .with_state(state);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let served = axum::serve(accepting, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = served.await {
                tracing::warn!(error = %e, "the gateway's start-up answers stopped");
            }
        });
        Ok(Self { listener, stop, server })
    }

    /// Stops answering (the answers being written are finished, at most a second) and gives
    /// the socket back for the gateway to serve.
    pub async fn hand_over(self) -> std::net::TcpListener {
        let Self {
            listener,
            stop,
            mut server,
        } = self;
        let _ = stop.send(());
        if tokio::time::timeout(ANSWERS_WITHIN, &mut server).await.is_err() {
            server.abort();
        }
        listener
    }
}

async fn alive(State(phase): State<Phase>) -> Response {
    Json(json!({ "status": "ok", "node": phase.node, "starting": phase.said() })).into_response()
}

/// 503 with the phase: a probe's reasons, and a GraphQL error for everything else.
async fn not_yet(State(phase): State<Phase>, uri: axum::http::Uri) -> Response {
    let said = phase.said();
    let body = match uri.path() {
        "/healthz" | "/readyz" => json!({ "status": "unavailable", "node": phase.node, "reasons": [said] }),
        _ => json!({
            "errors": [{
                "message": format!("{said}; ask again once its /healthz says ok"),
                "extensions": { "code": "UNAVAILABLE" },
            }],
        }),
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(body),
    )
        .into_response()
}

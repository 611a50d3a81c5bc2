//! The HTTP side: routes, limits, auth before execution, and the gateway as a supervised
//! child of the node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::error_handling::HandleErrorLayer;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{BoxError, Json, Router};
use futures::future::BoxFuture;
use metrics_exporter_prometheus::PrometheusHandle;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use troupe_actors::Api;
use troupe_runtime::config::outside::Hook;
use troupe_runtime::config::Config;
use troupe_runtime::supervision::ChildSpec;

use crate::auth::{self, Refusal};
use crate::error;
use crate::schema::{self, TroupeSchema};
use crate::starting::Starting;
use crate::ws::{self, WsLimits};

/// The gateway's limits, from the node's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub body_limit: usize,
    pub metrics_auth: bool,
    pub http_timeout: Duration,
    pub history_interval: Duration,
    pub http_max_in_flight: usize,
    pub ws_max_connections: usize,
    pub ws: WsLimits,
    /// Inbound webhooks (`POST /hooks/<name>`).
    pub hooks: Arc<[Hook]>,
}

impl From<&Config> for Settings {
    fn from(c: &Config) -> Self {
        Self {
            body_limit: c.body_limit_bytes,
            metrics_auth: c.metrics_auth,
            http_timeout: c.http_timeout,
            history_interval: c.history_interval,
            http_max_in_flight: c.http_max_in_flight,
            ws_max_connections: c.ws_max_connections,
            ws: WsLimits {
                max_subscriptions: c.ws_max_subscriptions,
                init_timeout: c.ws_init_timeout,
                keepalive: c.ws_keepalive,
            },
            hooks: c.hooks.clone().into(),
        }
    }
}

/// What every request's handler reads; shared behind one `Arc`, since axum clones the state
/// for each request at every layer (cloning the `Api` itself cost 4 % of a node's CPU under
/// a load of `submitTask`).
pub struct AppState {
    pub api: Api,
    pub schema: TroupeSchema,
    pub metrics: PrometheusHandle,
    pub settings: Settings,
    ws_slots: Arc<Semaphore>,
}

/// The gateway's routes. Plain HTTP requests are bounded in time and in number at once (a
/// request over either limit is answered 408 or 503 at once); WebSockets live as long as
/// they are used, bounded in number.
pub fn router(api: Api, metrics: PrometheusHandle, settings: Settings) -> Router {
    let history = crate::history::History::start(metrics.clone(), api.clone(), settings.history_interval);
    let hooks_limit = crate::hooks::body_limit(&settings.hooks, settings.body_limit);
    let state = AppState {
        schema: schema::build(api.clone(), history),
        api,
        metrics,
        ws_slots: Arc::new(Semaphore::new(settings.ws_max_connections)),
        settings: settings.clone(),
    };
    let bounded = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(overloaded))
        .load_shed()
        .concurrency_limit(settings.http_max_in_flight)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            settings.http_timeout,
        ));
    let http = Router::new()
        .merge(crate::dashboard::routes())
        .route("/graphql", get(graphql_get).post(graphql))
        .route("/metrics", get(prometheus))
        .layer(RequestBodyLimitLayer::new(settings.body_limit))
        .layer(bounded.clone());
    // The probes are not traced: an unready node answers each readiness probe 503, which
    // the trace layer would log as an ERROR every few seconds (its reasons are in /readyz).
    let probes = Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .layer(bounded.clone());
    // Outside the time bound: a submit_task call may wait for its task up to 10 minutes.
    let mcp = Router::new()
        .nest_service("/mcp", crate::mcp::service(state.schema.clone(), state.api.clone()))
        .layer(axum::middleware::from_fn(crate::mcp::session_ended))
        .layer(RequestBodyLimitLayer::new(settings.body_limit))
        .layer(axum::middleware::map_response(crate::mcp::too_large))
        .layer(axum::middleware::from_fn_with_state(
            state.api.clone(),
            crate::mcp::authorized,
        ));
    // Webhooks in take bodies of their own size (GitHub sends up to 25 MB), bounded in time.
    let hooks = Router::new()
        .route("/hooks/{name}", axum::routing::post(crate::hooks::receive))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(hooks_limit))
        .layer(bounded.clone());
    Router::new()
        .route("/graphql/ws", get(graphql_ws))
        .merge(http)
        .merge(mcp)
        .merge(hooks)
        .layer(axum::middleware::map_response(error::coded_too_large))
        .layer(TraceLayer::new_for_http().on_failure(failed))
        .merge(probes)
        .with_state(Arc::new(state))
}

/// A request that failed: a 503 is an answer the node means (overloaded, unavailable, left
/// the cluster), said at INFO; any other failure is an ERROR.
fn failed(class: tower_http::classify::ServerErrorsFailureClass, latency: Duration, _span: &tracing::Span) {
    use tower_http::classify::ServerErrorsFailureClass::StatusCode as Status;
    let ms = latency.as_millis() as u64;
    match class {
        Status(status) if status == StatusCode::SERVICE_UNAVAILABLE => {
            tracing::info!(latency_ms = ms, "answered 503: the node cannot take the request now")
        }
        class => tracing::error!(classification = %class, latency_ms = ms, "response failed"),
    }
}

async fn overloaded(_: BoxError) -> Response {
    let body = json!({ "data": null, "errors": [{ "message": "the gateway is at its limit of requests in flight; retry shortly", "extensions": { "code": "UNAVAILABLE" } }] });
    (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "1")], Json(body)).into_response()
}

fn refused(r: &Refusal) -> Response {
    let status = r.status();
    let body = json!({ "data": null, "errors": [{ "message": r.message(), "extensions": { "code": r.code() } }] });
    (status, Json(body)).into_response()
}

/// `GET /graphql` takes the operation in `?query=` (and `?variables=`); without one (a
/// browser opening the URL) it says how to ask instead of answering a parser error.
async fn graphql_get(
    State(s): State<Arc<AppState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    req: GraphQLRequest<error::Unreadable>,
) -> Response {
    let asks = uri.query().is_some_and(|q| {
        q.split('&')
            .any(|p| p.strip_prefix("query=").is_some_and(|v| !v.is_empty()))
    });
    if !asks {
        let message = "GET /graphql takes the operation in ?query=… (and ?variables=… as JSON); or POST a JSON body {\"query\": …}; or open /graphiql in a browser";
        let body =
            json!({ "data": null, "errors": [{ "message": message, "extensions": { "code": "INVALID_INPUT" } }] });
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    graphql(State(s), headers, req).await
}

async fn graphql(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    req: GraphQLRequest<error::Unreadable>,
) -> Response {
    let caller = match auth::from_headers(&s.api, &headers).await {
        Ok(c) => c,
        Err(r) => return refused(&r),
    };
    let mut request = req.into_inner();
    // JSON that is not a GraphQL request (no string `query`: `{}`, `[]`) is refused as a
    // body that is not JSON is, not answered as an empty document.
    if request.query.trim().is_empty() {
        return error::http(
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
            "the body is not a GraphQL request: JSON with a string \"query\" (and optional \"variables\", \"operationName\")",
        );
    }
    if let Err(e) = schema::prepare(&mut request) {
        return GraphQLResponse::from(async_graphql::Response::from_errors(vec![e])).into_response();
    }
    GraphQLResponse::from(schema::answer(&s.schema, &s.api, request.data(caller)).await).into_response()
}

async fn graphql_ws(State(s): State<Arc<AppState>>, upgrade: WebSocketUpgrade) -> Response {
    let Ok(permit) = s.ws_slots.clone().try_acquire_owned() else {
        let body = json!({ "errors": [{ "message": format!("at most {} WebSocket connections at once", s.settings.ws_max_connections), "extensions": { "code": "UNAVAILABLE" } }] });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    };
    let limit = s.settings.body_limit;
    upgrade
        .protocols(["graphql-transport-ws"])
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| async move {
            ws::serve(socket, s.schema.clone(), s.api.clone(), s.settings.ws).await;
            drop(permit);
        })
}

/// Health: 200 while the store writes, the node's services and its work run and it is not
/// shutting down; 503 with the reasons otherwise. What a script waits for after a start.
async fn healthz(State(s): State<Arc<AppState>>) -> Response {
    verdict(&s, s.api.readiness())
}

/// Liveness: `/healthz`, but a node whose work waits for a lease (at its start without a
/// majority, or cut off) is alive: restarting members would not bring the majority back.
async fn livez(State(s): State<Arc<AppState>>) -> Response {
    verdict(&s, s.api.liveness())
}

/// Readiness: `/healthz`, and this node can commit a write now (a leader is known, and a
/// leader hears from a majority); 503 with the reasons otherwise.
async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    verdict(&s, s.api.write_readiness())
}

fn verdict(s: &AppState, found: Result<(), Vec<String>>) -> Response {
    match found {
        Ok(()) => Json(json!({ "status": "ok", "node": s.api.node_name() })).into_response(),
        Err(problems) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "node": s.api.node_name(), "reasons": problems })),
        )
            .into_response(),
    }
}

/// Prometheus text. Gauges are kept as things change, so a scrape reads no table; with
/// `metrics_auth` it needs a token (any role).
async fn prometheus(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if s.settings.metrics_auth {
        if let Err(r) = auth::from_headers(&s.api, &headers).await {
            return refused(&r);
        }
    }
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

/// The gateway as a child of the node's supervisor: binds, records the bound address in
/// `<data-dir>/gateway.addr` (so port 0 works), serves until stopped.
pub struct GatewayChild {
    pub api: Api,
    pub metrics: PrometheusHandle,
    pub listen: SocketAddr,
    pub settings: Settings,
    pub data_dir: PathBuf,
    /// The address bound first; a restarted gateway binds it again, so clients and
    /// `gateway.addr` stay valid when the configured port was 0.
    pub bound: std::sync::Mutex<Option<SocketAddr>>,
    /// What answered on the gateway's socket while the node started: the first start takes
    /// its socket over.
    pub early: std::sync::Mutex<Option<Starting>>,
}

impl ChildSpec for GatewayChild {
    fn id(&self) -> &str {
        "gateway"
    }

    fn kind(&self) -> &str {
        "SERVICE"
    }

    fn start(self: Arc<Self>, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>> {
        Box::pin(async move {
            let (gateway, _) = Actor::spawn_linked(None, Gateway, self.clone(), supervisor).await?;
            Ok(gateway.get_cell())
        })
    }
}

struct Gateway;

pub enum GatewayMsg {
    /// The server task ended on its own.
    ServerExited(String),
}

impl ractor::Message for GatewayMsg {}

/// How long a stopping gateway lets the requests it is answering finish (a VM's migration,
/// a message waiting for its reply) before it drops their connections. It takes no new ones
/// meanwhile; a WebSocket, upgraded, is not waited for.
const IN_FLIGHT_WITHIN: Duration = Duration::from_secs(10);

pub struct Serving {
    server: Option<JoinHandle<()>>,
    /// Tells the server to stop taking connections and end once those it serves are done.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}

impl Actor for Gateway {
    type Msg = GatewayMsg;
    type State = Serving;
    type Arguments = Arc<GatewayChild>;

    async fn pre_start(
        &self,
        myself: ActorRef<GatewayMsg>,
        cfg: Arc<GatewayChild>,
    ) -> Result<Serving, ActorProcessingErr> {
        let addr = cfg.bound.lock().ok().and_then(|b| *b).unwrap_or(cfg.listen);
        let early = cfg.early.lock().ok().and_then(|mut e| e.take());
        let listener = match early {
            Some(early) => tokio::net::TcpListener::from_std(early.hand_over().await)?,
            None => tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("the gateway cannot listen on {addr}: {e}"))?,
        };
        let bound = listener.local_addr()?;
        if let Ok(mut b) = cfg.bound.lock() {
            *b = Some(bound);
        }
        troupe_runtime::auth::write_private_async(cfg.data_dir.join("gateway.addr"), bound.to_string()).await?;
        cfg.api.cluster().set_gateway_address(bound.to_string());
        let app = router(cfg.api.clone(), cfg.metrics.clone(), cfg.settings.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let outcome = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            let reason = match outcome {
                Ok(()) => "server stopped".to_string(),
                Err(e) => e.to_string(),
            };
            let _ = myself.cast(GatewayMsg::ServerExited(reason));
        });
        tracing::info!(address = %bound, "gateway listening: / (dashboard) /graphql /graphql/ws /graphiql /mcp /hooks/{{name}} /metrics /healthz /livez /readyz");
        Ok(Serving {
            server: Some(server),
            stop: Some(stop),
        })
    }

    /// Stops taking requests and lets those under way be answered (at most
    /// [`IN_FLIGHT_WITHIN`]): a node's stop answers what it was asked before it goes.
    async fn post_stop(&self, _myself: ActorRef<GatewayMsg>, state: &mut Serving) -> Result<(), ActorProcessingErr> {
        if let Some(stop) = state.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut server) = state.server.take() {
            if tokio::time::timeout(IN_FLIGHT_WITHIN, &mut server).await.is_err() {
                tracing::warn!(within = ?IN_FLIGHT_WITHIN, "requests still under way as the gateway stops are cut off");
                server.abort();
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<GatewayMsg>,
        msg: GatewayMsg,
        _state: &mut Serving,
    ) -> Result<(), ActorProcessingErr> {
        let GatewayMsg::ServerExited(reason) = msg;
        Err(format!("gateway server exited: {reason}").into())
    }
}

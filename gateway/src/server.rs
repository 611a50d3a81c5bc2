//! The HTTP side: routes, limits, auth before execution, and the gateway as a supervised
//! child of the node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::future::BoxFuture;
use metrics_exporter_prometheus::PrometheusHandle;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use serde_json::json;
use tokio::task::JoinHandle;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;
use troupe_actors::Api;
use troupe_runtime::supervision::ChildSpec;

use crate::auth::{self, Refusal};
use crate::schema::{self, TroupeSchema};

#[derive(Clone)]
pub struct AppState {
    pub api: Api,
    pub schema: TroupeSchema,
    pub metrics: PrometheusHandle,
}

/// The gateway's routes.
pub fn router(api: Api, metrics: PrometheusHandle, body_limit: usize) -> Router {
    let state = AppState {
        schema: schema::build(api.clone()),
        api,
        metrics,
    };
    Router::new()
        .route("/", get(index))
        .route("/graphql", get(graphql).post(graphql))
        .route("/graphql/ws", get(graphql_ws))
        .route("/graphiql", get(graphiql))
        .route("/healthz", get(healthz))
        .route("/metrics", get(prometheus))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

fn refused(r: &Refusal) -> Response {
    let status = match r {
        Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNAUTHORIZED,
    };
    let body = json!({ "data": null, "errors": [{ "message": r.message(), "extensions": { "code": r.code() } }] });
    (status, Json(body)).into_response()
}

async fn graphql(State(s): State<AppState>, headers: HeaderMap, req: GraphQLRequest) -> Response {
    let caller = match auth::from_headers(&s.api, &headers).await {
        Ok(c) => c,
        Err(r) => return refused(&r),
    };
    GraphQLResponse::from(s.schema.execute(req.into_inner().data(caller)).await).into_response()
}

async fn graphql_ws(State(s): State<AppState>, protocol: GraphQLProtocol, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            let api = s.api.clone();
            GraphQLWebSocket::new(socket, s.schema.clone(), protocol)
                .on_connection_init(move |payload| async move {
                    // Accept the key in any case: GraphiQL sends its headers pane as typed.
                    let value = payload
                        .as_object()
                        .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("authorization")))
                        .and_then(|(_, v)| v.as_str());
                    match auth::resolve(&api, value).await {
                        Ok(caller) => {
                            let mut data = async_graphql::Data::default();
                            data.insert(caller);
                            Ok(data)
                        }
                        Err(r) => Err(crate::error::coded(r.code(), r.message())),
                    }
                })
                .serve()
        })
}

/// The landing page. The web dashboard comes in a later release; until then this page points
/// at what the gateway serves.
async fn index(State(s): State<AppState>) -> Html<String> {
    let name = s.api.node_name().replace(['<', '>', '&', '"'], "");
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Troupe: {name}</title></head>\
         <body><h1>Troupe node {name}</h1><ul>\
         <li><a href=\"/graphiql\">GraphiQL</a>: queries, mutations and subscriptions \
         (send <code>Authorization: Bearer &lt;token&gt;</code>; the admin token is in the data dir's admin.token)</li>\
         <li><code>POST /graphql</code>, <code>/graphql/ws</code> (graphql-transport-ws)</li>\
         <li><a href=\"/metrics\">/metrics</a> (Prometheus)</li><li><a href=\"/healthz\">/healthz</a></li>\
         </ul></body></html>"
    ))
}

/// GraphiQL, with the token taken from the URL fragment for HTTP and WebSocket alike
/// (GraphiQL's own headers pane does not reach the WebSocket).
async fn graphiql() -> Html<&'static str> {
    Html(include_str!("graphiql.html"))
}

async fn healthz(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "node": s.api.node_name() }))
}

async fn prometheus(State(s): State<AppState>) -> Response {
    match s.api.agent_states().await {
        Ok(counts) => {
            for (state, n) in counts {
                metrics::gauge!("troupe_agents", "state" => state.as_str()).set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot count agents for /metrics"),
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
    pub body_limit: usize,
    pub data_dir: PathBuf,
    /// The address bound first; a restarted gateway binds it again, so clients and
    /// `gateway.addr` stay valid when the configured port was 0.
    pub bound: std::sync::Mutex<Option<SocketAddr>>,
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

pub struct Serving(JoinHandle<()>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.abort();
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
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("the gateway cannot listen on {addr}: {e}"))?;
        let bound = listener.local_addr()?;
        if let Ok(mut b) = cfg.bound.lock() {
            *b = Some(bound);
        }
        troupe_runtime::auth::write_private(&cfg.data_dir.join("gateway.addr"), &bound.to_string())?;
        cfg.api.cluster().set_gateway_address(bound.to_string());
        let app = router(cfg.api.clone(), cfg.metrics.clone(), cfg.body_limit);
        let server = tokio::spawn(async move {
            let outcome = axum::serve(listener, app).await;
            let reason = match outcome {
                Ok(()) => "server stopped".to_string(),
                Err(e) => e.to_string(),
            };
            let _ = myself.cast(GatewayMsg::ServerExited(reason));
        });
        tracing::info!(address = %bound, "gateway listening: /graphql /graphql/ws /graphiql /metrics /healthz");
        Ok(Serving(server))
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

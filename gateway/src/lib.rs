//! troupe-gateway: the GraphQL gateway (async-graphql on axum) — the web dashboard at `/`, `/graphql` over HTTP,
//! `/graphql/ws` (graphql-transport-ws), `/graphiql`, `/metrics`, `/healthz`, `/livez`, `/readyz`, `/hooks/<name>` (webhooks in) — with bearer
//! token auth, role guards and limits on depth, complexity, time, concurrency and size. It
//! reaches the node only through [`troupe_actors::Api`].
//!
//! ```no_run
//! # async fn demo(api: troupe_actors::Api, config: troupe_runtime::config::Config) -> std::io::Result<()> {
//! let metrics = troupe_runtime::telemetry::init_metrics();
//! let app = troupe_gateway::router(api, metrics, troupe_gateway::Settings::from(&config));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! axum::serve(listener, app).await
//! # }
//! ```

pub mod auth;
mod dashboard;
pub mod error;
pub mod history;
mod hooks;
mod mcp;
pub mod schema;
mod server;
mod starting;
mod ws;

pub use server::{router, GatewayChild, Settings};
pub use starting::Starting;
pub use ws::WsLimits;

//! troupe-gateway: the GraphQL gateway (async-graphql on axum) — `/graphql` over HTTP,
//! `/graphql/ws` (graphql-transport-ws), `/graphiql`, `/metrics`, `/healthz` — with bearer
//! token auth and role guards. It reaches the node only through [`troupe_actors::Api`].
//!
//! ```no_run
//! # async fn demo(api: troupe_actors::Api) -> std::io::Result<()> {
//! let metrics = troupe_runtime::telemetry::init_metrics();
//! let app = troupe_gateway::router(api, metrics, 1 << 20);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! axum::serve(listener, app).await
//! # }
//! ```

pub mod auth;
pub mod error;
pub mod schema;
mod server;

pub use server::{router, GatewayChild};

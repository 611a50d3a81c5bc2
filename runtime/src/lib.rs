//! troupe-runtime: what every Troupe node needs and nothing domain-specific — the store on
//! redb with group commit, the event log and its replaying subscriptions, OTP-style
//! supervision, configuration, API tokens and telemetry.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use futures::StreamExt;
//! use troupe_runtime::events::{self, EventFilter, NewEvent};
//! use troupe_runtime::store::{Batch, Store};
//!
//! let store = Store::open(std::path::Path::new("/tmp/demo.redb"))?;
//! let seqs = store.write(Batch::new().event(NewEvent::new("DEMO", None, serde_json::json!({})))).await?;
//! let mut replay = Box::pin(events::subscribe(&store, seqs[0] - 1, EventFilter::default()));
//! assert_eq!(replay.next().await.unwrap()?.kind, "DEMO");
//! # Ok(()) }
//! ```

pub mod auth;
pub mod causes;
pub mod clock;
pub mod codec;
pub mod config;
pub mod events;
pub mod idempotency;
pub mod pauses;
pub mod store;
pub mod supervision;
pub mod telemetry;
pub mod tls;

//! Messaging: what agents send each other and publish on topics.
//!
//! ```text
//!  sendMessage ─▶ Messages service (the holder's node) ─▶ Mailboxes::send
//!                                    ┌──────────────────────┘
//!   mailbox of agent x: [CRITICAL][HIGH][NORMAL][LOW] ─▶ delivery loop ─▶ agent actor
//!                         (on disk while waiting)            │ no answer / expired
//!                                                            └─▶ dead letters ─▶ replay
//!  process agent's send / publish / memory / team_task lines ─▶ courier ─▶ the services
//! ```
//!
//! Each agent has a bounded mailbox with four priority lanes, delivered one message at a
//! time, the higher lane first (a CRITICAL message overtakes queued NORMAL ones). A message
//! that expires, or cannot be delivered or answered, goes to the message dead-letter queue,
//! from which it can be replayed. Each agent keeps a short history of its messages. `topics`
//! is pure pattern matching.

mod audience;
pub mod courier;
mod dead_letters;
mod delivery;
mod fan_out;
pub mod faults;
mod history;
mod mailbox;
pub mod topics;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::task::Priority;
pub use audience::Audience;
pub use fan_out::FanOut;
pub use history::{delete_history, history_in, merged as merged_history, waiting_in};
pub use mailbox::Mailboxes;
pub use topics::{check_topic, topic_matches};

/// How long a message may wait and be answered when the sender does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A message as it crosses the API and the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    pub to: String,
    pub from: Option<String>,
    #[serde(with = "troupe_runtime::codec::json_text")]
    pub payload: Value,
    pub priority: Priority,
    pub timeout_ms: u64,
}

/// The answer to a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub id: String,
    #[serde(with = "troupe_runtime::codec::json_text")]
    pub payload: Value,
}

/// A message that expired or could not be delivered or answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadMessage {
    pub message: Message,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// One line of an agent's message history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sent {
    pub id: String,
    pub from: Option<String>,
    pub priority: Priority,
    /// REPLIED, or DEAD (then `error` says why).
    pub outcome: String,
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

/// A message for every agent subscribed to a topic, or with all of some labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Publication {
    /// The topic it is published on; `None` for a broadcast to `labels`.
    pub topic: Option<String>,
    pub labels: Vec<(String, String)>,
    #[serde(with = "troupe_runtime::codec::json_text")]
    pub payload: Value,
    pub priority: Priority,
}

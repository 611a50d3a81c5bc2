//! Typed events and the subscription that replays the log from a cursor, then streams live.
//!
//! Every state change becomes a [`NewEvent`] inside a store [`crate::store::Batch`]; the store
//! gives it its sequence number in the commit and fans it out only after the commit, so what a
//! subscriber sees is always already durable.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::store::{Store, StoreError};

/// An event before it has been committed: it has no sequence number yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub kind: String,
    pub subject: Option<String>,
    pub data: serde_json::Value,
    pub at: DateTime<Utc>,
}

impl NewEvent {
    pub fn new(kind: impl Into<String>, subject: Option<String>, data: serde_json::Value) -> Self {
        Self {
            kind: kind.into(),
            subject,
            data,
            at: crate::clock::now(),
        }
    }

    /// How the log stores it (its seq is the key). Encoded by whoever makes the event, so
    /// the store's single writer thread only inserts bytes.
    pub(crate) fn body(&self) -> Result<Vec<u8>, StoreError> {
        crate::codec::encode(&BodyRef {
            kind: &self.kind,
            subject: self.subject.as_deref(),
            data: Text(&self.data),
            at: &self.at,
        })
    }

    /// An event from its stored form (as a log entry carries it).
    pub(crate) fn from_body(bytes: &[u8]) -> Result<Self, StoreError> {
        let body: Body = crate::codec::decode(bytes)?;
        Ok(Self {
            kind: body.kind,
            subject: body.subject,
            data: body.data,
            at: body.at,
        })
    }

    pub(crate) fn sequenced(self, seq: u64) -> Event {
        Event {
            seq,
            kind: self.kind,
            subject: self.subject,
            data: self.data,
            at: self.at,
        }
    }
}

/// A committed event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub kind: String,
    pub subject: Option<String>,
    // Stored as JSON text: the data is free-form and rmp-serde cannot tell a map from a
    // struct when decoding into `serde_json::Value`.
    #[serde(with = "crate::codec::json_text")]
    pub data: serde_json::Value,
    pub at: DateTime<Utc>,
}

impl Event {
    /// An event as the log stores it under `seq`.
    pub(crate) fn stored(seq: u64, bytes: &[u8]) -> Result<Self, StoreError> {
        let body: Body = crate::codec::decode(bytes)?;
        Ok(Event {
            seq,
            kind: body.kind,
            subject: body.subject,
            data: body.data,
            at: body.at,
        })
    }
}

/// A logged event's value: everything but its seq.
#[derive(Serialize)]
struct BodyRef<'a> {
    kind: &'a str,
    subject: Option<&'a str>,
    data: Text<'a>,
    at: &'a DateTime<Utc>,
}

#[derive(Deserialize)]
struct Body {
    kind: String,
    subject: Option<String>,
    #[serde(with = "crate::codec::json_text")]
    data: serde_json::Value,
    at: DateTime<Utc>,
}

/// Free-form data as JSON text (see [`crate::codec::json_text`]).
struct Text<'a>(&'a serde_json::Value);

impl Serialize for Text<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::codec::json_text::serialize(self.0, s)
    }
}

/// Which events a subscription wants.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub kinds: Option<HashSet<String>>,
    pub subject: Option<String>,
}

impl EventFilter {
    pub fn matches(&self, e: &Event) -> bool {
        self.kinds.as_ref().is_none_or(|k| k.contains(&e.kind))
            && self
                .subject
                .as_ref()
                .is_none_or(|s| e.subject.as_deref() == Some(s.as_str()))
    }
}

/// Events after `after` that pass `filter`: first those already in the log, then live ones,
/// with no gap and no duplicate. A subscriber that falls behind the live fan-out catches up
/// from the log, so a slow client loses nothing.
pub fn subscribe(
    store: &Store,
    after: u64,
    filter: EventFilter,
) -> impl Stream<Item = Result<Arc<Event>, StoreError>> + Send + 'static {
    // Subscribe to the live fan-out before reading the log, so nothing falls between them.
    let cursor = Cursor {
        live: store.live(),
        store: store.clone(),
        last: after,
        buffer: VecDeque::new(),
        replaying: true,
        failed: false,
        filter,
    };
    futures::stream::unfold(cursor, |mut c| async move {
        let next = c.next().await;
        next.map(|item| (item, c))
    })
}

struct Cursor {
    store: Store,
    live: broadcast::Receiver<Arc<Event>>,
    last: u64,
    /// Events shared with the live fan-out (never copied per subscriber).
    buffer: VecDeque<Arc<Event>>,
    replaying: bool,
    /// Set once an error was returned: the stream then ends rather than repeat it.
    failed: bool,
    filter: EventFilter,
}

const REPLAY_PAGE: usize = 512;

impl Cursor {
    async fn next(&mut self) -> Option<Result<Arc<Event>, StoreError>> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(e) = self.buffer.pop_front() {
                self.last = e.seq;
                if self.filter.matches(&e) {
                    return Some(Ok(e));
                }
                continue;
            }
            if self.replaying {
                let kinds = self.filter.kinds.as_ref().map(|k| k.iter().cloned().collect());
                match self.store.replay_page(self.last, kinds, REPLAY_PAGE).await {
                    Ok((page, _)) if !page.is_empty() => self.buffer.extend(page.into_iter().map(Arc::new)),
                    Ok((_, last)) => {
                        // Nothing more in the log: every matching event up to `last` is out.
                        self.last = self.last.max(last);
                        self.replaying = false;
                    }
                    Err(e) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                }
                continue;
            }
            match self.live.recv().await {
                Ok(e) if e.seq <= self.last => {}
                Ok(e) if e.seq == self.last + 1 => self.buffer.push_back(e),
                // A gap (the log moved on before we subscribed) or a lag: read it from the log.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.replaying = true,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests;

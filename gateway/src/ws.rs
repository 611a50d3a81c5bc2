//! GraphQL over WebSocket, as graphql-transport-ws defines it, with its close codes: 4400
//! for a malformed message, 4401 for a subscribe before the connection is acknowledged, 4403
//! when `connection_init` carries no valid token (or the token is revoked or expires while
//! connected), 4408 when `connection_init` does not come in time, 4409 for a subscription id
//! already in use, 4429 for a second `connection_init`, and 1009 for a message over the size
//! limit. The server pings every keep-alive interval. Operations run on async-graphql's
//! executor, one task per subscription.

mod subscriptions;

use std::time::Duration;

use async_graphql::{Response, ServerError};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use troupe_actors::Api;

use crate::auth::{self, Caller};
use crate::schema::TroupeSchema;
use subscriptions::{Subscriptions, Tag};

/// Most outgoing messages written before one flush.
const OUT_BATCH: usize = 256;

/// What a connection may do.
#[derive(Debug, Clone, Copy)]
pub struct WsLimits {
    pub max_subscriptions: usize,
    pub init_timeout: Duration,
    pub keepalive: Duration,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    ConnectionInit {
        payload: Option<Value>,
    },
    // Their payloads, if any, are not used.
    Ping {},
    Pong {},
    Subscribe {
        id: String,
        payload: Box<async_graphql::Request>,
    },
    Complete {
        id: String,
    },
}

#[derive(serde::Serialize)]
struct Next<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    payload: &'a Response,
}

/// What a subscription task hands the connection to send.
enum Out {
    Next(Tag, Response),
    Error(Tag, Vec<ServerError>),
    Complete(Tag),
}

/// Why the connection closes.
struct Close(u16, String);

struct Connection {
    schema: TroupeSchema,
    api: Api,
    limits: WsLimits,
    caller: Option<Caller>,
    init_seen: bool,
    subscriptions: Subscriptions,
    out: mpsc::Sender<Out>,
}

/// Serves one WebSocket until either side closes it.
pub async fn serve(socket: WebSocket, schema: TroupeSchema, api: Api, limits: WsLimits) {
    let (mut sink, mut incoming) = socket.split();
    let (out, mut outgoing) = mpsc::channel(OUT_BATCH);
    let mut revocations = api.tokens().revocations();
    let mut conn = Connection {
        schema,
        api,
        limits,
        caller: None,
        init_seen: false,
        subscriptions: Subscriptions::default(),
        out,
    };
    let init_deadline = tokio::time::sleep(limits.init_timeout);
    tokio::pin!(init_deadline);
    let expiry = tokio::time::sleep(Duration::MAX);
    tokio::pin!(expiry);
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + limits.keepalive, limits.keepalive);
    let close: Option<Close> = loop {
        tokio::select! {
            message = incoming.next() => match message {
                None | Some(Ok(Message::Close(_))) => break None,
                Some(Err(e)) => {
                    let text = e.to_string();
                    // The only read error worth answering is a message over the limit.
                    let too_big = text.contains("too long") || text.contains("too big") || text.contains("Space limit");
                    break too_big.then(|| Close(1009, "message too big".into()));
                }
                Some(Ok(Message::Text(text))) => {
                    let step = conn.handle(text.as_str()).await;
                    match step {
                        Ok(Some(reply)) => {
                            if sink.send(Message::Text(reply.to_string().into())).await.is_err() {
                                break None;
                            }
                            if let Some(at) = conn.caller.as_ref().and_then(|c| conn.api.tokens().expiry(&c.token)) {
                                let left = (at - troupe_runtime::clock::now()).to_std().unwrap_or_default();
                                expiry.as_mut().reset(tokio::time::Instant::now() + left);
                            }
                        }
                        Ok(None) => {}
                        Err(close) => break Some(close),
                    }
                }
                Some(Ok(Message::Binary(_))) => break Some(Close(4400, "binary messages are not part of graphql-transport-ws".into())),
                Some(Ok(_)) => {}
            },
            Some(out) = outgoing.recv() => {
                // Everything ready goes out in one flush: a busy subscription costs one write
                // per batch, not one per event.
                let mut batch = vec![out];
                while batch.len() < OUT_BATCH {
                    match outgoing.try_recv() {
                        Ok(more) => batch.push(more),
                        Err(_) => break,
                    }
                }
                let mut failed = false;
                for out in batch {
                    let Some(text) = conn.render(out) else {
                        continue;
                    };
                    if sink.feed(Message::Text(text.into())).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                if failed || sink.flush().await.is_err() {
                    break None;
                }
            }
            _ = &mut init_deadline, if conn.caller.is_none() => {
                break Some(Close(4408, "Connection initialisation timeout".into()));
            }
            _ = keepalive.tick() => {
                if sink.send(Message::Text(json!({ "type": "ping" }).to_string().into())).await.is_err() {
                    break None;
                }
            }
            Ok(()) = revocations.changed(), if conn.caller.is_some() => {
                if conn.caller.as_ref().is_some_and(|c| !conn.api.tokens().still_valid(&c.token)) {
                    break Some(Close(4403, "Forbidden: the token was revoked or has expired".into()));
                }
            }
            _ = &mut expiry, if conn.caller.is_some() => {
                break Some(Close(4403, "Forbidden: the token expired".into()));
            }
        }
    };
    if let Some(Close(code, mut reason)) = close {
        // A close frame carries at most 123 bytes of reason.
        while reason.len() > 123 {
            reason.pop();
        }
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = sink.send(Message::Close(Some(frame))).await;
    }
    let _ = sink.close().await;
}

impl Connection {
    /// The protocol message for a subscription's output, or nothing for output of one the
    /// client already completed; the subscription is done once it sent `error` or `complete`.
    fn render(&mut self, out: Out) -> Option<String> {
        let message = match out {
            // The hot path: straight to text, without an intermediate JSON tree.
            Out::Next(tag, payload) => {
                if !self.subscriptions.is_current(&tag) {
                    return None;
                }
                let next = Next {
                    kind: "next",
                    id: &tag.id,
                    payload: &payload,
                };
                return Some(serde_json::to_string(&next).unwrap_or_else(|e| {
                    json!({ "type": "error", "id": tag.id, "payload": [{ "message": e.to_string() }] }).to_string()
                }));
            }
            Out::Error(tag, errors) => {
                if !self.subscriptions.ended(&tag) {
                    return None;
                }
                json!({ "type": "error", "id": tag.id, "payload": errors })
            }
            Out::Complete(tag) => {
                if !self.subscriptions.ended(&tag) {
                    return None;
                }
                json!({ "type": "complete", "id": tag.id })
            }
        };
        Some(message.to_string())
    }

    /// Handles one client message: an immediate reply to send, nothing, or a close.
    async fn handle(&mut self, text: &str) -> Result<Option<Value>, Close> {
        let message: ClientMessage =
            serde_json::from_str(text).map_err(|e| Close(4400, format!("Invalid message received: {e}")))?;
        match message {
            ClientMessage::ConnectionInit { payload } => {
                if self.init_seen {
                    return Err(Close(4429, "Too many initialisation requests".into()));
                }
                self.init_seen = true;
                // The key in any case: GraphiQL sends its headers pane as typed.
                let value = payload.as_ref().and_then(Value::as_object).and_then(|o| {
                    o.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                        .and_then(|(_, v)| v.as_str())
                });
                match auth::resolve(&self.api, value).await {
                    Ok(caller) => {
                        self.caller = Some(caller);
                        Ok(Some(json!({ "type": "connection_ack" })))
                    }
                    Err(refusal) => Err(Close(4403, format!("Forbidden: {}", refusal.message()))),
                }
            }
            ClientMessage::Ping {} => Ok(Some(json!({ "type": "pong" }))),
            ClientMessage::Pong {} => Ok(None),
            ClientMessage::Subscribe { id, payload } => {
                let Some(caller) = self.caller.clone() else {
                    return Err(Close(4401, "Unauthorized".into()));
                };
                if self.subscriptions.contains(&id) {
                    return Err(Close(4409, format!("Subscriber for {id} already exists")));
                }
                if self.subscriptions.len() >= self.limits.max_subscriptions {
                    let error = json!([{
                        "message": format!("at most {} subscriptions may run on one connection", self.limits.max_subscriptions),
                        "extensions": { "code": "BACKPRESSURE" },
                    }]);
                    return Ok(Some(json!({ "type": "error", "id": id, "payload": error })));
                }
                let mut request = *payload;
                if let Err(e) = crate::schema::prepare(&mut request) {
                    return Ok(Some(json!({ "type": "error", "id": id, "payload": [e] })));
                }
                let (schema, api, out) = (self.schema.clone(), self.api.clone(), self.out.clone());
                self.subscriptions
                    .start(id, |tag| tokio::spawn(run(schema, api, request.data(caller), tag, out)));
                Ok(None)
            }
            ClientMessage::Complete { id } => {
                self.subscriptions.cancel(&id);
                Ok(None)
            }
        }
    }
}

/// Runs one operation, handing its results to the connection. A request that fails before
/// it produces anything (invalid, refused) ends with an `error` message, as the protocol
/// wants; results with field errors go out as `next`. A query or a mutation is answered as
/// over HTTP (see [`crate::schema::answer`]); each result of a subscription carries what
/// its resolvers warned of, and `WORK_STOPPED` while this node's work waits for a lease.
async fn run(schema: TroupeSchema, api: Api, mut request: async_graphql::Request, tag: Tag, out: mpsc::Sender<Out>) {
    use crate::schema::notes;
    if !notes::is_subscription(&mut request) {
        let response = crate::schema::answer(&schema, &api, request).await;
        if response.is_err() && response.data == async_graphql::Value::Null {
            let _ = out.send(Out::Error(tag, response.errors)).await;
        } else if out.send(Out::Next(tag.clone(), response)).await.is_ok() {
            let _ = out.send(Out::Complete(tag)).await;
        }
        return;
    }
    if let Err(refused) = crate::schema::read_after(&api, &request).await {
        let _ = out.send(Out::Error(tag, vec![refused])).await;
        return;
    }
    let warnings = std::sync::Arc::new(notes::Notes::default());
    let mut stream = schema.execute_stream(request.data(warnings.clone()));
    let mut first = true;
    while let Some(response) = stream.next().await {
        let response = notes::finish(crate::schema::finish(response), &warnings, false, &api, 0);
        if first && response.is_err() && response.data == async_graphql::Value::Null {
            let _ = out.send(Out::Error(tag, response.errors)).await;
            return;
        }
        first = false;
        if out.send(Out::Next(tag.clone(), response)).await.is_err() {
            return;
        }
    }
    let _ = out.send(Out::Complete(tag)).await;
}

//! A minimal graphql-transport-ws client over tokio-tungstenite: connection_init with the
//! token, subscriptions by id, raw messages for protocol tests, and reads that each end at a
//! deadline.

use anyhow::{bail, Context, Result};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{Node, WAIT};

/// What the server sent: a protocol message, or the end of the socket.
#[derive(Debug)]
pub enum Incoming {
    Json(Value),
    /// The close code if the server sent a close frame, and a reason or error text.
    Closed(Option<u16>, String),
}

pub struct Subscription {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Subscription {
    /// Opens the socket without sending anything.
    pub async fn connect(addr: &str) -> Result<Self> {
        let mut request = format!("ws://{addr}/graphql/ws").into_client_request()?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("graphql-transport-ws"),
        );
        // No client-side size limits: the tests send what the server must refuse.
        let config = WebSocketConfig::default().max_message_size(None).max_frame_size(None);
        let (ws, _) = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::connect_async_with_config(request, Some(config), false),
        )
        .await
        .context("WebSocket handshake timed out")??;
        Ok(Subscription { ws })
    }

    /// Connects and sends connection_init. `Ok(Ok(_))` if acked; `Ok(Err((code, reason)))`
    /// if the server closed the socket instead.
    pub async fn init(addr: &str, token: Option<&str>) -> Result<Result<Self, (Option<u16>, String)>> {
        let mut sub = Self::connect(addr).await?;
        let payload = match token {
            Some(token) => json!({ "authorization": format!("Bearer {token}") }),
            None => json!({}),
        };
        sub.send(json!({ "type": "connection_init", "payload": payload }))
            .await?;
        loop {
            match sub.recv().await? {
                Incoming::Json(m) if m["type"] == "connection_ack" => return Ok(Ok(sub)),
                Incoming::Json(m) if m["type"] == "ping" => sub.send(json!({ "type": "pong" })).await?,
                Incoming::Json(m) => bail!("unexpected message before connection_ack: {m}"),
                Incoming::Closed(code, reason) => return Ok(Err((code, reason))),
            }
        }
    }

    /// Connects with the node's admin token and starts one subscription.
    pub async fn start(node: &Node, query: &str, variables: Value) -> Result<Self> {
        let mut sub = match Self::init(&node.addr, Some(node.token.as_str())).await? {
            Ok(sub) => sub,
            Err((code, reason)) => bail!("admin token not acked: close {code:?} {reason}"),
        };
        sub.subscribe(query, variables).await?;
        Ok(sub)
    }

    pub async fn subscribe(&mut self, query: &str, variables: Value) -> Result<()> {
        self.subscribe_as("1", query, variables).await
    }

    pub async fn subscribe_as(&mut self, id: &str, query: &str, variables: Value) -> Result<()> {
        let payload = json!({ "query": query, "variables": variables });
        self.send(json!({ "id": id, "type": "subscribe", "payload": payload }))
            .await
    }

    /// The `data` of the next result, or `None` once the server completes the subscription;
    /// fails when none comes within the test deadline (keep-alive pings do not extend it).
    pub async fn next_with_deadline(&mut self) -> Result<Option<Value>> {
        Ok(self.next_payload().await?.map(|payload| payload["data"].clone()))
    }

    /// The next result whole (`data` and `extensions`), as [`Self::next_with_deadline`].
    pub async fn next_payload(&mut self) -> Result<Option<Value>> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let incoming = tokio::time::timeout(left, self.recv())
                .await
                .with_context(|| format!("no subscription result within {WAIT:?}"))??;
            match incoming {
                Incoming::Json(m) => match m["type"].as_str().unwrap_or_default() {
                    "next" => {
                        let payload = &m["payload"];
                        if payload.get("errors").is_some_and(|e| !e.is_null()) {
                            bail!("subscription result with errors: {m}");
                        }
                        return Ok(Some(payload.clone()));
                    }
                    "complete" => return Ok(None),
                    "ping" => self.send(json!({ "type": "pong" })).await?,
                    "pong" => {}
                    _ => bail!("subscription failed: {m}"),
                },
                Incoming::Closed(code, reason) => {
                    bail!("socket closed during subscription: {code:?} {reason}")
                }
            }
        }
    }

    /// Reads until the server closes the socket; its close code and reason. Fails if a
    /// message other than a ping arrives first.
    pub async fn expect_close(&mut self) -> Result<(Option<u16>, String)> {
        loop {
            match self.recv().await? {
                Incoming::Closed(code, reason) => return Ok((code, reason)),
                Incoming::Json(m) if m["type"] == "ping" => {}
                Incoming::Json(m) => bail!("expected the socket to close, got {m}"),
            }
        }
    }

    /// Sends one protocol message as it is.
    pub async fn send(&mut self, message: Value) -> Result<()> {
        self.send_text(message.to_string()).await
    }

    pub async fn send_text(&mut self, text: String) -> Result<()> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    /// The next thing the server sent, within the test deadline.
    pub async fn recv(&mut self) -> Result<Incoming> {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .with_context(|| format!("no WebSocket message within {WAIT:?}"))?;
            let msg = match next {
                None => return Ok(Incoming::Closed(None, "stream ended".into())),
                Some(Err(e)) => return Ok(Incoming::Closed(None, e.to_string())),
                Some(Ok(msg)) => msg,
            };
            match msg {
                Message::Text(_) => return Ok(Incoming::Json(serde_json::from_str(msg.to_text()?)?)),
                Message::Close(frame) => {
                    let (code, reason) = match frame {
                        Some(f) => (Some(u16::from(f.code)), f.reason.to_string()),
                        None => (None, "close without a frame".into()),
                    };
                    return Ok(Incoming::Closed(code, reason));
                }
                // tungstenite answers pings itself.
                _ => {}
            }
        }
    }
}

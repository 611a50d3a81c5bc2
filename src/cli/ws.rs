//! Following a subscription over the node's WebSocket, for `-f` and `submit --wait`.

use std::time::Duration;

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use super::{base_url, token, Client, Done, Failure};

/// How long a follow keeps trying to reach its node after the connection dropped (a node
/// restarted in a rolling restart is back well within it).
const RECONNECT_FOR: Duration = Duration::from_secs(60);

/// How a subscription's connection ended.
enum Ended {
    /// The server completed the subscription: there is nothing more to follow.
    Completed,
    /// The connection dropped first, for this reason.
    Lost(String),
}

/// Runs a subscription over the node's WebSocket (graphql-transport-ws), giving `each`
/// every result's data until the server completes it. A connection that drops (the node
/// restarted) is opened again, with `variables` asked again so the subscription resumes where
/// `each` got to; after [`RECONNECT_FOR`] without reaching the node it fails (exit 5).
pub(super) async fn follow(
    client: &Client,
    query: &str,
    mut variables: impl FnMut() -> Value,
    mut each: impl FnMut(&Value) -> Done,
) -> Done {
    let mut lost: Option<Instant> = None;
    loop {
        match subscribe(client, query, variables(), &mut each).await {
            Ok(Ended::Completed) => return Ok(()),
            Ok(Ended::Lost(why)) => {
                eprintln!("warning: the connection to the node dropped ({why}); following again");
                lost = Some(Instant::now());
            }
            Err(Failure(5, _)) if lost.is_some_and(|at| at.elapsed() < RECONNECT_FOR) => {}
            Err(failure) => return Err(failure),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One connection's worth of [`follow`].
async fn subscribe(
    client: &Client,
    query: &str,
    variables: Value,
    each: &mut impl FnMut(&Value) -> Done,
) -> Result<Ended, Failure> {
    let url = base_url(client)?;
    let token = token(client)?;
    let url = url.trim_end_matches('/');
    let ws = match url.strip_prefix("http://") {
        Some(rest) => format!("ws://{rest}/graphql/ws"),
        None => {
            return Err(Failure(
                1,
                format!("following needs an http:// URL (not {url}); without -f the command reads once"),
            ))
        }
    };
    let mut request = ws.as_str().into_client_request().context("the WebSocket URL")?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| Failure(5, format!("cannot reach {ws}: {e}")))?;
    let send = |m: Value| Message::Text(m.to_string().into());
    socket
        .send(send(
            json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } }),
        ))
        .await
        .map_err(|e| Failure(5, format!("cannot reach {ws}: {e}")))?;
    let mut subscribed = false;
    while let Some(message) = socket.next().await {
        let text = match message {
            Ok(Message::Text(text)) => text,
            // graphql-transport-ws closes with 44xx when it refuses the client (its token).
            Ok(Message::Close(Some(frame))) if (4400..4500).contains(&u16::from(frame.code)) => {
                return Err(Failure(4, format!("the node closed the connection: {}", frame.reason)));
            }
            Ok(Message::Close(frame)) => {
                let why = frame.map_or_else(|| "closed".to_owned(), |f| format!("closed: {} {}", f.code, f.reason));
                return Ok(Ended::Lost(why));
            }
            Ok(_) => continue,
            Err(e) => return Ok(Ended::Lost(e.to_string())),
        };
        let m: Value = serde_json::from_str(&text)?;
        match m["type"].as_str() {
            Some("connection_ack") if !subscribed => {
                subscribed = true;
                let payload = json!({ "query": query, "variables": variables });
                if let Err(e) = socket
                    .send(send(json!({ "id": "1", "type": "subscribe", "payload": payload })))
                    .await
                {
                    return Ok(Ended::Lost(e.to_string()));
                }
            }
            Some("ping") => {
                if let Err(e) = socket.send(send(json!({ "type": "pong" }))).await {
                    return Ok(Ended::Lost(e.to_string()));
                }
            }
            Some("next") => {
                if let Some(error) = m["payload"]["errors"].as_array().and_then(|e| e.first()) {
                    let code = error["extensions"]["code"].as_str().unwrap_or("ERROR");
                    let exit = if code == "NOT_FOUND" { 3 } else { 1 };
                    return Err(Failure(
                        exit,
                        format!("{code}: {}", error["message"].as_str().unwrap_or("")),
                    ));
                }
                each(&m["payload"]["data"])?;
            }
            Some("error") => return Err(Failure(1, format!("the subscription was refused: {}", m["payload"]))),
            Some("complete") => return Ok(Ended::Completed),
            _ => {}
        }
    }
    Ok(Ended::Lost("the stream ended".to_owned()))
}

//! Following a subscription over the node's WebSocket, for `-f` and `submit --wait`.

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use super::{base_url, token, Client, Done, Failure};

/// Runs a subscription over the node's WebSocket (graphql-transport-ws), giving `each`
/// every result's data until the server completes it.
pub(super) async fn follow(
    client: &Client,
    query: &str,
    variables: Value,
    mut each: impl FnMut(&Value) -> Done,
) -> Done {
    let token = token(client)?;
    let url = base_url(client)?;
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
        .await?;
    let mut subscribed = false;
    while let Some(message) = socket.next().await {
        let text = match message? {
            Message::Text(text) => text,
            Message::Close(frame) => {
                let why = frame.map_or_else(String::new, |f| f.reason.to_string());
                return Err(Failure(4, format!("the node closed the connection: {why}")));
            }
            _ => continue,
        };
        let m: Value = serde_json::from_str(&text)?;
        match m["type"].as_str() {
            Some("connection_ack") if !subscribed => {
                subscribed = true;
                let payload = json!({ "query": query, "variables": variables });
                socket
                    .send(send(json!({ "id": "1", "type": "subscribe", "payload": payload })))
                    .await?;
            }
            Some("ping") => socket.send(send(json!({ "type": "pong" }))).await?,
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
            Some("complete") => return Ok(()),
            _ => {}
        }
    }
    Ok(())
}

//! The watcher of an `mcp` agent's server: probes it (`ping`, or `tools/list` in the
//! stateless era), lists its tools again when they change, and tells the agent when the
//! server is gone.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rmcp::model::{ClientRequest, PingRequest, ServerNotification, SubscriptionFilter};
use rmcp::service::Subscription;
use rmcp::{Peer, RoleClient};
use tokio::sync::Notify;

use super::{list, Era, ServerTool, MISSES, START_TIMEOUT};
use crate::agent::backend::{Link, Signal};

/// Opens a `subscriptions/listen` stream for tool list changes; `None` when the server
/// offers none (its tools are then compared at each probe only).
pub(super) async fn listen(peer: &Peer<RoleClient>) -> Option<Subscription> {
    let filter = SubscriptionFilter::builder().tools_list_changed().build();
    match tokio::time::timeout(START_TIMEOUT, peer.listen(filter)).await {
        Ok(Ok(subscription)) => Some(subscription),
        Ok(Err(e)) => {
            tracing::info!(error = %e, "the MCP server offers no listen stream: its tools are compared at each probe");
            None
        }
        Err(_) => None,
    }
}

/// The next tool list change a listen stream tells of; `false` when the stream ended.
async fn next_change(listening: &mut Option<Subscription>) -> bool {
    let Some(subscription) = listening.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        match subscription.next().await {
            Ok(Some(ServerNotification::ToolListChangedNotification(_))) => return true,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return false,
        }
    }
}

/// What the watcher holds of a connection.
pub(super) struct Watched {
    pub(super) peer: Peer<RoleClient>,
    pub(super) era: Era,
    pub(super) child: Option<tokio::process::Child>,
    pub(super) changed: Arc<Notify>,
    pub(super) listening: Option<Subscription>,
    pub(super) tools: Arc<RwLock<Vec<ServerTool>>>,
}

impl Watched {
    /// Takes the server's list of tools, telling the agent when it changed.
    fn take(&self, now: Vec<ServerTool>, link: &Link) {
        let mut tools = self.tools.write().unwrap();
        if *tools != now {
            *tools = now;
            link.signal(Signal::CapabilitiesChanged);
        }
    }

    /// One probe of the server: `ping`, or in the stateless era (which has none) `tools/list`,
    /// whose answer is taken as the tools.
    async fn probe(&self, link: &Link) -> Result<(), String> {
        match self.era {
            Era::Initialize => self
                .peer
                .send_request(ClientRequest::PingRequest(PingRequest::default()))
                .await
                .map(drop)
                .map_err(|e| format!("the MCP server did not answer a ping: {e}")),
            Era::Stateless => {
                let now = list(&self.peer)
                    .await
                    .map_err(|e| format!("the MCP server did not answer tools/list: {e}"))?;
                self.take(now, link);
                Ok(())
            }
        }
    }
}

/// Probes the server, lists its tools again when they change, and tells the agent when the
/// server is gone (its command exited, or it missed its probes).
pub(super) async fn watch(mut w: Watched, every: Duration, link: Link) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    let mut missed = 0;
    loop {
        let exited = async {
            match w.child.as_mut() {
                Some(c) => c.wait().await.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                None => std::future::pending().await,
            }
        };
        let mut refresh = false;
        tokio::select! {
            status = exited => {
                link.signal(Signal::Lost(format!("the MCP server exited ({status})")));
                return;
            }
            () = w.changed.notified() => refresh = true,
            told = next_change(&mut w.listening) => match told {
                true => refresh = true,
                false => {
                    tracing::info!("the MCP server's listen stream ended: its tools are compared at each probe");
                    w.listening = None;
                }
            },
            _ = ticker.tick() => {
                match tokio::time::timeout(every, w.probe(&link)).await {
                    Ok(Ok(())) => {
                        if missed > 0 {
                            link.signal(Signal::Healthy);
                        }
                        missed = 0;
                    }
                    Ok(Err(e)) => {
                        // The connection itself is gone: no probe will be answered.
                        link.signal(Signal::Lost(e));
                        return;
                    }
                    Err(_) => missed += 1,
                }
                if missed >= MISSES {
                    link.signal(Signal::Lost(format!("the MCP server missed {missed} probes in a row")));
                    return;
                }
                if missed > 0 {
                    link.signal(Signal::Unhealthy(format!("the MCP server missed {missed} probe")));
                }
            }
        }
        if refresh {
            match list(&w.peer).await {
                Ok(now) => w.take(now, &link),
                Err(e) => tracing::warn!(error = %e, "the MCP server's tools could not be listed again"),
            }
        }
    }
}

//! The `mcp` backend: the agent is a client of an MCP server, a command speaking MCP on its
//! stdin and stdout or a streamable-HTTP endpoint (both through `rmcp`, in the protocol's
//! initialize era: `initialize`, sessions, `ping`, `notifications/tools/list_changed`).
//!
//! - Started: the server is started (or reached), initialised and its tools listed; each
//!   tool is a capability of the agent, `mcp:<agent name>/<tool>`.
//! - Watched: pinged every `pingMs`; two pings unanswered, or the command's exit, and the
//!   agent is lost, so its supervisor restarts it (the recovery ladder applies).
//! - Its tools listed again on `notifications/tools/list_changed`.
//! - A task runs one tool: the one its capability names, with the payload as arguments, or
//!   `{"tool": …, "arguments": {…}}` for a task aimed at the agent. The task's id goes in the
//!   call's `_meta` as `dev.troupe/idempotencyKey`: a server that honours it runs a retried
//!   call at most once; one that does not, at least once.
//! - Messages let LLM agents use its tools: `{"op": "tools"}` lists them, `{"op": "call",
//!   "tool", "arguments", "key"}` calls one and answers its content, an error included.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig, ClientRequest, PingRequest, ProtocolVersion};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::{ClientHandler, Peer, RoleClient, ServiceExt};
use serde_json::{json, Map, Value};
use tokio::io::AsyncBufReadExt;
use tokio::sync::Notify;
use troupe_runtime::store::Store;

use super::{Backend, Link, Signal};
use crate::agent::secrets::Secrets;
use crate::agent::spec::McpBackend;
use crate::task::{Assignment, Outcome};

/// A tool call's limit when neither the task nor the backend sets one.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the server may take to start and answer `initialize` and `tools/list`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Pings in a row the server may miss.
const MISSES: u32 = 2;
/// The `_meta` key of a call's idempotency key.
pub const KEY_META: &str = "dev.troupe/idempotencyKey";

/// What the client tells the server about itself, and hears from it.
struct Listener {
    changed: Arc<Notify>,
}

impl ClientHandler for Listener {
    fn get_info(&self) -> ClientConfig {
        // The initialize era: health by `ping`, refreshes on list_changed.
        ClientConfig::default().with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.changed.notify_one();
    }
}

/// A tool the server offers.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerTool {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
}

pub struct Mcp {
    spec: McpBackend,
    name: String,
    secrets: Arc<Secrets>,
    store: Option<Store>,
    tools: Arc<RwLock<Vec<ServerTool>>>,
    peer: Option<Peer<RoleClient>>,
    service: Option<RunningService<RoleClient, Listener>>,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl Mcp {
    pub fn new(spec: McpBackend, name: &str, secrets: Arc<Secrets>, store: Option<Store>) -> Self {
        Self {
            spec,
            name: name.to_owned(),
            secrets,
            store,
            tools: Arc::default(),
            peer: None,
            service: None,
            watcher: None,
        }
    }

    fn peer(&self) -> Result<Peer<RoleClient>, String> {
        self.peer
            .clone()
            .ok_or_else(|| "the MCP server is not connected".to_string())
    }
}

/// The server's tools, every page.
async fn list(peer: &Peer<RoleClient>) -> Result<Vec<ServerTool>, String> {
    let tools = peer
        .list_all_tools()
        .await
        .map_err(|e| format!("tools/list failed: {e}"))?;
    Ok(tools
        .into_iter()
        .map(|t| ServerTool {
            name: t.name.to_string(),
            description: t.description.map(|d| d.to_string()).unwrap_or_default(),
            input_schema: Value::Object((*t.input_schema).clone()),
        })
        .collect())
}

/// Calls `tool` with `arguments` (a JSON object), `key` in its `_meta`, within `limit`.
async fn call(
    peer: &Peer<RoleClient>,
    tool: &str,
    arguments: Value,
    key: &str,
    limit: Duration,
) -> Result<CallToolResult, String> {
    let arguments = match arguments {
        Value::Object(o) => o,
        Value::Null => Map::new(),
        other => return Err(format!("a tool's arguments must be a JSON object, not {other}")),
    };
    let mut meta = Map::new();
    meta.insert(KEY_META.into(), json!(key));
    let mut params = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
    params.meta = Some(meta.into());
    // Dropped at the limit, the call is cancelled at the server (notifications/cancelled).
    tokio::time::timeout(limit, peer.call_tool(params))
        .await
        .map_err(|_| format!("tool {tool} did not answer within {} ms", limit.as_millis()))?
        .map_err(|e| format!("tool {tool} failed: {e}"))
}

/// The text blocks of a result, joined.
fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Backend for Mcp {
    fn start(&mut self, link: Link) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let changed = Arc::new(Notify::new());
            let listener = Listener {
                changed: changed.clone(),
            };
            let mut child = None;
            let service = match &self.spec.url {
                Some(url) => {
                    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
                    troupe_runtime::tls::install_provider();
                    let mut config = StreamableHttpClientTransportConfig::with_uri(url.clone());
                    if let Some(key) = &self.spec.api_key {
                        config = config.auth_header(self.secrets.read(key).await.map_err(|e| e.to_string())?);
                    }
                    let transport = rmcp::transport::StreamableHttpClientTransport::from_config(config);
                    tokio::time::timeout(START_TIMEOUT, listener.serve(transport))
                        .await
                        .map_err(|_| format!("{url} did not initialise within {} s", START_TIMEOUT.as_secs()))?
                        .map_err(|e| format!("{url} did not initialise: {e}"))?
                }
                None => {
                    let mut spawned = spawn(&self.spec, &self.name)?;
                    let (stdout, stdin) = (spawned.stdout.take(), spawned.stdin.take());
                    let (Some(stdout), Some(stdin)) = (stdout, stdin) else {
                        return Err("the MCP server's pipes were not set up".into());
                    };
                    let program = self.spec.command[0].clone();
                    let service = tokio::time::timeout(START_TIMEOUT, listener.serve((stdout, stdin)))
                        .await
                        .map_err(|_| format!("{program} did not initialise within {} s", START_TIMEOUT.as_secs()))?
                        .map_err(|e| format!("{program} did not initialise: {e}"))?;
                    child = Some(spawned);
                    service
                }
            };
            let peer = service.peer().clone();
            *self.tools.write().unwrap() = tokio::time::timeout(START_TIMEOUT, list(&peer))
                .await
                .map_err(|_| "tools/list did not answer".to_string())??;
            self.watcher = Some(tokio::spawn(watch(
                peer.clone(),
                child,
                changed,
                self.tools.clone(),
                Duration::from_millis(self.spec.ping_ms),
                link,
            )));
            self.peer = Some(peer);
            self.service = Some(service);
            Ok(())
        })
    }

    fn capabilities(&self) -> Vec<String> {
        self.tools
            .read()
            .unwrap()
            .iter()
            .map(|t| format!("mcp:{}/{}", self.name, t.name))
            .collect()
    }

    fn run(&mut self, a: Assignment) -> BoxFuture<'static, Outcome> {
        let limit = a
            .timeout_ms
            .or(self.spec.timeout_ms)
            .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        let (peer, store, prefix) = (self.peer(), self.store.clone(), format!("mcp:{}/", self.name));
        Box::pin(async move {
            let peer = peer?;
            let (tool, arguments) = match a.payload.get("tool").and_then(Value::as_str) {
                Some(tool) => (
                    tool.to_owned(),
                    a.payload.get("arguments").cloned().unwrap_or(Value::Null),
                ),
                None => (tool_of(store.as_ref(), &a.task_id, &prefix).await?, a.payload.clone()),
            };
            let result = call(&peer, &tool, arguments, &a.task_id, limit).await?;
            if result.is_error == Some(true) {
                return Err(format!("tool {tool}: {}", text_of(&result)));
            }
            Ok(result
                .structured_content
                .clone()
                .unwrap_or_else(|| Value::String(text_of(&result))))
        })
    }

    fn own_timeouts(&self) -> bool {
        true
    }

    fn message(
        &mut self,
        _from: Option<String>,
        payload: Value,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Value, String>> {
        let (peer, tools, server) = (self.peer(), self.tools.clone(), self.name.clone());
        Box::pin(async move {
            match payload.get("op").and_then(Value::as_str) {
                Some("tools") => {
                    let tools: Vec<Value> = tools
                        .read()
                        .unwrap()
                        .iter()
                        .map(|t| json!({ "name": t.name, "description": t.description, "inputSchema": t.input_schema }))
                        .collect();
                    Ok(json!({ "server": server, "tools": tools }))
                }
                Some("call") => {
                    let tool = payload
                        .get("tool")
                        .and_then(Value::as_str)
                        .ok_or("a call needs a \"tool\"")?;
                    let key = payload.get("key").and_then(Value::as_str).unwrap_or_default();
                    let arguments = payload.get("arguments").cloned().unwrap_or(Value::Null);
                    let result = call(&peer?, tool, arguments, key, timeout).await?;
                    Ok(json!({
                        "content": text_of(&result),
                        "isError": result.is_error == Some(true),
                        "structuredContent": result.structured_content,
                    }))
                }
                _ => Err(
                    "an mcp agent takes {\"op\": \"tools\"} or {\"op\": \"call\", \"tool\", \"arguments\", \"key\"}"
                        .into(),
                ),
            }
        })
    }

    fn stop(&mut self, _grace: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(watcher) = self.watcher.take() {
                // Its child goes with it (killed on drop).
                watcher.abort();
            }
            self.peer = None;
            if let Some(service) = self.service.take() {
                let _ = service.cancel().await;
            }
        })
    }
}

impl Drop for Mcp {
    /// An agent that crashed is dropped without `stop`: its watcher (which holds the
    /// server's process, killed when dropped) goes with it.
    fn drop(&mut self) {
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
    }
}

/// The tool a task aimed at a capability `mcp:<agent name>/<tool>` names.
async fn tool_of(store: Option<&Store>, task: &str, prefix: &str) -> Result<String, String> {
    let spec = match store {
        Some(store) => store
            .get(crate::tables::TASKS, task)
            .await
            .map_err(|e| format!("the task's spec could not be read: {e}"))?,
        None => None,
    };
    let capability = spec
        .map(|bytes| troupe_runtime::codec::decode::<crate::task::TaskSpec>(&bytes))
        .transpose()
        .map_err(|e| e.to_string())?
        .and_then(|s| s.capability);
    capability
        .as_deref()
        .and_then(|c| c.strip_prefix(prefix))
        .map(str::to_owned)
        .ok_or_else(|| {
            format!("a task for an mcp agent names its tool: capability {prefix}<tool>, or a payload {{\"tool\", \"arguments\"}}")
        })
}

/// Starts the server's command: its own process group, a clean environment (PATH and the
/// spec's variables), killed when dropped; its stderr goes to the node's log.
fn spawn(spec: &McpBackend, agent: &str) -> Result<tokio::process::Child, String> {
    let program = &spec.command[0];
    let mut command = tokio::process::Command::new(program);
    command
        .args(&spec.command[1..])
        .env_clear()
        .envs(std::env::var_os("PATH").map(|p| ("PATH", p)))
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| format!("cannot start {program}: {e}"))?;
    if let Some(stderr) = child.stderr.take() {
        let agent = agent.to_owned();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(%agent, "mcp server: {line}");
            }
        });
    }
    Ok(child)
}

/// Pings the server, lists its tools again when they change, and tells the agent when the
/// server is gone (its command exited, or it missed its pings).
async fn watch(
    peer: Peer<RoleClient>,
    mut child: Option<tokio::process::Child>,
    changed: Arc<Notify>,
    tools: Arc<RwLock<Vec<ServerTool>>>,
    every: Duration,
    link: Link,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    let mut missed = 0;
    loop {
        let exited = async {
            match child.as_mut() {
                Some(c) => c.wait().await.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            status = exited => {
                link.signal(Signal::Lost(format!("the MCP server exited ({status})")));
                return;
            }
            () = changed.notified() => match list(&peer).await {
                Ok(now) => {
                    *tools.write().unwrap() = now;
                    link.signal(Signal::CapabilitiesChanged);
                }
                Err(e) => tracing::warn!(error = %e, "the MCP server's tools could not be listed again"),
            },
            _ = ticker.tick() => {
                let ping = peer.send_request(ClientRequest::PingRequest(PingRequest::default()));
                match tokio::time::timeout(every, ping).await {
                    Ok(Ok(_)) => {
                        if missed > 0 {
                            link.signal(Signal::Healthy);
                        }
                        missed = 0;
                    }
                    Ok(Err(e)) => {
                        // The connection itself is gone: no ping will be answered.
                        link.signal(Signal::Lost(format!("the MCP server did not answer a ping: {e}")));
                        return;
                    }
                    Err(_) => missed += 1,
                }
                if missed >= MISSES {
                    link.signal(Signal::Lost(format!("the MCP server missed {missed} pings")));
                    return;
                }
                if missed > 0 {
                    link.signal(Signal::Unhealthy(format!("the MCP server missed {missed} ping")));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a process whose command line holds `marker` runs.
    fn running(marker: &str) -> bool {
        std::process::Command::new("pgrep")
            .args(["-f", marker])
            .status()
            .is_ok_and(|s| s.success())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backend_dropped_without_a_stop_takes_its_server_with_it() {
        let python = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/mcp-venv/bin/python");
        let server = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/mcp_server.py");
        assert!(
            std::path::Path::new(python).exists(),
            "{python} is missing: run `make deps` (the Python mcp SDK)"
        );
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("dropped.log").to_string_lossy().into_owned();
        let spec = McpBackend {
            command: vec![python.into(), server.into(), "--log".into(), marker.clone()],
            env: Vec::new(),
            url: None,
            api_key: None,
            ping_ms: McpBackend::DEFAULT_PING_MS,
            timeout_ms: None,
        };
        let mut mcp = Mcp::new(spec, "dropped", Default::default(), None);
        mcp.start(Link::detached()).await.unwrap();
        assert_eq!(mcp.capabilities(), ["mcp:dropped/charge", "mcp:dropped/learn"]);
        assert!(running(&marker));
        // As when its agent crashes: no stop, the backend is dropped.
        drop(mcp);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while running(&marker) {
            assert!(std::time::Instant::now() < deadline, "the server outlived its backend");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

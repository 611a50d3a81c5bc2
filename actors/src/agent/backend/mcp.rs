//! The `mcp` backend: the agent is a client of an MCP server, a command speaking MCP on its
//! stdin and stdout or a streamable-HTTP endpoint (both through `rmcp`), in either era of
//! the protocol: the initialize era (2025-11-25 and before: `initialize`, sessions, `ping`,
//! `notifications/tools/list_changed`), which most servers speak, and the stateless
//! revision 2026-07-28 (`server/discover`, each request carrying its own `_meta`, no `ping`,
//! list changes on a `subscriptions/listen` stream) for a server that refuses `initialize`.
//!
//! - Started: the server is started (or reached), initialised (or, refused, started again and
//!   discovered) and its tools listed; each tool is a capability of the agent,
//!   `mcp:<agent name>/<tool>`.
//! - Watched every `pingMs`: by `ping`, or in the stateless era by `tools/list`. Two probes
//!   unanswered, or the command's exit, and the agent is lost, so its supervisor restarts it
//!   (the recovery ladder applies).
//! - Its tools listed again when they change (the notification, or the listen stream; in the
//!   stateless era each probe's list is compared too).
//! - A task runs one tool: the one its capability names, with the payload as arguments, or
//!   `{"tool": …, "arguments": {…}}` for a task aimed at the agent. The task's id goes in the
//!   call's `_meta` as `dev.troupe/idempotencyKey`: a server that honours it runs a retried
//!   call at most once; one that does not, at least once.
//! - Messages let LLM agents use its tools: `{"op": "tools"}` lists them, `{"op": "call",
//!   "tool", "arguments", "key"}` calls one and answers its content, an error included.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientConfig, ClientRequest, ListToolsRequest, PaginatedRequestParams,
    ProtocolVersion, ServerResult,
};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, NotificationContext, RunningService};
use rmcp::{ClientHandler, Peer, RoleClient};
use serde_json::{json, Map, Value};
use tokio::io::AsyncBufReadExt;
use tokio::sync::Notify;
use troupe_runtime::store::Store;

use super::{Backend, Link};
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

mod watch;
use watch::{listen, watch, Watched};

/// The protocol's era a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Era {
    /// 2025-11-25 and before: `initialize`, sessions, `ping`, list_changed notifications.
    Initialize,
    /// 2026-07-28: stateless; `server/discover`, no `ping`, `subscriptions/listen`.
    Stateless,
}

/// Why a connection was not made.
enum Refusal {
    /// The server answered, or closed, without a handshake in this era: the other may work.
    Era(String),
    /// Nothing to try again: the command did not start, or the server did not answer in time.
    Final(String),
}

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
    /// The agent's id, and where its server's stderr lines are kept (`agentLogs`).
    logs: Option<(String, crate::agent::LogBook)>,
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
            logs: None,
            secrets,
            store,
            tools: Arc::default(),
            peer: None,
            service: None,
            watcher: None,
        }
    }

    /// Keeps the server's stderr lines in `logs` as agent `id`'s (a command's; a URL's server
    /// writes its own elsewhere).
    pub fn logging(mut self, id: &str, logs: crate::agent::LogBook) -> Self {
        self.logs = Some((id.to_owned(), logs));
        self
    }

    fn peer(&self) -> Result<Peer<RoleClient>, String> {
        self.peer
            .clone()
            .ok_or_else(|| "the MCP server is not connected".to_string())
    }

    /// Starts (or reaches) the server and opens the protocol in `era`: its service, and the
    /// command's process when it is one.
    async fn connect(
        &self,
        era: Era,
        changed: &Arc<Notify>,
    ) -> Result<(RunningService<RoleClient, Listener>, Option<tokio::process::Child>), Refusal> {
        let listener = Listener {
            changed: changed.clone(),
        };
        let lifecycle = match era {
            Era::Initialize => ClientLifecycleMode::Initialize,
            Era::Stateless => ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        };
        let verb = match era {
            Era::Initialize => "initialise",
            Era::Stateless => "answer server/discover",
        };
        let late = |who: &str| Refusal::Final(format!("{who} did not {verb} within {} s", START_TIMEOUT.as_secs()));
        match &self.spec.url {
            Some(url) => {
                use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
                troupe_runtime::tls::install_provider();
                let mut config = StreamableHttpClientTransportConfig::with_uri(url.clone());
                if let Some(key) = &self.spec.api_key {
                    let key = self
                        .secrets
                        .read(key)
                        .await
                        .map_err(|e| Refusal::Final(e.to_string()))?;
                    config = config.auth_header(key);
                }
                let transport = rmcp::transport::StreamableHttpClientTransport::from_config(config);
                let service = tokio::time::timeout(START_TIMEOUT, listener.serve_with_lifecycle(transport, lifecycle))
                    .await
                    .map_err(|_| late(url))?;
                let service = match service {
                    Ok(service) => service,
                    // Nothing to ask in another era where nothing answers; and the SDK's
                    // error keeps none of the connection's own ("connection refused").
                    Err(e) => match unreachable(url).await {
                        Some(why) => return Err(Refusal::Final(format!("{url} cannot be reached: {why}"))),
                        None => return Err(Refusal::Era(format!("{url} did not {verb}: {}", init_cause(&e)))),
                    },
                };
                Ok((service, None))
            }
            None => {
                let mut spawned = spawn(&self.spec, &self.name, self.logs.clone()).map_err(Refusal::Final)?;
                let (stdout, stdin) = (spawned.stdout.take(), spawned.stdin.take());
                let (Some(stdout), Some(stdin)) = (stdout, stdin) else {
                    return Err(Refusal::Final("the MCP server's pipes were not set up".into()));
                };
                let program = &self.spec.command[0];
                let service =
                    tokio::time::timeout(START_TIMEOUT, listener.serve_with_lifecycle((stdout, stdin), lifecycle))
                        .await
                        .map_err(|_| late(program))?
                        .map_err(|e| Refusal::Era(format!("{program} did not {verb}: {e}")))?;
                Ok((service, Some(spawned)))
            }
        }
    }
}

/// The server's tools, every page, asked of the server itself (never a cached list: a
/// stateless server's list may carry a time to cache it, and a refresh must see a change).
async fn list(peer: &Peer<RoleClient>) -> Result<Vec<ServerTool>, String> {
    let mut tools = Vec::new();
    let mut cursor = None;
    loop {
        let request = ListToolsRequest {
            method: Default::default(),
            params: cursor.map(|c| PaginatedRequestParams::default().with_cursor(Some(c))),
            extensions: Default::default(),
        };
        let answer = peer
            .send_request(ClientRequest::ListToolsRequest(request))
            .await
            .map_err(|e| format!("tools/list failed: {e}"))?;
        let ServerResult::ListToolsResult(page) = answer else {
            return Err(format!("tools/list was answered with {answer:?}"));
        };
        tools.extend(page.tools.into_iter().map(|t| ServerTool {
            name: t.name.to_string(),
            description: t.description.map(|d| d.to_string()).unwrap_or_default(),
            input_schema: Value::Object((*t.input_schema).clone()),
        }));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(tools),
        }
    }
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

/// Why an initialisation failed, in the transport's own words and their causes ("Client
/// error: error sending request for url …") rather than the type names the SDK's text is
/// made of ("Send message error Transport [rmcp::transport::worker::WorkerTransport<…>]").
fn init_cause(e: &rmcp::service::ClientInitializeError) -> String {
    match e {
        rmcp::service::ClientInitializeError::TransportError { error, .. } => {
            troupe_runtime::causes::said_with_causes(error.error.as_ref())
        }
        other => other.to_string(),
    }
}

/// Why a TCP connection to `url`'s host and port fails, if it does (at most a second).
async fn unreachable(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let (host, port) = (parsed.host_str()?.to_owned(), parsed.port_or_known_default()?);
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    match tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(format!("{host}:{port}: {e}")),
        Err(_) => Some(format!("{host}:{port} did not accept a connection within 1 s")),
    }
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
            let (service, child, era) = match self.connect(Era::Initialize, &changed).await {
                Ok((service, child)) => (service, child, Era::Initialize),
                Err(Refusal::Era(legacy)) => match self.connect(Era::Stateless, &changed).await {
                    Ok((service, child)) => {
                        tracing::info!(agent = %self.name, %legacy, "the MCP server speaks 2026-07-28");
                        (service, child, Era::Stateless)
                    }
                    Err(Refusal::Era(modern) | Refusal::Final(modern)) => {
                        return Err(format!("{legacy}; nor by server/discover (MCP 2026-07-28): {modern}"))
                    }
                },
                Err(Refusal::Final(e)) => return Err(e),
            };
            let peer = service.peer().clone();
            *self.tools.write().unwrap() = tokio::time::timeout(START_TIMEOUT, list(&peer))
                .await
                .map_err(|_| "tools/list did not answer".to_string())??;
            // A stateless server tells of new tools on a listen stream, if it offers one.
            let listening = match era {
                Era::Initialize => None,
                Era::Stateless => listen(&peer).await,
            };
            self.watcher = Some(tokio::spawn(watch(
                Watched {
                    peer: peer.clone(),
                    era,
                    child,
                    changed,
                    listening,
                    tools: self.tools.clone(),
                },
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
/// spec's variables), killed when dropped; its stderr lines go to the agent's log (`logs`)
/// and, at debug, to the node's.
fn spawn(
    spec: &McpBackend,
    agent: &str,
    logs: Option<(String, crate::agent::LogBook)>,
) -> Result<tokio::process::Child, String> {
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
                tracing::debug!(%agent, "mcp server: {line}");
                if let Some((id, book)) = &logs {
                    book.write(id, None, "stderr", &line);
                }
            }
        });
    }
    Ok(child)
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

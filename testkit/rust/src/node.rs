//! A `troupe serve` child process run by a test.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::experiment::{Fault, FaultBlock};
use crate::until;

/// The cluster cookie every node started by the kit shares.
const COOKIE: &str = "troupe-testkit-cookie";

/// An error the API answered: its code (`extensions.code`) and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// A node: its process, data dir and ports. Killed when dropped.
pub struct Node {
    pub name: String,
    dir: tempfile::TempDir,
    pub cluster_port: u16,
    port: u16,
    args: Vec<String>,
    url: String,
    token: String,
    child: Option<Child>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish()
    }
}

fn binary() -> Result<PathBuf> {
    if let Ok(bin) = std::env::var("TROUPE_BIN") {
        return Ok(bin.into());
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|p| p.join("target/debug/troupe"))
        .find(|p| p.exists())
        .context("no troupe binary: set TROUPE_BIN, or build it (cargo build)")
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Node {
    /// Starts a lone node with fault injection on and waits until it serves.
    pub async fn start(name: &str) -> Result<Node> {
        Self::start_with(name, &[]).await
    }

    /// Starts a node with extra `troupe serve` arguments (`--join`, timeouts, ...).
    pub async fn start_with(name: &str, args: &[&str]) -> Result<Node> {
        // A client built with TLS support needs a crypto provider; one installed already is
        // all this asks for.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut node = Node {
            name: name.to_owned(),
            dir: tempfile::Builder::new()
                .prefix(&format!("troupe-kit-{name}-"))
                .tempdir()?,
            cluster_port: free_port()?,
            port: 0,
            args: ["--fault-injection", "true"]
                .iter()
                .chain(args)
                .map(|s| s.to_string())
                .collect(),
            url: String::new(),
            token: String::new(),
            child: None,
            http: reqwest::Client::builder().no_proxy().build()?,
        };
        // The cluster port was free when picked, but another process may take it before the
        // node binds it (an outgoing connection's port, another test's node): then it starts
        // again on another port.
        for _ in 0..3 {
            match node.launch().await {
                Err(e) if format!("{e:#}").contains("Address already in use") => {
                    node.cluster_port = free_port()?;
                }
                other => return other.map(|_| node),
            }
        }
        node.launch().await?;
        Ok(node)
    }

    /// Starts `n` nodes, the others joining the first, and waits until every node lists
    /// every member UP.
    pub async fn cluster(n: usize) -> Result<Vec<Node>> {
        let first = Node::start("n1").await?;
        let join = format!("127.0.0.1:{}", first.cluster_port);
        let mut nodes = vec![first];
        for i in 2..=n {
            nodes.push(Node::start_with(&format!("n{i}"), &["--join", &join]).await?);
        }
        for node in &nodes {
            node.wait_members_up(n).await?;
        }
        Ok(nodes)
    }

    /// Waits until this node lists `n` members, all UP.
    pub async fn wait_members_up(&self, n: usize) -> Result<()> {
        until(&format!("{} to see {n} members UP", self.name), || async {
            let c = self.gql("{ cluster { members { name state } } }", json!({})).await?;
            let members = c["cluster"]["members"].as_array().cloned().unwrap_or_default();
            Ok((members.len() == n && members.iter().all(|m| m["state"] == "UP")).then_some(()))
        })
        .await
    }

    async fn launch(&mut self) -> Result<()> {
        let addr_file = self.dir.path().join("gateway.addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))?;
        let child = Command::new(binary()?)
            .arg("serve")
            .args(["--data-dir", &self.dir.path().display().to_string()])
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--node-name", &self.name])
            .args(["--cluster-listen", &format!("127.0.0.1:{}", self.cluster_port)])
            .args(&self.args)
            .env("TROUPE_COOKIE", COOKIE)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("troupe serve did not start")?;
        self.child = Some(child);
        let token_file = self.dir.path().join("admin.token");
        let http = self.http.clone();
        let serving = || {
            let (addr_file, token_file, http) = (addr_file.clone(), token_file.clone(), http.clone());
            async move {
                let addr = std::fs::read_to_string(&addr_file)
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                if addr.is_empty() || !token_file.exists() {
                    return Ok::<_, anyhow::Error>(None);
                }
                let ok = http
                    .get(format!("http://{addr}/healthz"))
                    .send()
                    .await?
                    .status()
                    .is_success();
                Ok(ok.then_some(addr))
            }
        };
        // As `until`, but a node whose process ended (it could not listen, say) is told at
        // once, not after the whole wait.
        let end = tokio::time::Instant::now() + crate::WAIT;
        let addr = loop {
            if let Ok(Some(addr)) = serving().await {
                break addr;
            }
            if let Some(status) = self.child.as_mut().map(Child::try_wait).transpose()?.flatten() {
                bail!(
                    "node {} exited ({status}) before it served:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if tokio::time::Instant::now() >= end {
                bail!(
                    "timed out waiting for node {} to serve:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        self.port = addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or(0);
        self.url = format!("http://{addr}");
        self.token = std::fs::read_to_string(token_file)?.trim().to_owned();
        Ok(())
    }

    /// The last lines the node logged.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGKILL, from outside, as a real crash is: no chance to clean up.
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts it again on the same data dir and ports (after a kill, or a running node is
    /// killed first).
    pub async fn restart(&mut self) -> Result<()> {
        self.kill().await?;
        self.launch().await
    }

    /// Runs a query or mutation; an answer with errors is an [`ApiError`] (its code and
    /// message), which `anyhow::Error::downcast_ref` gives back.
    pub async fn gql(&self, query: &str, variables: Value) -> Result<Value> {
        let answer: Value = self
            .http
            .post(format!("{}/graphql", self.url))
            .bearer_auth(&self.token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?
            .json()
            .await?;
        if let Some(first) = answer["errors"].as_array().and_then(|e| e.first()) {
            return Err(ApiError {
                code: first["extensions"]["code"].as_str().unwrap_or("ERROR").to_owned(),
                message: first["message"].as_str().unwrap_or_default().to_owned(),
            }
            .into());
        }
        Ok(answer["data"].clone())
    }

    /// Spawns a builtin agent with these labels and answers its id once it runs.
    pub async fn spawn_builtin(&self, kind: &str, labels: &[(&str, &str)]) -> Result<String> {
        let labels: Vec<Value> = labels.iter().map(|(k, v)| json!({ "key": k, "value": v })).collect();
        let spec =
            json!({ "name": format!("{kind}-agent"), "backend": { "builtin": { "kind": kind } }, "labels": labels });
        let made = self
            .gql(
                "mutation($s: SpawnAgentInput!) { spawnAgent(input: $s) { id } }",
                json!({ "s": spec }),
            )
            .await?;
        let id = made["spawnAgent"]["id"].as_str().context("no agent id")?.to_owned();
        self.wait_agent(&id, "RUNNING").await?;
        Ok(id)
    }

    pub async fn wait_agent(&self, id: &str, state: &str) -> Result<Value> {
        let q = "query($id: ID!) { agent(id: $id) { id state restarts } }";
        until(&format!("agent {id} to be {state}"), || async {
            let a = self.gql(q, json!({ "id": id })).await?["agent"].clone();
            Ok((a["state"] == state).then_some(a))
        })
        .await
    }

    /// Submits a task to one agent; its id.
    pub async fn submit_to(&self, agent: &str, payload: Value) -> Result<String> {
        let q = "mutation($t: SubmitTaskInput!) { submitTask(input: $t) { id } }";
        let t = self
            .gql(q, json!({ "t": { "agentId": agent, "payload": payload } }))
            .await?;
        Ok(t["submitTask"]["id"].as_str().context("no task id")?.to_owned())
    }

    /// Waits until the task is in `state`; fails at once if it ends in another one.
    pub async fn wait_task(&self, id: &str, state: &str) -> Result<Value> {
        let q = "query($id: ID!) { task(id: $id) { id state result error } }";
        until(&format!("task {id} to be {state}"), || async {
            let t = self.gql(q, json!({ "id": id })).await?["task"].clone();
            let now = t["state"].as_str().unwrap_or_default();
            if now != state && ["SUCCEEDED", "FAILED", "CANCELLED", "DEAD", "EXPIRED"].contains(&now) {
                bail!("task {id} ended {now}, not {state}: {t}");
            }
            Ok((now == state).then_some(t))
        })
        .await
    }

    /// What is armed on this node now.
    pub async fn fault_gates(&self) -> Result<Vec<Value>> {
        let g = self
            .gql("{ faultGates { experiment injection action target } }", json!({}))
            .await?;
        Ok(g["faultGates"].as_array().cloned().unwrap_or_default())
    }

    /// A block of the test run under `fault` (see [`FaultBlock::run`]).
    pub fn fault(&self, fault: Fault) -> FaultBlock<'_> {
        FaultBlock::new(self, fault)
    }
}

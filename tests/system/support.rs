//! The harness: a real `troupe serve` process per [`Node`], GraphQL over HTTP, and
//! polling helpers whose every wait ends at a deadline. What several areas' tests share of a
//! domain lives here too: `messages` (the gated agent and mailbox waits), `swarms` and `vms`
//! (their fields, reads and waits); agent fixtures in `agents`.

mod agents;
mod api;
pub mod messages;
pub mod netns;
mod process;
pub mod swarms;
pub mod vms;
mod ws;

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use tempfile::TempDir;

pub use agents::{
    careful_with_a_task, first_approval, group_members, proc_stat, python_agent, shell_agent, wait_group_gone, FakeLlm,
};
pub use process::{free_port, pid_alive, send_signal, serve_args, wait_pid_gone, Guard};
pub use ws::{Incoming, Subscription};

/// How long any single condition may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);
/// Poll interval for conditions.
const POLL: Duration = Duration::from_millis(50);
/// Cluster cookie shared by every node a test starts.
pub const COOKIE: &str = "troupe-system-test-cookie";

/// A bounded wait: `tick` fails once the deadline has passed, otherwise pauses one poll.
pub struct Deadline {
    end: Instant,
    what: String,
}

impl Deadline {
    pub fn after(limit: Duration, what: impl Into<String>) -> Self {
        Self {
            end: Instant::now() + limit,
            what: what.into(),
        }
    }

    pub fn expired(&self) -> bool {
        Instant::now() >= self.end
    }

    /// Fails with `last` (what was seen most recently) once expired; else waits one poll.
    pub async fn tick(&self, last: impl std::fmt::Display) -> Result<()> {
        if self.expired() {
            bail!("timed out waiting for {}; last seen: {last}", self.what);
        }
        tokio::time::sleep(POLL).await;
        Ok(())
    }
}

/// What a node is started with beyond the harness's own flags.
#[derive(Clone, Default)]
pub struct NodeOpts {
    pub name: String,
    pub args: Vec<String>,
    /// A network namespace to run in, and the address the node listens on there.
    pub netns: Option<(String, String)>,
    /// The cluster port to listen on (0: the system picks one); a free one when not set.
    pub cluster_port: Option<u16>,
}

impl NodeOpts {
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            args: Vec::new(),
            netns: None,
            cluster_port: None,
        }
    }

    /// Runs the node in the network namespace `ns`, listening on `ip` there.
    pub fn in_netns(mut self, ns: &str, ip: &str) -> Self {
        self.netns = Some((ns.to_string(), ip.to_string()));
        self
    }

    pub fn arg(mut self, flag: &str, value: impl ToString) -> Self {
        self.args.push(flag.to_string());
        self.args.push(value.to_string());
        self
    }
}

/// One `troupe serve` process. The data dir outlives the process so a node can be
/// killed and started again on the same store.
pub struct Node {
    pub name: String,
    /// The gateway's "127.0.0.1:PORT".
    pub addr: String,
    /// The admin token read from `<data-dir>/admin.token`.
    pub token: String,
    pub cluster_port: u16,
    opts: NodeOpts,
    dir: TempDir,
    proc: Option<process::Guard>,
    http: reqwest::Client,
    /// A start waits for `/livez` rather than `/healthz` (see [`Node::restart_cut_off`]).
    alive_is_enough: bool,
    /// The gateway address to listen on instead of a port the system picks (see
    /// [`Node::restart_on_its_port`]).
    listen: Option<String>,
}

impl Node {
    pub async fn start(opts: NodeOpts) -> Result<Node> {
        // TROUPE_TEST_KEEP set: every node's data dir and logs stay after the test, to read
        // a failure's whole story (a failure message shows only each log's end).
        let keep = std::env::var_os("TROUPE_TEST_KEEP").is_some();
        let dir = tempfile::Builder::new()
            .prefix("troupe-test-")
            .disable_cleanup(keep)
            .tempdir()?;
        // Its presence at start turns on the store's fault files (see Node::inject_fault).
        std::fs::create_dir_all(dir.path().join("faults"))?;
        let http = http_client().no_proxy().timeout(WAIT).build()?;
        let mut node = Node {
            name: opts.name.clone(),
            addr: String::new(),
            token: String::new(),
            cluster_port: match opts.cluster_port {
                Some(port) => port,
                None => process::free_port()?,
            },
            opts,
            dir,
            proc: None,
            http,
            alive_is_enough: false,
            listen: None,
        };
        // The cluster port was free when picked, but another test's node may take it before
        // this one binds it: then it starts again on another port.
        for _ in 0..3 {
            match node.launch().await {
                Err(e) if format!("{e:#}").contains("Address already in use") => {
                    node.cluster_port = process::free_port()?;
                }
                other => return other.map(|_| node),
            }
        }
        node.launch().await?;
        Ok(node)
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn launch(&mut self) -> Result<()> {
        let addr_file = self.file("gateway.addr");
        // A file left by a killed process must not be mistaken for the new one's.
        let _ = std::fs::remove_file(&addr_file);
        let host = self
            .opts
            .netns
            .as_ref()
            .map_or("127.0.0.1", |(_, ip)| ip.as_str())
            .to_owned();
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--data-dir".into(),
            self.dir.path().display().to_string(),
            "--listen".into(),
            self.listen.clone().unwrap_or_else(|| format!("{host}:0")),
            "--node-name".into(),
            self.name.clone(),
            "--cluster-listen".into(),
            format!("{host}:{}", self.cluster_port),
            "--log-format".into(),
            "text".into(),
        ];
        args.extend(self.opts.args.iter().cloned());
        let netns = self.opts.netns.as_ref().map(|(ns, _)| ns.as_str());
        self.proc = Some(process::Guard::spawn_in(netns, &args, self.dir.path())?);

        let deadline = Deadline::after(WAIT, format!("node {} to serve", self.name));
        loop {
            if let Some(status) = self.proc_mut()?.try_wait()? {
                bail!(
                    "node {} exited during start-up with {status}\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if let Some(addr) = self.ready_addr().await {
                self.addr = addr;
                break;
            }
            if deadline.expired() {
                bail!(
                    "node {} did not become ready in {WAIT:?}\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        }
        self.token = std::fs::read_to_string(self.file("admin.token"))?.trim().to_string();
        Ok(())
    }

    /// The gateway address once gateway.addr, admin.token and /healthz are all there.
    async fn ready_addr(&self) -> Option<String> {
        let addr = std::fs::read_to_string(self.file("gateway.addr"))
            .ok()?
            .trim()
            .to_string();
        let token = std::fs::read_to_string(self.file("admin.token")).ok()?;
        if addr.is_empty() || token.trim().is_empty() {
            return None;
        }
        let path = if self.alive_is_enough { "livez" } else { "healthz" };
        let resp = self.http.get(format!("http://{addr}/{path}")).send().await.ok()?;
        (resp.status() == 200).then_some(addr)
    }

    fn proc_mut(&mut self) -> Result<&mut process::Guard> {
        self.proc.as_mut().context("node process was never started")
    }

    /// The node process's pid.
    pub fn pid(&self) -> Result<i32> {
        Ok(self.proc.as_ref().context("node process was never started")?.pid())
    }

    /// SIGKILL, as a crash would; waits until the process is gone.
    pub async fn kill9(&mut self) -> Result<()> {
        self.proc_mut()?.kill9().await
    }

    /// SIGSTOP: the process hangs with its connections open, as a hung host would.
    pub fn freeze(&self) -> Result<()> {
        self.proc
            .as_ref()
            .context("node process was never started")?
            .signal(libc::SIGSTOP)
    }

    /// SIGCONT after [`Node::freeze`].
    pub fn thaw(&self) -> Result<()> {
        self.proc
            .as_ref()
            .context("node process was never started")?
            .signal(libc::SIGCONT)
    }

    /// SIGTERM, then the exit status if the process exits within `within`.
    pub async fn terminate(&mut self, within: Duration) -> Result<ExitStatus> {
        self.proc_mut()?.terminate(within).await
    }

    /// SIGTERM without waiting for the exit (see [`Node::wait_exit`]).
    pub fn sigterm(&self) -> Result<()> {
        self.proc
            .as_ref()
            .context("node process was never started")?
            .signal(libc::SIGTERM)
    }

    /// The exit status once the process exits on its own, within `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> Result<ExitStatus> {
        self.proc_mut()?.wait_exit(within).await
    }

    /// Turns on a store fault of a running node: `commit-fail`, `reject-<table>` or
    /// `hold-<table>` (the
    /// node's binary is built with the fault-injection feature for these tests).
    pub fn inject_fault(&self, name: &str) -> Result<()> {
        std::fs::write(self.file("faults").join(name), b"")?;
        Ok(())
    }

    /// Whether the store has made a marker in the fault directory (`holding-<table>` while
    /// a `hold-<table>` gate holds a batch).
    pub fn fault_marker(&self, name: &str) -> bool {
        self.file("faults").join(name).exists()
    }

    pub fn clear_fault(&self, name: &str) -> Result<()> {
        std::fs::remove_file(self.file("faults").join(name))?;
        Ok(())
    }

    /// Starts the node again on the same data dir (kill -9 first if it still runs).
    pub async fn restart(&mut self) -> Result<()> {
        if self.proc_mut()?.try_wait()?.is_none() {
            self.kill9().await?;
        }
        self.launch().await
    }

    /// [`Node::restart`] with `args` added to the node's own, for this start only, for a
    /// start that reaches no majority: it waits until the node is alive (`/livez`), not
    /// until its work runs (`/healthz`), which needs a lease.
    pub async fn restart_cut_off(&mut self, args: &[&str]) -> Result<()> {
        let own = self.opts.args.clone();
        self.opts.args.extend(args.iter().map(|a| a.to_string()));
        self.alive_is_enough = true;
        let started = self.restart().await;
        (self.opts.args, self.alive_is_enough) = (own, false);
        started
    }

    /// [`Node::restart`] on the gateway address it had, as a node given a fixed `--listen`
    /// comes back: a client that was following it can find it again.
    pub async fn restart_on_its_port(&mut self) -> Result<()> {
        self.listen = Some(self.addr.clone());
        let started = self.restart().await;
        self.listen = None;
        started
    }

    /// How many lines of the node's stdout and stderr contain `text`.
    pub fn logged(&self, text: &str) -> usize {
        ["stdout.log", "stderr.log"]
            .iter()
            .map(|name| {
                let log = std::fs::read_to_string(self.file(name)).unwrap_or_default();
                log.lines().filter(|l| l.contains(text)).count()
            })
            .sum()
    }

    /// The last lines of the node's stdout and stderr, for failure messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["stdout.log", "stderr.log"] {
            let text = std::fs::read_to_string(self.file(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            // A panic's message is worth more than the end of its backtrace.
            for line in lines.iter().filter(|l| l.contains("panicked at")) {
                out.push_str(&format!("---- {} {name}: {line}\n", self.name));
            }
            out.push_str(&format!("---- {} {name} (last {} lines) ----\n", self.name, tail.len()));
            for line in tail {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// GET without a token: status and body text.
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        let resp = self.http.get(self.url(path)).send().await?;
        Ok((resp.status().as_u16(), resp.text().await?))
    }

    /// POST a raw body to /graphql with the admin token: status and body text.
    pub async fn post_raw(&self, body: impl Into<reqwest::Body>) -> Result<(u16, String)> {
        let resp = self
            .http
            .post(self.url("/graphql"))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        Ok((resp.status().as_u16(), resp.text().await?))
    }

    /// POST a GraphQL request body: HTTP status and the parsed JSON body.
    pub async fn post_graphql(&self, token: Option<&str>, body: &Value) -> Result<(u16, Value)> {
        let mut req = self.http.post(self.url("/graphql")).json(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("POST /graphql to {}", self.name))?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let value = serde_json::from_str(&text)
            .with_context(|| format!("HTTP {status} with a body that is not JSON: {text}"))?;
        Ok((status, value))
    }

    pub async fn gql_as(&self, token: &str, query: &str, vars: Value) -> Result<Value> {
        let body = json!({ "query": query, "variables": vars });
        Ok(self.post_graphql(Some(token), &body).await?.1)
    }

    /// The whole response body of a request made with the admin token.
    pub async fn gql(&self, query: &str, vars: Value) -> Result<Value> {
        self.gql_as(&self.token, query, vars).await
    }

    /// `data` of a request that must not produce errors.
    pub async fn gql_ok_as(&self, token: &str, query: &str, vars: Value) -> Result<Value> {
        let body = self.gql_as(token, query, vars).await?;
        if body.get("errors").is_some_and(|e| !e.is_null()) {
            bail!("GraphQL errors from {} for `{query}`: {body}", self.name);
        }
        Ok(body["data"].clone())
    }

    pub async fn gql_ok(&self, query: &str, vars: Value) -> Result<Value> {
        self.gql_ok_as(&self.token, query, vars).await
    }

    /// Runs `troupe recover` on this node's data dir (the node must be stopped).
    pub async fn recover(&self) -> Result<String> {
        process::recover(self.dir.path()).await
    }

    /// Runs `troupe token create --role ROLE` against this node's data dir.
    pub async fn create_token(&self, role: &str) -> Result<String> {
        process::create_token(role, self.dir.path()).await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Stop the process before its data dir goes away with `dir`.
        drop(self.proc.take());
        // Test output is captured, so this shows only when the test fails.
        eprintln!("{}", self.log_tail());
    }
}

/// A file a test creates to let gated exec agents finish: every task of a gated agent
/// waits for it, so a test decides when work ends instead of guessing with a sleep.
pub struct Gate {
    _dir: TempDir,
    path: PathBuf,
}

impl Gate {
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("troupe-gate-").tempdir()?;
        let path = dir.path().join("open");
        Ok(Self { _dir: dir, path })
    }

    /// A shell command that waits for the gate, then runs `then`.
    pub fn script(&self, then: &str) -> String {
        format!("until [ -e '{}' ]; do sleep 0.02; done; {then}", self.path.display())
    }

    /// The file whose existence opens the gate.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn open(&self) -> Result<()> {
        std::fs::write(&self.path, b"")?;
        Ok(())
    }
}

/// errors[0].extensions.code of a GraphQL response body.
/// A client builder on the node's one TLS provider (reqwest brings none of its own).
pub fn http_client() -> reqwest::ClientBuilder {
    troupe_runtime::tls::install_provider();
    reqwest::Client::builder()
}

pub fn error_code(body: &Value) -> Option<String> {
    body.pointer("/errors/0/extensions/code")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Fails unless the response carries an error with this code.
pub fn expect_code(body: &Value, code: &str) -> Result<()> {
    ensure!(
        error_code(body).as_deref() == Some(code),
        "expected error code {code}, got: {body}"
    );
    Ok(())
}

/// The sum of a metric's samples whose labels contain every one of `labels` (`k="v"`).
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The string at a JSON pointer.
pub fn text(v: &Value, pointer: &str) -> Result<String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_string)
        .with_context(|| format!("no string at {pointer} in {v}"))
}

/// The integer at a JSON pointer.
pub fn int(v: &Value, pointer: &str) -> Result<i64> {
    v.pointer(pointer)
        .and_then(Value::as_i64)
        .with_context(|| format!("no integer at {pointer} in {v}"))
}

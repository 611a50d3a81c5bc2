//! A real `troupe serve` process (the release build) for the load drivers, reached as a
//! user's client reaches it: GraphQL over HTTP on loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::sync::Mutex;

const BIN: &str = env!("CARGO_BIN_EXE_troupe");
pub const COOKIE: &str = "troupe-bench-cookie";

pub struct Server {
    pub addr: String,
    pub token: String,
    pub cluster_port: u16,
    _dir: tempfile::TempDir,
    child: Child,
    http: reqwest::Client,
    /// What the node was started with, to start it again ([`Server::restart`]).
    name: String,
    args: Vec<String>,
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("bound").port()
}

impl Server {
    /// Starts a node named `name` with extra flags and waits until /healthz answers 200.
    pub async fn start(name: &str, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster_port = free_port();
        // TROUPE_BENCH_LOGS=<dir> keeps each node's log there, named after the node.
        let log = match std::env::var_os("TROUPE_BENCH_LOGS") {
            Some(logs) => std::fs::File::create(std::path::Path::new(&logs).join(format!("{name}.log"))),
            None => std::fs::File::create(dir.path().join("stderr.log")),
        }
        .expect("log file");
        let mut args: Vec<String> = [
            "serve",
            "--data-dir",
            &dir.path().display().to_string(),
            "--listen",
            "127.0.0.1:0",
            "--node-name",
            name,
            "--cluster-listen",
            &format!("127.0.0.1:{cluster_port}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = spawn(&args, log);
        troupe_runtime::tls::install_provider();
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(1024)
            .build()
            .expect("http client");
        let (addr, token) = up(dir.path(), &http).await;
        Server {
            addr,
            token,
            cluster_port,
            _dir: dir,
            child,
            http,
            name: name.to_owned(),
            args,
        }
    }

    /// Stops the node as an operator would (SIGTERM) and waits until it is gone.
    pub fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and returns at once (see [`Server::exited`]).
    pub fn sigterm(&self) {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
    }

    /// Whether the process has exited (reaped if so).
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    /// Starts the node again on its data dir, once stopped, and waits until it serves.
    pub async fn restart(&mut self) {
        let _ = std::fs::remove_file(self._dir.path().join("gateway.addr"));
        let log = match std::env::var_os("TROUPE_BENCH_LOGS") {
            Some(logs) => std::fs::File::create(std::path::Path::new(&logs).join(format!("{}-again.log", self.name))),
            None => std::fs::File::create(self._dir.path().join("stderr-again.log")),
        }
        .expect("log file");
        self.child = spawn(&self.args, log);
        (self.addr, self.token) = up(self._dir.path(), &self.http).await;
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn graphql_url(&self) -> String {
        format!("http://{}/graphql", self.addr)
    }

    /// The whole answer to a request (`data`, `errors`).
    pub async fn answer(&self, query: &str, variables: Value) -> Value {
        self.http
            .post(self.graphql_url())
            .bearer_auth(&self.token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json")
    }

    /// `data` of a request that must succeed.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        let body = self.answer(query, variables).await;
        assert!(body.get("errors").is_none(), "GraphQL errors: {body}");
        body["data"].clone()
    }

    /// Sends `n` GraphQL requests from `clients` concurrent clients, each one's next when its
    /// last is answered (`body(c, i)` is request `i` of client `c`); how long all took and the
    /// latency of each. An answer with errors stops the run unless it carries a
    /// BACKPRESSURE hint: then the request is sent again after it, the wait counted in its
    /// latency. `check` looks at each successful answer.
    pub async fn load(
        &self,
        clients: usize,
        n: usize,
        body: impl Fn(usize, usize) -> Value + Clone + Send + 'static,
        check: fn(&Value) -> bool,
    ) -> (Duration, Histogram<u64>) {
        let latencies = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("histogram")));
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let (http, url, token, latencies, body) = (
                    self.http.clone(),
                    self.graphql_url(),
                    self.token.clone(),
                    latencies.clone(),
                    body.clone(),
                );
                let count = n / clients + usize::from(c < n % clients);
                tokio::spawn(async move {
                    let mut mine = Histogram::<u64>::new(3).expect("histogram");
                    for i in 0..count {
                        let request = body(c, i);
                        let t = Instant::now();
                        loop {
                            let resp = http.post(&url).bearer_auth(&token).json(&request).send().await;
                            let answer: Value = resp.expect("request").json().await.expect("json");
                            let Some(errors) = answer.get("errors") else {
                                assert!(check(&answer), "unexpected answer: {answer}");
                                break;
                            };
                            let retry = errors[0]["extensions"]["retryAfterMs"].as_u64();
                            let retry = retry.unwrap_or_else(|| panic!("GraphQL errors: {answer}"));
                            tokio::time::sleep(Duration::from_millis(retry)).await;
                        }
                        mine.record(t.elapsed().as_micros() as u64).expect("record");
                    }
                    latencies.lock().await.add(mine).expect("merge");
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("client");
        }
        let took = started.elapsed();
        let h = latencies.lock().await.clone();
        (took, h)
    }

    /// Spawns `n` builtin echo agents with the capability `echo`.
    pub async fn echo_agents(&self, n: usize, slots: i64) {
        let q = "mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }";
        for i in 0..n {
            let input = json!({ "name": format!("echo-{i}"), "backend": { "builtin": { "kind": "echo" } },
                                "capabilities": ["echo"], "maxConcurrentTasks": slots });
            self.gql(q, json!({ "input": input })).await;
        }
    }

    /// Waits until `n` tasks have succeeded.
    pub async fn await_succeeded(&self, n: u64) {
        let q = "{ tasks(state: SUCCEEDED, first: 0) { totalCount } }";
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let done = self.gql(q, json!({})).await["tasks"]["totalCount"]
                .as_u64()
                .unwrap_or(0);
            if done >= n {
                return;
            }
            assert!(Instant::now() < deadline, "only {done} of {n} tasks succeeded");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Starts `troupe` with `args`, its stderr to `log`.
fn spawn(args: &[String], log: std::fs::File) -> Child {
    // Another build of troupe (the previous release, built beside this one) may stand in,
    // for a before/after in the same run.
    let bin = std::env::var("TROUPE_BENCH_BIN").unwrap_or_else(|_| BIN.to_owned());
    Command::new(bin)
        .args(args)
        .env("TROUPE_COOKIE", COOKIE)
        .env(
            "RUST_LOG",
            std::env::var("TROUPE_BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("troupe serve starts")
}

/// Waits (at most a minute) until the node in `dir` serves; its address and admin token.
async fn up(dir: &Path, http: &reqwest::Client) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "the node did not come up: see {}",
            dir.display()
        );
        if let Some(found) = ready(dir, http).await {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ready(dir: &Path, http: &reqwest::Client) -> Option<(String, String)> {
    let addr = std::fs::read_to_string(dir.join("gateway.addr"))
        .ok()?
        .trim()
        .to_string();
    let token = std::fs::read_to_string(dir.join("admin.token"))
        .ok()?
        .trim()
        .to_string();
    let ok = http.get(format!("http://{addr}/healthz")).send().await.ok()?.status() == 200;
    ok.then_some((addr, token))
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebSocket to the node's gateway (graphql-transport-ws), initialised with `token`.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a subscription (`query` with `variables`) as a user's client does; its socket.
pub async fn subscribe(addr: &str, token: &str, query: &str, variables: Value) -> Ws {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    use tokio_tungstenite::tungstenite::Message;

    let mut request = format!("ws://{addr}/graphql/ws")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("connect");
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } });
    ws.send(Message::text(init.to_string())).await.expect("init");
    let sub = json!({ "id": "1", "type": "subscribe", "payload": { "query": query, "variables": variables } });
    ws.send(Message::text(sub.to_string())).await.expect("subscribe");
    ws
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user and system) a process has used so far, from `/proc/<pid>/stat`.
#[allow(unsafe_code)]
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis
    // start at field 3, so utime (14) and stime (15) are the 12th and 13th of them.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf reads a constant of the running system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / per_second)
}

/// A cookie file for an embedded node that joins a [`Server`].
pub fn cookie_file(dir: &Path) -> PathBuf {
    let path = dir.join("cookie");
    std::fs::write(&path, COOKIE).expect("cookie file");
    path
}

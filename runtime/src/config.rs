//! Node configuration: command-line flags, `TROUPE_*` environment variables and a TOML file,
//! in that order of precedence, over built-in defaults. One struct, [`ServeArgs`], is both
//! the flags and the file's keys, so the two cannot drift apart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `troupe serve` flags, and the keys of the TOML file (with underscores). Every one is
/// optional; the defaults are in brackets.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeArgs {
    /// TOML file with any of these settings (keys use underscores: data_dir, join = [...]).
    #[arg(long, env = "TROUPE_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Where the store, the admin token and the cookie live [default: ./troupe-data].
    #[arg(long, env = "TROUPE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Gateway address [default: 127.0.0.1:8080]; port 0 picks a free one (see gateway.addr).
    #[arg(long, env = "TROUPE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Stable name of this node in the cluster [default: the host name].
    #[arg(long, env = "TROUPE_NODE_NAME")]
    pub node_name: Option<String>,
    /// Cluster (ractor_cluster) address [default: 127.0.0.1:4697].
    #[arg(long, env = "TROUPE_CLUSTER_LISTEN")]
    pub cluster_listen: Option<SocketAddr>,
    /// Where the Raft lane listens: a fixed port for a firewall rule [default: the cluster
    /// address's IP, a port the system picks].
    #[arg(long, env = "TROUPE_RAFT_LISTEN")]
    pub raft_listen: Option<SocketAddr>,
    /// The host name peers reach this node by: its cluster and Raft lane addresses are
    /// advertised with it, and it is the name their TLS checks this node's certificate for
    /// (needed when the certificates name hosts, not addresses) [default: the cluster
    /// address's IP].
    #[arg(long, env = "TROUPE_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,
    /// A peer's cluster address to join; repeatable (comma-separated in TROUPE_JOIN).
    #[arg(long, env = "TROUPE_JOIN", value_delimiter = ',')]
    pub join: Vec<String>,
    /// How long a joining node waits to be admitted to the cluster's log (and to catch up)
    /// before it stops with the reason [default: 120000].
    #[arg(long, env = "TROUPE_JOIN_TIMEOUT_MS")]
    pub join_timeout_ms: Option<u64>,
    /// How many members vote in the replicated log; members admitted beyond them are
    /// learners [default: 3].
    #[arg(long, env = "TROUPE_VOTERS")]
    pub voters: Option<usize>,
    /// A label of this node, `key=value`; repeatable (comma-separated in
    /// TROUPE_NODE_LABELS). An agent with `nodeLabels` moves only to nodes that have them.
    #[arg(long = "node-label", env = "TROUPE_NODE_LABELS", value_delimiter = ',')]
    pub node_labels: Vec<String>,
    /// File holding the cluster cookie [default: $TROUPE_COOKIE, else <data-dir>/cookie].
    #[arg(long, env = "TROUPE_COOKIE_FILE")]
    pub cookie_file: Option<PathBuf>,
    /// This node's certificate chain (PEM) for mutual TLS between nodes; with tls_key and
    /// tls_ca, or none of the three [default: no TLS between nodes].
    #[arg(long, env = "TROUPE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "TROUPE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The CA certificate(s) (PEM) every node's certificate must be signed by.
    #[arg(long, env = "TROUPE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    #[arg(long, env = "TROUPE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// How long running tasks may take to finish on SIGINT/SIGTERM [default: 10000].
    #[arg(long, env = "TROUPE_SHUTDOWN_GRACE_MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// Restarts a node service supervisor makes within the window before it escalates
    /// [default: 5].
    #[arg(long, env = "TROUPE_SUPERVISOR_MAX_RESTARTS")]
    pub supervisor_max_restarts: Option<u32>,
    /// The restart-intensity window of the node's supervisors [default: 10000].
    #[arg(long, env = "TROUPE_SUPERVISOR_WINDOW_MS")]
    pub supervisor_window_ms: Option<u64>,
    /// Delay before the second restart within a window, doubled for each further one; the
    /// first restart is immediate [default: 100].
    #[arg(long, env = "TROUPE_SUPERVISOR_BACKOFF_MS")]
    pub supervisor_backoff_ms: Option<u64>,
    /// Restarts one agent gets within its window before it alone is FAILED [default: 5].
    #[arg(long, env = "TROUPE_AGENT_MAX_RESTARTS")]
    pub agent_max_restarts: Option<u32>,
    /// The window of an agent's own restart intensity [default: 10000].
    #[arg(long, env = "TROUPE_AGENT_RESTART_WINDOW_MS")]
    pub agent_restart_window_ms: Option<u64>,
    /// How long a graceful `stopAgent` lets running tasks finish before they are stopped
    /// (and go back to the queue, not charged) [default: 10000].
    #[arg(long, env = "TROUPE_AGENT_STOP_GRACE_MS")]
    pub agent_stop_grace_ms: Option<u64>,
    /// Checkpoints kept per agent; the oldest go first [default: 5].
    #[arg(long, env = "TROUPE_AGENT_CHECKPOINTS_KEPT")]
    pub agent_checkpoints_kept: Option<usize>,
    /// First task retry delay, doubled per attempt [default: 500].
    #[arg(long, env = "TROUPE_RETRY_BASE_MS")]
    pub retry_base_ms: Option<u64>,
    /// Longest task retry delay [default: 30000].
    #[arg(long, env = "TROUPE_RETRY_MAX_MS")]
    pub retry_max_ms: Option<u64>,
    /// Largest task payload, as JSON text [default: 262144].
    #[arg(long, env = "TROUPE_MAX_PAYLOAD_BYTES")]
    pub max_payload_bytes: Option<usize>,
    /// Largest HTTP request body and WebSocket message [default: 1048576].
    #[arg(long, env = "TROUPE_BODY_LIMIT_BYTES")]
    pub body_limit_bytes: Option<usize>,
    /// How many of the newest events the log keeps; 0 keeps all [default: 1000000].
    #[arg(long, env = "TROUPE_EVENT_RETENTION")]
    pub event_retention: Option<u64>,
    /// Memory for the store's page cache, in MiB: the tables get this, the Raft log a
    /// quarter of it [default: 128].
    #[arg(long, env = "TROUPE_STORE_CACHE_MB")]
    pub store_cache_mb: Option<usize>,
    /// Log entries between two snapshots of the replicated state; a twentieth of them (at
    /// least 64, at most 1,000) stay behind each snapshot for a member a little behind [default: 20000].
    #[arg(long, env = "TROUPE_RAFT_SNAPSHOT_EVERY")]
    pub raft_snapshot_every: Option<u64>,
    /// MiB of log entries between two snapshots (or twice the tables' file, if that is
    /// more), if they come first; the entries kept behind a snapshot take at most a
    /// twentieth of it [default: 1024].
    #[arg(long, env = "TROUPE_RAFT_SNAPSHOT_EVERY_MB")]
    pub raft_snapshot_every_mb: Option<u64>,
    /// How long a mutation's answer is kept for its idempotency key [default: 86400000].
    #[arg(long, env = "TROUPE_IDEMPOTENCY_WINDOW_MS")]
    pub idempotency_window_ms: Option<u64>,
    /// Require a token (any role) for /metrics [default: false].
    #[arg(long, env = "TROUPE_METRICS_AUTH")]
    pub metrics_auth: Option<bool>,
    /// Longest an HTTP request may take before it is answered 408 [default: 30000].
    #[arg(long, env = "TROUPE_HTTP_TIMEOUT_MS")]
    pub http_timeout_ms: Option<u64>,
    /// How often the node samples the series its dashboard's charts draw (`history`); it
    /// keeps 360 samples [default: 10000].
    #[arg(long, env = "TROUPE_HISTORY_INTERVAL_MS")]
    pub history_interval_ms: Option<u64>,
    /// Most HTTP requests served at once; more are answered 503 at once [default: 512].
    #[arg(long, env = "TROUPE_HTTP_MAX_IN_FLIGHT")]
    pub http_max_in_flight: Option<usize>,
    /// Most WebSocket connections at once [default: 4096].
    #[arg(long, env = "TROUPE_WS_MAX_CONNECTIONS")]
    pub ws_max_connections: Option<usize>,
    /// Most subscriptions on one WebSocket connection [default: 64].
    #[arg(long, env = "TROUPE_WS_MAX_SUBSCRIPTIONS")]
    pub ws_max_subscriptions: Option<usize>,
    /// How long a new WebSocket may take to send connection_init [default: 10000].
    #[arg(long, env = "TROUPE_WS_INIT_TIMEOUT_MS")]
    pub ws_init_timeout_ms: Option<u64>,
    /// Interval of the server's keep-alive pings on WebSockets [default: 15000].
    #[arg(long, env = "TROUPE_WS_KEEPALIVE_MS")]
    pub ws_keepalive_ms: Option<u64>,
    /// Consecutive failed attempts that open an agent's circuit breaker (it gets no tasks
    /// until the cool-down has passed) [default: 5].
    #[arg(long, env = "TROUPE_BREAKER_FAILURES")]
    pub breaker_failures: Option<u32>,
    /// How long an open breaker stays open before one trial task [default: 30000].
    #[arg(long, env = "TROUPE_BREAKER_COOLDOWN_MS")]
    pub breaker_cooldown_ms: Option<u64>,
    /// How a task that names no strategy picks among capable agents: score, round_robin,
    /// least_connections or weighted [default: score].
    #[arg(long, env = "TROUPE_DEFAULT_STRATEGY")]
    pub default_strategy: Option<String>,
    /// Messages one agent's mailbox holds; more are refused with BACKPRESSURE [default: 256].
    #[arg(long, env = "TROUPE_AGENT_MAILBOX_SIZE")]
    pub agent_mailbox_size: Option<usize>,
    /// Most tasks open (queued, waiting or running) on this node; a submit beyond it is
    /// refused with BACKPRESSURE [default: 200000].
    #[arg(long, env = "TROUPE_MAX_OPEN_TASKS")]
    pub max_open_tasks: Option<usize>,
    /// Simulated hypervisor hosts (libvirt `test:///`) this node makes on its first start
    /// [default: 3].
    #[arg(long, env = "TROUPE_SIMULATED_HOSTS")]
    pub simulated_hosts: Option<usize>,
    /// How often each host driver compares every VM's desired and actual state [default: 1000].
    #[arg(long, env = "TROUPE_VM_RECONCILE_MS")]
    pub vm_reconcile_ms: Option<u64>,
    /// How long a host may be UNREACHABLE before it is DOWN and its VMs are evacuated
    /// [default: 30000].
    #[arg(long, env = "TROUPE_HOST_DOWN_AFTER_MS")]
    pub host_down_after_ms: Option<u64>,
    /// How long a peer that has gone silent (stopped, cut off) is named missing in cluster-wide
    /// lists before it is dropped from them, with a MEMBER_DROPPED event; it is listed again
    /// once it answers [default: 60000].
    #[arg(long, env = "TROUPE_PEER_DROP_AFTER_MS")]
    pub peer_drop_after_ms: Option<u64>,
    /// Most migrations out of one host at once; more wait their turn [default: 2].
    #[arg(long, env = "TROUPE_MAX_OUTBOUND_MIGRATIONS")]
    pub max_outbound_migrations: Option<usize>,
    /// How long stopVm waits for a guest to shut down before destroying it [default: 30000].
    #[arg(long, env = "TROUPE_VM_STOP_TIMEOUT_MS")]
    pub vm_stop_timeout_ms: Option<u64>,
    /// How long one libvirt call may take; a host that does not answer in time is UNREACHABLE
    /// [default: 15000].
    #[arg(long, env = "TROUPE_LIBVIRT_TIMEOUT_MS")]
    pub libvirt_timeout_ms: Option<u64>,
    /// Enables the admin-only injectFault mutation (tests and drills) [default: false].
    #[arg(long, env = "TROUPE_FAULT_INJECTION", num_args = 0..=1, default_missing_value = "true")]
    pub fault_injection: Option<bool>,
    /// How long a running agent may take to answer the watchdog before it is reported
    /// unresponsive (AGENT_UNRESPONSIVE) [default: 30000].
    #[arg(long, env = "TROUPE_AGENT_WATCHDOG_MS")]
    pub agent_watchdog_ms: Option<u64>,
    /// Deadlines an agent may miss in a row before its supervisor restarts it [default: 2].
    #[arg(long, env = "TROUPE_AGENT_WATCHDOG_MISSES")]
    pub agent_watchdog_misses: Option<u32>,
    /// The other actors' watchdog deadlines by kind, as KIND=MS pairs separated by commas
    /// (0 turns a kind's watchdog off; kinds not named keep their default) [default:
    /// SUPERVISOR=30000,SWARM=30000,SERVICE=30000,SWARM_COORDINATOR=30000,HOST=30000,VM=30000].
    #[arg(long, env = "TROUPE_WATCHDOG_MS")]
    pub watchdog_ms: Option<String>,
    /// Deadlines such an actor may miss in a row before its supervisor restarts it
    /// [default: 2].
    #[arg(long, env = "TROUPE_WATCHDOG_MISSES")]
    pub watchdog_misses: Option<u32>,
    /// The most targets one fault of an experiment may hit [default: 1].
    #[arg(long, env = "TROUPE_FAULT_MAX_TARGETS")]
    pub fault_max_targets: Option<usize>,
    /// The longest an experiment's faults may stay armed [default: 300000].
    #[arg(long, env = "TROUPE_FAULT_MAX_DURATION_MS")]
    pub fault_max_duration_ms: Option<u64>,
    /// Environment variables an llm agent may name as its key (apiKeyEnv); repeatable
    /// (comma-separated in TROUPE_SECRET_ENV). TROUPE_* variables never qualify [default: none].
    #[arg(long, env = "TROUPE_SECRET_ENV", value_delimiter = ',')]
    pub secret_env: Vec<String>,
    /// Directories whose files an llm agent may name as its key (apiKeyFile); repeatable
    /// (comma-separated in TROUPE_SECRET_DIRS). Nothing under the data dir qualifies
    /// [default: none].
    #[arg(long, env = "TROUPE_SECRET_DIRS", value_delimiter = ',')]
    pub secret_dirs: Vec<PathBuf>,
    /// What a model's tokens cost: `MODEL=INPUT/OUTPUT` in US dollars per million tokens,
    /// e.g. `gpt-4o=2.5/10`; repeatable (comma-separated in TROUPE_LLM_PRICES). A model not
    /// listed costs nothing, so a cost budget never stops it [default: none].
    #[arg(long, env = "TROUPE_LLM_PRICES", value_delimiter = ',')]
    pub llm_prices: Vec<String>,
    /// Days an LLM task's transcript (its steps and approvals) is kept once the task ended,
    /// and each day's usage rows (folded into one row per agent, swarm and project, so
    /// budgets and spend still count them); 0 keeps everything [default: 30].
    #[arg(long, env = "TROUPE_LLM_RETENTION_DAYS")]
    pub llm_retention_days: Option<u64>,
    /// The delays between a failed alert delivery's attempts, in ms, comma-separated; past
    /// the last, the delivery has failed [default: 1000,5000,30000,120000,300000,600000].
    #[arg(long, env = "TROUPE_ALERT_RETRY_MS")]
    pub alert_retry_ms: Option<String>,
    /// Inbound webhooks, `[[hooks]]` tables (file only; see docs/alerts.md).
    #[arg(skip)]
    pub hooks: Vec<outside::HookFile>,
    /// Where alerts go, `[[alert_channels]]` tables (file only).
    #[arg(skip)]
    pub alert_channels: Vec<outside::ChannelFile>,
    /// Which events alert, `[[alert_rules]]` tables (file only).
    #[arg(skip)]
    pub alert_rules: Vec<outside::RuleFile>,
}

/// Fills every unset option of `$args` from `$file`.
macro_rules! fill {
    ($args:ident, $file:ident; $($field:ident),* $(,)?) => {
        $( if $args.$field.is_none() { $args.$field = $file.$field.take(); } )*
    };
}

/// The files of mutual TLS between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// A resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub node_name: String,
    pub cluster_listen: SocketAddr,
    /// Where the Raft lane listens (port 0: one the system picks).
    pub raft_listen: SocketAddr,
    /// The host name peers reach this node by, when not its cluster address's IP.
    pub advertise_host: Option<String>,
    pub join: Vec<String>,
    /// How long a joining node waits to be admitted before it stops.
    pub join_timeout: Duration,
    pub voters: usize,
    /// This node's labels (placement of agents moved off a lost node).
    pub node_labels: std::collections::BTreeMap<String, String>,
    pub cookie_file: Option<PathBuf>,
    /// Mutual TLS between nodes: this node's certificate chain, key and the cluster's CA.
    pub tls: Option<TlsFiles>,
    pub log_format: LogFormat,
    pub shutdown_grace: Duration,
    pub supervisor_max_restarts: u32,
    pub supervisor_window: Duration,
    pub supervisor_backoff: Duration,
    pub agent_max_restarts: u32,
    pub agent_restart_window: Duration,
    pub agent_stop_grace: Duration,
    pub agent_checkpoints_kept: usize,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub max_payload_bytes: usize,
    pub body_limit_bytes: usize,
    pub event_retention: u64,
    pub store_cache_mb: usize,
    pub raft_snapshot_every: u64,
    pub raft_snapshot_every_mb: u64,
    pub idempotency_window: Duration,
    pub metrics_auth: bool,
    pub http_timeout: Duration,
    pub history_interval: Duration,
    pub http_max_in_flight: usize,
    pub ws_max_connections: usize,
    pub ws_max_subscriptions: usize,
    pub ws_init_timeout: Duration,
    pub ws_keepalive: Duration,
    pub default_strategy: String,
    pub agent_mailbox_size: usize,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    pub max_open_tasks: usize,
    pub simulated_hosts: usize,
    pub vm_reconcile: Duration,
    pub host_down_after: Duration,
    pub peer_drop_after: Duration,
    pub max_outbound_migrations: usize,
    pub vm_stop_timeout: Duration,
    pub libvirt_timeout: Duration,
    pub fault_injection: bool,
    pub fault_max_targets: usize,
    pub fault_max_duration: Duration,
    pub agent_watchdog: Duration,
    pub agent_watchdog_misses: u32,
    /// The watchdog's deadline of each kind of actor it watches (agents have their own).
    pub watchdog: std::collections::BTreeMap<String, Duration>,
    pub watchdog_misses: u32,
    /// What agents may use as API keys (see `ServeArgs::secret_env`, `secret_dirs`).
    pub secret_env: Vec<String>,
    pub secret_dirs: Vec<PathBuf>,
    /// US dollars per million input and output tokens, by model.
    pub llm_prices: std::collections::BTreeMap<String, Price>,
    /// How long LLM transcripts and daily usage rows are kept (`None`: for ever).
    pub llm_retention: Option<Duration>,
    /// Inbound webhooks (`POST /hooks/<name>`).
    pub hooks: Vec<outside::Hook>,
    /// Alert channels and rules.
    pub alerts: outside::Alerts,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// The kinds the watchdog watches by default, each with 30 s.
pub const WATCHED_KINDS: [&str; 6] = ["SUPERVISOR", "SWARM", "SERVICE", "SWARM_COORDINATOR", "HOST", "VM"];

/// The watchdog's deadlines: the defaults, overridden by `KIND=MS` pairs (0: not watched).
fn watchdog_deadlines(pairs: Option<&str>) -> Result<std::collections::BTreeMap<String, Duration>, ConfigError> {
    let mut deadlines: std::collections::BTreeMap<String, Duration> = WATCHED_KINDS
        .iter()
        .map(|k| (k.to_string(), Duration::from_secs(30)))
        .collect();
    for pair in pairs
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let parsed = pair
            .split_once('=')
            .and_then(|(kind, ms)| Some((kind.trim().to_ascii_uppercase(), ms.trim().parse::<u64>().ok()?)));
        // A kind it does not watch would be silently unused: a typo is refused.
        let Some((kind, ms)) = parsed.filter(|(kind, _)| WATCHED_KINDS.contains(&kind.as_str())) else {
            return Err(ConfigError::Invalid {
                key: "watchdog_ms",
                message: format!(
                    "{pair:?} is not KIND=MS (agents have agent_watchdog_ms); kinds: {}",
                    WATCHED_KINDS.join(", ")
                ),
            });
        };
        if ms == 0 {
            deadlines.remove(&kind);
        } else {
            deadlines.insert(kind, Duration::from_millis(ms));
        }
    }
    Ok(deadlines)
}

impl Config {
    /// Resolves flags and environment (already in `args`) over the file over the defaults.
    pub fn load(mut args: ServeArgs) -> Result<Self, ConfigError> {
        if let Some(path) = args.config.clone() {
            let mut file = read_file(&path)?;
            fill!(args, file; data_dir, listen, node_name, cluster_listen, raft_listen, advertise_host, join_timeout_ms, voters, cookie_file, tls_cert, tls_key, tls_ca, log_format,
                shutdown_grace_ms, supervisor_max_restarts, supervisor_window_ms, supervisor_backoff_ms,
                agent_max_restarts, agent_restart_window_ms, agent_stop_grace_ms,
                agent_checkpoints_kept, retry_base_ms, retry_max_ms,
                max_payload_bytes, body_limit_bytes, event_retention, store_cache_mb, raft_snapshot_every, raft_snapshot_every_mb, idempotency_window_ms,
                metrics_auth, http_timeout_ms, history_interval_ms, http_max_in_flight, ws_max_connections,
                ws_max_subscriptions, ws_init_timeout_ms, ws_keepalive_ms, default_strategy, agent_mailbox_size, breaker_failures, breaker_cooldown_ms, max_open_tasks, simulated_hosts,
                vm_reconcile_ms, host_down_after_ms, peer_drop_after_ms, max_outbound_migrations, vm_stop_timeout_ms,
                libvirt_timeout_ms, fault_injection, fault_max_targets, fault_max_duration_ms, agent_watchdog_ms, agent_watchdog_misses,
                watchdog_ms, watchdog_misses, alert_retry_ms, llm_retention_days);
            args.hooks = file.hooks;
            args.alert_channels = file.alert_channels;
            args.alert_rules = file.alert_rules;
            if args.join.is_empty() {
                args.join = file.join;
            }
            if args.node_labels.is_empty() {
                args.node_labels = file.node_labels;
            }
            if args.secret_env.is_empty() {
                args.secret_env = file.secret_env;
            }
            if args.secret_dirs.is_empty() {
                args.secret_dirs = file.secret_dirs;
            }
            if args.llm_prices.is_empty() {
                args.llm_prices = file.llm_prices;
            }
        }
        let ms = Duration::from_millis;
        let node_name = match args.node_name {
            Some(n) => n,
            None => hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "troupe".into()),
        };
        validate::node_name(&node_name)?;
        let mut node_labels = std::collections::BTreeMap::new();
        for label in &args.node_labels {
            match label.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    node_labels.insert(k.trim().to_owned(), v.trim().to_owned());
                }
                _ => {
                    return Err(ConfigError::Invalid {
                        key: "node_labels",
                        message: format!("{label:?} is not key=value"),
                    })
                }
            }
        }
        let tls = match (args.tls_cert, args.tls_key, args.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(TlsFiles { cert, key, ca }),
            (None, None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    key: "tls_cert",
                    message: "tls_cert, tls_key and tls_ca go together: set all three or none".into(),
                })
            }
        };
        let cluster_listen = args
            .cluster_listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 4697)));
        let advertise_host = validate::advertised(args.advertise_host)?;
        validate::reachable(cluster_listen, advertise_host.as_deref())?;
        let config = Self {
            data_dir: args.data_dir.unwrap_or_else(|| PathBuf::from("./troupe-data")),
            listen: args.listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            node_name,
            cluster_listen,
            raft_listen: args
                .raft_listen
                .unwrap_or_else(|| SocketAddr::new(cluster_listen.ip(), 0)),
            advertise_host,
            join: validate::join(args.join)?,
            join_timeout: ms(args.join_timeout_ms.unwrap_or(120_000)),
            voters: args.voters.unwrap_or(3),
            node_labels,
            cookie_file: args.cookie_file,
            tls,
            log_format: args.log_format.unwrap_or_default(),
            shutdown_grace: ms(args.shutdown_grace_ms.unwrap_or(10_000)),
            supervisor_max_restarts: args.supervisor_max_restarts.unwrap_or(5),
            supervisor_window: ms(args.supervisor_window_ms.unwrap_or(10_000)),
            supervisor_backoff: ms(args.supervisor_backoff_ms.unwrap_or(100)),
            agent_max_restarts: args.agent_max_restarts.unwrap_or(5),
            agent_restart_window: ms(args.agent_restart_window_ms.unwrap_or(10_000)),
            agent_stop_grace: ms(args.agent_stop_grace_ms.unwrap_or(10_000)),
            agent_checkpoints_kept: args.agent_checkpoints_kept.unwrap_or(5),
            retry_base: ms(args.retry_base_ms.unwrap_or(500)),
            retry_max: ms(args.retry_max_ms.unwrap_or(30_000)),
            max_payload_bytes: args.max_payload_bytes.unwrap_or(256 * 1024),
            body_limit_bytes: args.body_limit_bytes.unwrap_or(1024 * 1024),
            event_retention: args.event_retention.unwrap_or(1_000_000),
            store_cache_mb: args.store_cache_mb.unwrap_or(128),
            raft_snapshot_every: args.raft_snapshot_every.unwrap_or(20_000),
            raft_snapshot_every_mb: args
                .raft_snapshot_every_mb
                .unwrap_or(crate::store::raft::SNAPSHOT_EVERY_BYTES >> 20),
            idempotency_window: ms(args.idempotency_window_ms.unwrap_or(86_400_000)),
            metrics_auth: args.metrics_auth.unwrap_or(false),
            http_timeout: ms(args.http_timeout_ms.unwrap_or(30_000)),
            history_interval: ms(args.history_interval_ms.unwrap_or(10_000)),
            http_max_in_flight: args.http_max_in_flight.unwrap_or(512),
            ws_max_connections: args.ws_max_connections.unwrap_or(4096),
            ws_max_subscriptions: args.ws_max_subscriptions.unwrap_or(64),
            ws_init_timeout: ms(args.ws_init_timeout_ms.unwrap_or(10_000)),
            ws_keepalive: ms(args.ws_keepalive_ms.unwrap_or(15_000)),
            default_strategy: args.default_strategy.unwrap_or_else(|| "score".into()),
            agent_mailbox_size: args.agent_mailbox_size.unwrap_or(256),
            breaker_failures: args.breaker_failures.unwrap_or(5),
            breaker_cooldown: ms(args.breaker_cooldown_ms.unwrap_or(30_000)),
            max_open_tasks: args.max_open_tasks.unwrap_or(200_000),
            simulated_hosts: args.simulated_hosts.unwrap_or(3),
            vm_reconcile: ms(args.vm_reconcile_ms.unwrap_or(1_000)),
            host_down_after: ms(args.host_down_after_ms.unwrap_or(30_000)),
            peer_drop_after: ms(args.peer_drop_after_ms.unwrap_or(60_000)),
            max_outbound_migrations: args.max_outbound_migrations.unwrap_or(2),
            vm_stop_timeout: ms(args.vm_stop_timeout_ms.unwrap_or(30_000)),
            libvirt_timeout: ms(args.libvirt_timeout_ms.unwrap_or(15_000)),
            fault_injection: args.fault_injection.unwrap_or(false),
            fault_max_targets: args.fault_max_targets.unwrap_or(1),
            fault_max_duration: ms(args.fault_max_duration_ms.unwrap_or(300_000)),
            agent_watchdog: ms(args.agent_watchdog_ms.unwrap_or(30_000)),
            agent_watchdog_misses: args.agent_watchdog_misses.unwrap_or(2),
            watchdog: watchdog_deadlines(args.watchdog_ms.as_deref())?,
            watchdog_misses: args.watchdog_misses.unwrap_or(2),
            secret_env: args.secret_env,
            secret_dirs: args.secret_dirs,
            llm_prices: prices::parse(&args.llm_prices)?,
            llm_retention: match args.llm_retention_days.unwrap_or(30) {
                0 => None,
                days => Some(Duration::from_secs(days.saturating_mul(86_400))),
            },
            hooks: outside::hooks(args.hooks)?,
            alerts: outside::Alerts {
                retry_delays: outside::retry_delays(args.alert_retry_ms.as_deref())?,
                ..outside::alerts(args.alert_channels, args.alert_rules)?
            },
        };
        config.validate()?;
        Ok(config)
    }

    /// Defaults for an embedded node in `data_dir` (tests, benches).
    pub fn embedded(data_dir: &Path) -> Self {
        let mut c = Self::load(ServeArgs {
            data_dir: Some(data_dir.to_path_buf()),
            node_name: Some("embedded".into()),
            ..ServeArgs::default()
        })
        .expect("the defaults are valid");
        c.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        c
    }

    pub fn store_path(&self) -> PathBuf {
        Self::store_path_in(&self.data_dir)
    }

    /// Where a node keeps its store in the data dir `data_dir`.
    pub fn store_path_in(data_dir: &Path) -> PathBuf {
        data_dir.join("troupe.redb")
    }
}

fn read_file(path: &Path) -> Result<ServeArgs, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

pub mod outside;
mod prices;
mod validate;

pub use prices::{usd, Price};

#[cfg(test)]
mod tests;

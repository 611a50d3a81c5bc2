//! Node configuration: command-line flags, `TROUPE_*` environment variables and a TOML file,
//! in that order of precedence, over built-in defaults.

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

/// `troupe serve` flags. Every one can also come from the environment or the config file.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML file with any of these settings (keys use underscores: data_dir, join = [...]).
    #[arg(long, env = "TROUPE_CONFIG")]
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
    /// A peer's cluster address to join; repeatable (comma-separated in TROUPE_JOIN).
    #[arg(long, env = "TROUPE_JOIN", value_delimiter = ',')]
    pub join: Vec<String>,
    /// File holding the cluster cookie [default: $TROUPE_COOKIE, else <data-dir>/cookie].
    #[arg(long, env = "TROUPE_COOKIE_FILE")]
    pub cookie_file: Option<PathBuf>,
    #[arg(long, env = "TROUPE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// How long running tasks may take to finish on SIGINT/SIGTERM [default: 10000].
    #[arg(long, env = "TROUPE_SHUTDOWN_GRACE_MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// Restarts a supervisor makes within the window before it escalates [default: 5].
    #[arg(long, env = "TROUPE_SUPERVISOR_MAX_RESTARTS")]
    pub supervisor_max_restarts: Option<u32>,
    /// The restart-intensity window [default: 10000].
    #[arg(long, env = "TROUPE_SUPERVISOR_WINDOW_MS")]
    pub supervisor_window_ms: Option<u64>,
    /// First restart delay, doubled per restart within the window [default: 100].
    #[arg(long, env = "TROUPE_SUPERVISOR_BACKOFF_MS")]
    pub supervisor_backoff_ms: Option<u64>,
    /// First task retry delay, doubled per attempt [default: 500].
    #[arg(long, env = "TROUPE_RETRY_BASE_MS")]
    pub retry_base_ms: Option<u64>,
    /// Longest task retry delay [default: 30000].
    #[arg(long, env = "TROUPE_RETRY_MAX_MS")]
    pub retry_max_ms: Option<u64>,
    /// Largest task payload, as JSON text [default: 262144].
    #[arg(long, env = "TROUPE_MAX_PAYLOAD_BYTES")]
    pub max_payload_bytes: Option<usize>,
    /// Largest HTTP request body [default: 1048576].
    #[arg(long, env = "TROUPE_BODY_LIMIT_BYTES")]
    pub body_limit_bytes: Option<usize>,
    /// How many of the newest events the log keeps; 0 keeps all [default: 1000000].
    #[arg(long, env = "TROUPE_EVENT_RETENTION")]
    pub event_retention: Option<u64>,
}

/// The same settings as read from the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    node_name: Option<String>,
    cluster_listen: Option<SocketAddr>,
    #[serde(default)]
    join: Vec<String>,
    cookie_file: Option<PathBuf>,
    log_format: Option<LogFormat>,
    shutdown_grace_ms: Option<u64>,
    supervisor_max_restarts: Option<u32>,
    supervisor_window_ms: Option<u64>,
    supervisor_backoff_ms: Option<u64>,
    retry_base_ms: Option<u64>,
    retry_max_ms: Option<u64>,
    max_payload_bytes: Option<usize>,
    body_limit_bytes: Option<usize>,
    event_retention: Option<u64>,
}

/// A resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub node_name: String,
    pub cluster_listen: SocketAddr,
    pub join: Vec<String>,
    pub cookie_file: Option<PathBuf>,
    pub log_format: LogFormat,
    pub shutdown_grace: Duration,
    pub supervisor_max_restarts: u32,
    pub supervisor_window: Duration,
    pub supervisor_backoff: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub max_payload_bytes: usize,
    pub body_limit_bytes: usize,
    pub event_retention: u64,
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

impl Config {
    /// Resolves flags and environment (already in `args`) over the file over the defaults.
    pub fn load(args: ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let ms = Duration::from_millis;
        let node_name = match args.node_name.or(file.node_name) {
            Some(n) => n,
            None => hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "troupe".into()),
        };
        validate_node_name(&node_name)?;
        let config = Self {
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./troupe-data")),
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            node_name,
            cluster_listen: args
                .cluster_listen
                .or(file.cluster_listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 4697))),
            join: if args.join.is_empty() { file.join } else { args.join },
            cookie_file: args.cookie_file.or(file.cookie_file),
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            shutdown_grace: ms(args.shutdown_grace_ms.or(file.shutdown_grace_ms).unwrap_or(10_000)),
            supervisor_max_restarts: args
                .supervisor_max_restarts
                .or(file.supervisor_max_restarts)
                .unwrap_or(5),
            supervisor_window: ms(args
                .supervisor_window_ms
                .or(file.supervisor_window_ms)
                .unwrap_or(10_000)),
            supervisor_backoff: ms(args.supervisor_backoff_ms.or(file.supervisor_backoff_ms).unwrap_or(100)),
            retry_base: ms(args.retry_base_ms.or(file.retry_base_ms).unwrap_or(500)),
            retry_max: ms(args.retry_max_ms.or(file.retry_max_ms).unwrap_or(30_000)),
            max_payload_bytes: args.max_payload_bytes.or(file.max_payload_bytes).unwrap_or(256 * 1024),
            body_limit_bytes: args.body_limit_bytes.or(file.body_limit_bytes).unwrap_or(1024 * 1024),
            event_retention: args.event_retention.or(file.event_retention).unwrap_or(1_000_000),
        };
        if config.supervisor_window.is_zero() {
            return Err(ConfigError::Invalid {
                key: "supervisor_window_ms",
                message: "must be above 0".into(),
            });
        }
        if config.max_payload_bytes >= config.body_limit_bytes {
            return Err(ConfigError::Invalid {
                key: "max_payload_bytes",
                message: "must be below body_limit_bytes".into(),
            });
        }
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
        self.data_dir.join("troupe.redb")
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn validate_node_name(name: &str) -> Result<(), ConfigError> {
    let ok =
        !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            key: "node_name",
            message: format!("{name:?}: use 1-64 letters, digits, '-', '_' or '.'"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(
            &path,
            "node_name = \"from-file\"\nretry_base_ms = 7\njoin = [\"10.0.0.1:4697\"]\n",
        )
        .unwrap();
        let c = Config::load(ServeArgs {
            config: Some(path),
            node_name: Some("from-flag".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.node_name, "from-flag");
        assert_eq!(c.retry_base, Duration::from_millis(7));
        assert_eq!(c.join, vec!["10.0.0.1:4697".to_string()]);
        assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
    }

    #[test]
    fn the_example_config_in_deploy_parses_with_every_key() {
        let text = include_str!("../../deploy/troupe.toml");
        let file: FileConfig = toml::from_str(text).expect("deploy/troupe.toml is valid");
        assert_eq!(file.event_retention, Some(1_000_000));
        assert_eq!(file.body_limit_bytes, Some(1024 * 1024));
    }

    #[test]
    fn unknown_keys_and_bad_names_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "listne = \"127.0.0.1:1\"\n").unwrap();
        let err = Config::load(ServeArgs {
            config: Some(path),
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        let err = Config::load(ServeArgs {
            node_name: Some("bad name".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { key: "node_name", .. }), "{err}");
    }
}

//! What a configuration may hold: each value checked once flags, environment, file and
//! defaults are resolved, so a node never starts with a setting it cannot honour.

use super::{Config, ConfigError};

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.into(),
            })
        };
        let positive = [
            ("supervisor_window_ms", self.supervisor_window),
            ("agent_restart_window_ms", self.agent_restart_window),
            ("idempotency_window_ms", self.idempotency_window),
            ("http_timeout_ms", self.http_timeout),
            ("history_interval_ms", self.history_interval),
            ("ws_init_timeout_ms", self.ws_init_timeout),
            ("ws_keepalive_ms", self.ws_keepalive),
            ("vm_reconcile_ms", self.vm_reconcile),
            ("host_down_after_ms", self.host_down_after),
            ("peer_drop_after_ms", self.peer_drop_after),
            ("libvirt_timeout_ms", self.libvirt_timeout),
            ("join_timeout_ms", self.join_timeout),
            ("fault_max_duration_ms", self.fault_max_duration),
            ("agent_watchdog_ms", self.agent_watchdog),
        ];
        for (key, value) in positive {
            if value.is_zero() {
                return invalid(key, "must be above 0");
            }
        }
        if self.voters == 0 {
            return invalid("voters", "must be above 0");
        }
        let counts = [
            ("agent_checkpoints_kept", self.agent_checkpoints_kept),
            ("http_max_in_flight", self.http_max_in_flight),
            ("ws_max_connections", self.ws_max_connections),
            ("ws_max_subscriptions", self.ws_max_subscriptions),
            ("max_outbound_migrations", self.max_outbound_migrations),
            ("max_open_tasks", self.max_open_tasks),
            ("agent_mailbox_size", self.agent_mailbox_size),
            ("breaker_failures", self.breaker_failures as usize),
            ("fault_max_targets", self.fault_max_targets),
            ("agent_watchdog_misses", self.agent_watchdog_misses as usize),
            ("watchdog_misses", self.watchdog_misses as usize),
        ];
        for (key, value) in counts {
            if value == 0 {
                return invalid(key, "must be above 0");
            }
        }
        if !["score", "round_robin", "least_connections", "weighted"].contains(&self.default_strategy.as_str()) {
            return invalid(
                "default_strategy",
                "one of score, round_robin, least_connections, weighted",
            );
        }
        for name in &self.secret_env {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return invalid("secret_env", "names must be non-empty, without '=' or NUL");
            }
            if name.to_ascii_uppercase().starts_with("TROUPE_") {
                return invalid(
                    "secret_env",
                    "TROUPE_* variables are the node's own, never an agent's key",
                );
            }
        }
        if self.secret_dirs.iter().any(|d| d.as_os_str().is_empty()) {
            return invalid("secret_dirs", "a directory must not be empty");
        }
        if self.max_payload_bytes >= self.body_limit_bytes {
            return invalid("max_payload_bytes", "must be below body_limit_bytes");
        }
        // What one request carries ends in one log entry, with room for the records a write
        // adds beside it (the payload in the task's record and in its event).
        if self.body_limit_bytes > crate::store::MAX_BATCH_BYTES / 2 {
            return invalid(
                "body_limit_bytes",
                "must be at most 4194304 (4 MiB): half a log entry's limit",
            );
        }
        if self.store_cache_mb == 0 {
            return invalid("store_cache_mb", "must be at least 1");
        }
        if self.raft_snapshot_every_mb == 0 {
            return invalid("raft_snapshot_every_mb", "must be at least 1");
        }
        if self.raft_snapshot_every < 20 {
            return invalid(
                "raft_snapshot_every",
                "must be at least 20: a snapshot copies every table",
            );
        }
        Ok(())
    }
}

pub(super) fn node_name(name: &str) -> Result<(), ConfigError> {
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

/// `--advertise-host`, checked: a host name or an address, without a port.
pub(super) fn advertised(host: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(host) = host.map(|h| h.trim().to_owned()) else {
        return Ok(None);
    };
    let name = host.trim_start_matches('[').trim_end_matches(']');
    if !host_ok(name) {
        return Err(ConfigError::Invalid {
            key: "advertise_host",
            message: format!("{host:?} is not a host name or an IP address (give it without a port)"),
        });
    }
    Ok(Some(name.to_owned()))
}

/// `--cluster-listen` on every interface (0.0.0.0, ::) needs `--advertise-host`: the
/// cluster address a node records for the others to dial is its listen address, and one
/// on every interface is no address to dial (a peer on another machine dialled itself).
pub(super) fn reachable(cluster_listen: std::net::SocketAddr, advertised: Option<&str>) -> Result<(), ConfigError> {
    if cluster_listen.ip().is_unspecified() && advertised.is_none() {
        return Err(ConfigError::Invalid {
            key: "cluster_listen",
            message: format!(
                "{cluster_listen} listens on every interface, and the others dial a node at its cluster \
                 address: give --advertise-host (advertise_host) with the host name or IP address they \
                 reach this node by, or listen on that address"
            ),
        });
    }
    Ok(())
}

/// Whether `name` is an IP address or a host name.
fn host_ok(name: &str) -> bool {
    name.parse::<std::net::IpAddr>().is_ok()
        || (!name.is_empty()
            && name.len() <= 253
            && name
                .split('.')
                .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')))
}

/// `--join`: each a member's cluster address, `HOST:PORT` (an IPv6 address in brackets).
/// A node told to join `127.0.0.1` or `127.0.0.1:abc` waited two minutes, dialling nothing.
pub(super) fn join(addresses: Vec<String>) -> Result<Vec<String>, ConfigError> {
    addresses
        .into_iter()
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty())
        .map(|address| {
            let parsed = address.rsplit_once(':').and_then(|(host, port)| {
                let bracketed = host.starts_with('[') && host.ends_with(']');
                let name = host.trim_start_matches('[').trim_end_matches(']');
                let fits = host_ok(name) && (bracketed || !name.contains(':'));
                (fits && port.parse::<u16>().is_ok_and(|p| p > 0)).then_some(())
            });
            match parsed {
                Some(()) => Ok(address),
                None => Err(ConfigError::Invalid {
                    key: "join",
                    message: format!(
                        "{address:?} is not HOST:PORT: give a member's cluster address (its --cluster-listen, \
                         4697 unless set), e.g. 127.0.0.1:4697 or [::1]:4697"
                    ),
                }),
            }
        })
        .collect()
}

//! What the config file says about the world outside the cluster: inbound webhooks
//! (`[[hooks]]`, each turning a signed request into a task) and alerts (`[[alert_channels]]`
//! that reach people, `[[alert_rules]]` that choose which events go to which channels). Only
//! the file sets them (they are tables, not flags); each is checked, and its secret read, when
//! the node starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[[hooks]]`: `POST /hooks/<name>` makes a task (for `capability`) or a swarm task (for
/// `swarm`) from a request signed by GitHub (`github_secret_file`) or carrying a bearer
/// token (`bearer_token_file`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HookFile {
    pub name: String,
    pub github_secret_file: Option<PathBuf>,
    pub bearer_token_file: Option<PathBuf>,
    /// GitHub event names (`X-GitHub-Event`) taken; empty takes every one but `ping`.
    pub events: Vec<String>,
    /// JSON Pointer → value the body must hold there, else the request is answered 204.
    #[serde(rename = "match")]
    pub matches: BTreeMap<String, serde_json::Value>,
    pub capability: Option<String>,
    pub swarm: Option<String>,
    /// The task's payload: field → JSON Pointer into the body; empty: the whole body.
    pub payload: BTreeMap<String, String>,
    /// The header whose value makes the idempotency key [default: X-GitHub-Delivery].
    pub idempotency_header: Option<String>,
    /// Largest body taken [default: 26214400, GitHub's 25 MB].
    pub max_body_bytes: Option<usize>,
}

/// How a hook's caller proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum HookAuth {
    /// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
    GitHub(Vec<u8>),
    /// `Authorization: Bearer <token>`.
    Bearer(Vec<u8>),
}

impl std::fmt::Debug for HookAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::GitHub(_) => "GitHub(…)",
            Self::Bearer(_) => "Bearer(…)",
        })
    }
}

/// What a hook makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookTarget {
    Capability(String),
    /// A swarm, by id or name.
    Swarm(String),
}

/// A checked `[[hooks]]` entry.
#[derive(Debug, Clone)]
pub struct Hook {
    pub name: String,
    pub auth: HookAuth,
    pub events: Vec<String>,
    pub matches: BTreeMap<String, serde_json::Value>,
    pub target: HookTarget,
    pub payload: BTreeMap<String, String>,
    pub idempotency_header: String,
    pub max_body_bytes: usize,
}

/// `[[alert_channels]]`: where alerts go.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelFile {
    pub name: String,
    /// `webhook`, `slack` or `email`.
    pub kind: String,
    /// webhook, slack: where to POST.
    pub url: Option<String>,
    /// webhook: the signing secret (Standard Webhooks' `webhook-signature` and GitHub-style
    /// `X-Troupe-Signature-256`); without it, requests are not signed.
    pub secret_file: Option<PathBuf>,
    /// email: the SMTP server, `host:port`.
    pub smtp: Option<String>,
    /// email: `none` (plain, for a relay on the same host), `starttls` or `tls` [default:
    /// starttls].
    pub smtp_tls: Option<String>,
    pub smtp_user: Option<String>,
    pub smtp_password_file: Option<PathBuf>,
    pub from: Option<String>,
    pub to: Vec<String>,
    /// A channel made through GraphQL (`setAlertChannel`) carries its secrets themselves,
    /// kept in the replicated store, where the config file names files; never read from a
    /// config file.
    #[serde(skip)]
    pub secret: Option<Vec<u8>>,
    #[serde(skip)]
    pub smtp_password: Option<String>,
}

/// Where a channel delivers.
#[derive(Clone, PartialEq, Eq)]
pub enum ChannelKind {
    Webhook { url: String, secret: Option<Vec<u8>> },
    Slack { url: String },
    Email(Smtp),
}

/// An email channel's server and envelope.
#[derive(Clone, PartialEq, Eq)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    /// `none`, `starttls` or `tls`.
    pub tls: String,
    pub credentials: Option<(String, String)>,
    pub from: String,
    pub to: Vec<String>,
}

impl std::fmt::Debug for ChannelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Webhook { url, secret } => write!(f, "Webhook({url}, signed: {})", secret.is_some()),
            Self::Slack { .. } => f.write_str("Slack(…)"),
            Self::Email(s) => write!(f, "Email({}:{} → {:?})", s.host, s.port, s.to),
        }
    }
}

impl ChannelKind {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Webhook { .. } => "webhook",
            Self::Slack { .. } => "slack",
            Self::Email(_) => "email",
        }
    }
}

/// A checked `[[alert_channels]]` entry.
#[derive(Debug, Clone)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
}

/// `[[alert_rules]]`: which events alert, and where (also how `setAlertRule` keeps one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleFile {
    pub name: String,
    /// Event kinds; a trailing `*` takes a prefix (`AGENT_*`). Empty: every kind at or above
    /// `severity`.
    pub kinds: Vec<String>,
    /// Labels the event's agent must have (`team = "ml"`).
    pub labels: BTreeMap<String, String>,
    /// The least severity taken: `info`, `warning` or `critical` [default: warning].
    pub severity: Option<String>,
    pub channels: Vec<String>,
    /// Repeats of one alert (same rule, same subject) within this window are folded into one
    /// notification with their count, sent when it ends [default: 60000].
    pub group_interval_ms: Option<u64>,
}

/// A checked `[[alert_rules]]` entry.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub kinds: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub severity: Severity,
    pub channels: Vec<String>,
    pub group_interval: Duration,
}

/// How much an event needs a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "info" => Some(Self::Info),
            "warning" => Some(Self::Warning),
            "critical" => Some(Self::Critical),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// The alerting part of a configuration.
#[derive(Debug, Clone, Default)]
pub struct Alerts {
    pub channels: Vec<Channel>,
    pub rules: Vec<Rule>,
    /// The delays between a delivery's attempts; past the last, it has failed.
    pub retry_delays: Vec<Duration>,
}

/// The default retry schedule of a delivery: 7 attempts over about 13 minutes.
pub const RETRY_DELAYS_MS: [u64; 6] = [1_000, 5_000, 30_000, 120_000, 300_000, 600_000];

fn invalid(key: &'static str, message: String) -> ConfigError {
    ConfigError::Invalid { key, message }
}

/// A secret file's contents, trimmed of surrounding white space; never empty.
fn secret(key: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let text = std::fs::read(path).map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
    let trimmed = String::from_utf8_lossy(&text).trim().as_bytes().to_vec();
    if trimmed.is_empty() {
        return Err(invalid(key, format!("{} is empty", path.display())));
    }
    Ok(trimmed)
}

fn plain_name(key: &'static str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(invalid(key, format!("name {name:?}: 1-64 letters, digits, - or _")))
    }
}

pub(super) fn hooks(files: Vec<HookFile>) -> Result<Vec<Hook>, ConfigError> {
    let mut hooks: Vec<Hook> = Vec::with_capacity(files.len());
    for h in files {
        plain_name("hooks", &h.name)?;
        if hooks.iter().any(|o| o.name == h.name) {
            return Err(invalid("hooks", format!("two hooks are named {:?}", h.name)));
        }
        let auth = match (&h.github_secret_file, &h.bearer_token_file) {
            (Some(p), None) => HookAuth::GitHub(secret("hooks", p)?),
            (None, Some(p)) => HookAuth::Bearer(secret("hooks", p)?),
            _ => {
                return Err(invalid(
                    "hooks",
                    format!("hook {:?}: give one of github_secret_file or bearer_token_file", h.name),
                ))
            }
        };
        let target = match (h.capability, h.swarm) {
            (Some(c), None) if !c.is_empty() => HookTarget::Capability(c),
            (None, Some(s)) if !s.is_empty() => HookTarget::Swarm(s),
            _ => {
                return Err(invalid(
                    "hooks",
                    format!("hook {:?}: give one of capability or swarm", h.name),
                ))
            }
        };
        let pointers = h.matches.keys().chain(h.payload.values());
        if let Some(bad) = pointers.into_iter().find(|p| !p.is_empty() && !p.starts_with('/')) {
            return Err(invalid(
                "hooks",
                format!("hook {:?}: {bad:?} is not a JSON Pointer (it starts with /)", h.name),
            ));
        }
        if h.max_body_bytes == Some(0) {
            return Err(invalid(
                "hooks",
                format!("hook {:?}: max_body_bytes 0 would refuse every request", h.name),
            ));
        }
        hooks.push(Hook {
            name: h.name,
            auth,
            events: h.events,
            matches: h.matches,
            target,
            payload: h.payload,
            idempotency_header: h.idempotency_header.unwrap_or_else(|| "X-GitHub-Delivery".into()),
            max_body_bytes: h.max_body_bytes.unwrap_or(25 * 1024 * 1024),
        });
    }
    Ok(hooks)
}

pub(super) fn alerts(channels: Vec<ChannelFile>, rules: Vec<RuleFile>) -> Result<Alerts, ConfigError> {
    let mut checked: Vec<Channel> = Vec::with_capacity(channels.len());
    for c in channels {
        if checked.iter().any(|o| o.name == c.name) {
            return Err(invalid(
                "alert_channels",
                format!("two channels are named {:?}", c.name),
            ));
        }
        let channel = channel(c)?;
        checked.push(channel);
    }
    let mut kept: Vec<Rule> = Vec::with_capacity(rules.len());
    for r in rules {
        if kept.iter().any(|o| o.name == r.name) {
            return Err(invalid("alert_rules", format!("two rules are named {:?}", r.name)));
        }
        kept.push(rule(r, &checked)?);
    }
    Ok(Alerts {
        channels: checked,
        rules: kept,
        retry_delays: RETRY_DELAYS_MS.iter().map(|ms| Duration::from_millis(*ms)).collect(),
    })
}

/// One channel, checked: its kind's fields, and its secrets read (from the files the config
/// names, or carried inline by one made through GraphQL).
pub fn channel(c: ChannelFile) -> Result<Channel, ConfigError> {
    plain_name("alert_channels", &c.name)?;
    let url = |c: &ChannelFile| match &c.url {
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => Ok(u.clone()),
        _ => Err(invalid(
            "alert_channels",
            format!("channel {:?}: url must be an http:// or https:// address", c.name),
        )),
    };
    let kind = match c.kind.as_str() {
        "webhook" => ChannelKind::Webhook {
            url: url(&c)?,
            secret: match (&c.secret, &c.secret_file) {
                (Some(inline), _) => Some(inline.clone()),
                (None, Some(p)) => Some(secret("alert_channels", p)?),
                (None, None) => None,
            },
        },
        "slack" => ChannelKind::Slack { url: url(&c)? },
        "email" => {
            let server = c.smtp.clone().unwrap_or_default();
            let (host, port) = server
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
                .ok_or_else(|| {
                    invalid(
                        "alert_channels",
                        format!("channel {:?}: smtp must be host:port", c.name),
                    )
                })?;
            let tls = c.smtp_tls.clone().unwrap_or_else(|| "starttls".into());
            if !["none", "starttls", "tls"].contains(&tls.as_str()) {
                return Err(invalid(
                    "alert_channels",
                    format!("channel {:?}: smtp_tls is one of none, starttls, tls", c.name),
                ));
            }
            let credentials = match (&c.smtp_user, &c.smtp_password, &c.smtp_password_file) {
                (Some(u), Some(p), _) => Some((u.clone(), p.clone())),
                (Some(u), None, Some(p)) => Some((
                    u.clone(),
                    String::from_utf8_lossy(&secret("alert_channels", p)?).into_owned(),
                )),
                (None, None, None) => None,
                _ => {
                    return Err(invalid(
                        "alert_channels",
                        format!("channel {:?}: smtp_user and smtp_password_file go together", c.name),
                    ))
                }
            };
            let from = c.from.clone().filter(|f| f.contains('@')).ok_or_else(|| {
                invalid(
                    "alert_channels",
                    format!("channel {:?}: from must be an address", c.name),
                )
            })?;
            if c.to.is_empty() || c.to.iter().any(|t| !t.contains('@')) {
                return Err(invalid(
                    "alert_channels",
                    format!("channel {:?}: to must list at least one address", c.name),
                ));
            }
            ChannelKind::Email(Smtp {
                host,
                port,
                tls,
                credentials,
                from,
                to: c.to.clone(),
            })
        }
        other => {
            return Err(invalid(
                "alert_channels",
                format!(
                    "channel {:?}: kind {other:?} is not one of webhook, slack, email",
                    c.name
                ),
            ))
        }
    };
    Ok(Channel { name: c.name, kind })
}

/// A rule checked against the channels it may name.
pub fn rule(r: RuleFile, channels: &[Channel]) -> Result<Rule, ConfigError> {
    plain_name("alert_rules", &r.name)?;
    if r.channels.is_empty() {
        return Err(invalid("alert_rules", format!("rule {:?} names no channel", r.name)));
    }
    if let Some(unknown) = r.channels.iter().find(|c| !channels.iter().any(|k| &k.name == *c)) {
        return Err(invalid(
            "alert_rules",
            format!("rule {:?}: no channel is named {unknown:?}", r.name),
        ));
    }
    let severity = match r.severity.as_deref() {
        None => Severity::Warning,
        Some(s) => Severity::parse(s).ok_or_else(|| {
            invalid(
                "alert_rules",
                format!("rule {:?}: severity is one of info, warning, critical", r.name),
            )
        })?,
    };
    let group_interval = Duration::from_millis(r.group_interval_ms.unwrap_or(60_000));
    if group_interval.is_zero() {
        return Err(invalid(
            "alert_rules",
            format!("rule {:?}: group_interval_ms must be above 0", r.name),
        ));
    }
    Ok(Rule {
        name: r.name,
        kinds: r.kinds,
        labels: r.labels,
        severity,
        channels: r.channels,
        group_interval,
    })
}

/// `--alert-retry-ms`: the delays between a delivery's attempts.
pub(super) fn retry_delays(list: Option<&str>) -> Result<Vec<Duration>, ConfigError> {
    let Some(list) = list else {
        return Ok(RETRY_DELAYS_MS.iter().map(|ms| Duration::from_millis(*ms)).collect());
    };
    list.split(',')
        .map(|ms| {
            ms.trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| ConfigError::Invalid {
                    key: "alert_retry_ms",
                    message: format!("{ms:?} is not a number of milliseconds"),
                })
        })
        .collect()
}

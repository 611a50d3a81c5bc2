//! Alerts that reach people: the config's rules (`[[alert_rules]]`) choose events, and each
//! notice goes to the rule's channels (`[[alert_channels]]`: a signed webhook, Slack, email).
//!
//! ```text
//!  applied events ─▶ (the leader only) Grouper: first at once, repeats folded with a count
//!        │                 │ notice ─▶ one Delivery per channel, PENDING, in the store
//!        │                 ▼          (with the cursor: a new leader goes on after it)
//!        │           attempt ─ok─▶ DELIVERED
//!        │             └─fail─▶ retried after alert_retry_ms ─ past the last ─▶ FAILED
//!        │                                                   + ALERT_DELIVERY_FAILED
//!  new leader ─▶ resumes every PENDING delivery, under the same id
//! ```
//!
//! Every member applies every event, so only the Raft leader notifies; a delivery keeps its
//! id (Standard Webhooks' `webhook-id`) across attempts and failover, so a receiver can drop
//! a repeat. A delivery is at least once: one in flight when its leader dies is sent again.
//! The groups that fire are taken up again by the next leader (or by this node once it
//! starts again) from their newest deliveries, so an alert that fired before a stop or a
//! failover is resolved by its resolving event after it; what a group had folded but not yet
//! sent is lost with the leader, and a group whose deliveries were all pruned (the newest
//! 1,000 are kept) is not taken up.

pub mod channels;
mod made;
pub use made::ApiChannel;
pub mod rules;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::task::JoinSet;
use troupe_runtime::config::outside::{Alerts, Severity};
use troupe_runtime::events::{self, Event, EventFilter, NewEvent};
use troupe_runtime::store::{Batch, Store, StoreError, Table};

use rules::{Grouper, Notice, Restored, Status, Subject};

/// Alert deliveries by id (a UUIDv7, so in the order they were made): [`Delivery`].
pub const ALERT_DELIVERIES: Table = Table::new("alert_deliveries");
/// The notifier's own state: `cursor`, the last event it has taken into account.
pub const ALERT_STATE: Table = Table::new("alert_state");
/// Rules made through GraphQL (`setAlertRule`), by name: [`RuleFile`].
pub const ALERT_RULES: Table = Table::new("alert_rules");
/// Channels made through GraphQL (`setAlertChannel`), by name: [`ApiChannel`].
pub const ALERT_CHANNELS: Table = Table::new("alert_channels");
/// The kind of a test notice (`sendTestAlert`), which belongs to no group that fires.
const TEST_KIND: &str = "ALERT_TEST";
/// The events that change the rules in force; the notifier takes them up as it sees them.
const RULE_CHANGES: [&str; 2] = ["ALERT_RULE_SET", "ALERT_RULE_DELETED"];

/// Deliveries kept; the oldest ended ones go first.
const KEPT: usize = 1_000;
/// Deliveries attempted at once; more wait their turn.
const AT_ONCE: usize = 32;
/// How often the cursor is written when events came that made no notice.
const CURSOR_EVERY: Duration = Duration::from_secs(5);

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Pending,
    Delivered,
    Failed,
}

/// One notice to one channel, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    pub rule: String,
    pub channel: String,
    pub group: String,
    pub status: Status,
    pub outcome: Outcome,
    pub kind: String,
    pub severity: String,
    pub subject: Option<String>,
    pub subject_name: Option<String>,
    /// The notice as a sentence, names first.
    pub summary: String,
    #[serde(with = "troupe_runtime::codec::json_text")]
    pub data: serde_json::Value,
    /// Events this notice stands for.
    pub count: u64,
    /// The seq and time of the event it is about.
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub starts_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The kind the alert fired with (see [`Notice::fired_as`]); `kind` is the event the
    /// notice is about, for a resolved one the event that ended it. `None` in deliveries
    /// kept by an earlier release, where it was `kind`.
    #[serde(default)]
    pub fired_as: Option<String>,
}

impl Delivery {
    /// The kind the alert fired with: its labels' `kind`, the same from firing to resolved.
    pub fn alert_kind(&self) -> &str {
        self.fired_as.as_deref().unwrap_or(&self.kind)
    }
}

/// The node's alerting: its channels and rules, and the client deliveries go out with.
#[derive(Clone)]
pub struct Alerting {
    store: Store,
    config: Arc<Alerts>,
    http: reqwest::Client,
}

impl Alerting {
    pub fn new(store: Store, config: Alerts) -> Self {
        Self {
            store,
            config: Arc::new(config),
            http: crate::agent::http_client(),
        }
    }

    /// Up to `first` deliveries, newest first; with `outcome`, only those.
    pub async fn deliveries(&self, outcome: Option<Outcome>, first: usize) -> Result<Vec<Delivery>, StoreError> {
        let all = self.store.scan(ALERT_DELIVERIES, None, usize::MAX, |_| true).await?;
        let mut out = Vec::new();
        for (_, bytes) in all.into_iter().rev() {
            let d: Delivery = troupe_runtime::codec::decode(&bytes)?;
            if outcome.is_none_or(|o| o == d.outcome) {
                out.push(d);
                if out.len() == first {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Sends a test notice through `channel` now, once, and records how it went.
    pub async fn test(&self, channel: &str) -> Result<Delivery, crate::ApiError> {
        let channels = self.channels().await?;
        let Some(c) = channels.iter().find(|c| c.name == channel) else {
            return Err(crate::ApiError::NotFound(format!("alert channel {channel:?}")));
        };
        let now = Utc::now();
        let notice = Notice {
            rule: "test".into(),
            channels: vec![c.name.clone()],
            group: format!("test/{}", c.name),
            status: Status::Firing,
            kind: TEST_KIND.into(),
            fired_as: TEST_KIND.into(),
            subject: None,
            subject_name: None,
            data: json!({ "test": true }),
            severity: Severity::Info,
            count: 1,
            starts_at: now,
            at: now,
            seq: 0,
        };
        let mut d = delivery(&notice, &c.name, now);
        d.summary = format!("A test of the alert channel {} ({})", c.name, c.kind.name());
        d.attempts = 1;
        match channels::send(&self.http, &c.kind, &d).await {
            Ok(()) => {
                d.outcome = Outcome::Delivered;
                d.delivered_at = Some(Utc::now());
            }
            Err(f) => {
                d.outcome = Outcome::Failed;
                d.last_error = Some(f.message);
            }
        }
        self.store.write(put(&d)?).await?;
        Ok(d)
    }

    /// What an event's subject is called, and an agent's labels, from the store.
    async fn subject(&self, event: &Event) -> Subject {
        match crate::names::subject_of(&self.store, event).await {
            Some(named) => Subject {
                name: Some(named.phrase()),
                labels: named.labels,
            },
            None => Subject::default(),
        }
    }
}

/// A notice as a sentence: the subject by name, what happened, and why.
pub fn summary(n: &Notice) -> String {
    let who = n.subject_name.clone().or_else(|| n.subject.clone());
    let s = crate::names::sentence(&n.kind, who.as_deref(), &n.data);
    match n.status {
        Status::Resolved => format!("Resolved: {s}"),
        Status::Firing if n.count > 1 => format!(
            "{s} ({} times more since {})",
            n.count,
            n.starts_at.format("%H:%M:%S UTC")
        ),
        Status::Firing => s,
    }
}

fn delivery(n: &Notice, channel: &str, now: DateTime<Utc>) -> Delivery {
    Delivery {
        id: uuid::Uuid::now_v7().to_string(),
        rule: n.rule.clone(),
        channel: channel.to_owned(),
        group: n.group.clone(),
        status: n.status,
        outcome: Outcome::Pending,
        kind: n.kind.clone(),
        severity: n.severity.as_str().to_owned(),
        subject: n.subject.clone(),
        subject_name: n.subject_name.clone(),
        summary: summary(n),
        data: n.data.clone(),
        count: n.count,
        seq: n.seq,
        at: n.at,
        starts_at: n.starts_at,
        created_at: now,
        attempts: 0,
        last_error: None,
        next_attempt_at: None,
        delivered_at: None,
        fired_as: Some(n.fired_as.clone()),
    }
}

fn put(d: &Delivery) -> Result<Batch, StoreError> {
    Ok(Batch::new().put(ALERT_DELIVERIES, d.id.clone(), troupe_runtime::codec::encode(d)?))
}

/// The notifier, a chore of every node: it notifies while its node leads the log.
pub(crate) async fn run(alerting: Alerting) {
    // Who leads, changed only when the leader, the vote or the membership does (the whole
    // metrics change with every entry, and woke this chore on each).
    let mut metrics = alerting.store.raft().server_metrics();
    loop {
        // Read and released at once: the Raft core waits while the value is borrowed.
        let leads = {
            let m = metrics.borrow_and_update();
            m.current_leader == Some(m.id)
        };
        if leads {
            let mut watch = metrics.clone();
            let lost = async move {
                loop {
                    if watch.changed().await.is_err() {
                        return;
                    }
                    let m = watch.borrow_and_update();
                    if m.current_leader != Some(m.id) {
                        return;
                    }
                }
            };
            tokio::select! {
                led = lead(&alerting) => {
                    match led {
                        Ok(()) => {}
                        // The node stops with no majority up: nothing it would note is kept.
                        Err(StoreError::Alone) => return futures::future::pending().await,
                        Err(e) if waits_for_the_cluster(&e) => {
                            tracing::info!(error = %e, "the alert notifier waits for the cluster to commit again; it tries again in a second");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "the alert notifier stopped; it starts again in a second");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
                () = lost => tracing::info!("this node no longer leads: another member notifies"),
            }
        }
        if metrics.changed().await.is_err() {
            return futures::future::pending().await;
        }
    }
}

/// Whether the notifier stopped because the cluster cannot commit now (no majority answers
/// this leader, or it no longer leads): it waits as every writer does, and nothing is wrong
/// with it, so it is said at INFO (a freeze of the followers made a WARN of it each time).
fn waits_for_the_cluster(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(_) | StoreError::NotLeader { .. })
}

/// Notifies until an error; every delivery it started stops with it (the next leader, or
/// this node's next turn, resumes those still pending).
async fn lead(a: &Alerting) -> Result<(), StoreError> {
    let store = &a.store;
    let slots = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
    let mut sends = JoinSet::new();
    // Each group's newest notice, in the order they were made: those still firing are taken
    // up again, so their resolving event is told as it would have been without the stop.
    let mut newest = std::collections::HashMap::new();
    for (_, bytes) in store.scan(ALERT_DELIVERIES, None, usize::MAX, |_| true).await? {
        let d: Delivery = troupe_runtime::codec::decode(&bytes)?;
        if d.kind != TEST_KIND {
            let restored = Restored {
                group: d.group.clone(),
                rule: d.rule.clone(),
                kind: d.alert_kind().to_owned(),
                severity: Severity::parse(&d.severity).unwrap_or(Severity::Info),
                subject_name: d.subject_name.clone(),
                starts_at: d.starts_at,
            };
            newest.insert(d.group.clone(), (d.status, restored));
        }
        if d.outcome == Outcome::Pending {
            sends.spawn(attempt(a.clone(), d, slots.clone()));
        }
    }
    let mut cursor = match store.get(ALERT_STATE, "cursor").await? {
        Some(bytes) => troupe_runtime::codec::decode::<u64>(&bytes)?,
        None => store.last_seq().await?,
    };
    let mut written = cursor;
    let mut made_since_prune = 0usize;
    let mut grouper = Grouper::new(a.rules().await?);
    for (status, restored) in newest.values() {
        if *status == Status::Firing {
            grouper.restore(restored);
        }
    }
    let stream = events::subscribe(store, cursor, EventFilter::default());
    tokio::pin!(stream);
    let mut tick = tokio::time::interval(CURSOR_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let until_due = grouper
            .next_due()
            .map(|due| (due - Utc::now()).to_std().unwrap_or_default())
            .unwrap_or(Duration::from_secs(3600));
        let notices = tokio::select! {
            next = stream.next() => match next {
                Some(Ok(event)) => {
                    cursor = event.seq;
                    if RULE_CHANGES.contains(&event.kind.as_str()) {
                        grouper.set_rules(a.rules().await?);
                    }
                    let subject = if grouper.wants(&event) { a.subject(&event).await } else { Subject::default() };
                    grouper.on_event(&event, &subject, Utc::now())
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
            () = tokio::time::sleep(until_due) => grouper.due(Utc::now()),
            _ = tick.tick() => {
                if cursor != written {
                    store.write(cursor_at(cursor)?).await?;
                    written = cursor;
                }
                if made_since_prune >= 100 {
                    made_since_prune = 0;
                    prune(store).await?;
                }
                Vec::new()
            }
            Some(_) = sends.join_next() => Vec::new(),
        };
        if notices.is_empty() {
            continue;
        }
        let now = Utc::now();
        let mut batch = cursor_at(cursor)?;
        let mut made = Vec::new();
        let channels = a.channels().await?;
        for n in &notices {
            for channel in &n.channels {
                // Email and Slack are told of firing alerts only, as Alertmanager does.
                let resolved_too = channels.iter().any(|c| {
                    &c.name == channel && matches!(c.kind, troupe_runtime::config::outside::ChannelKind::Webhook { .. })
                });
                if n.status == Status::Resolved && !resolved_too {
                    continue;
                }
                let d = delivery(n, channel, now);
                batch.extend(put(&d)?);
                made.push(d);
            }
        }
        store.write(batch).await?;
        written = cursor;
        made_since_prune += made.len();
        for d in made {
            sends.spawn(attempt(a.clone(), d, slots.clone()));
        }
    }
}

fn cursor_at(seq: u64) -> Result<Batch, StoreError> {
    Ok(Batch::new().put(ALERT_STATE, "cursor", troupe_runtime::codec::encode(&seq)?))
}

/// Keeps the newest [`KEPT`] deliveries (a pending one is never dropped).
async fn prune(store: &Store) -> Result<(), StoreError> {
    let all = store.scan(ALERT_DELIVERIES, None, usize::MAX, |_| true).await?;
    let excess = all.len().saturating_sub(KEPT);
    let mut batch = Batch::new();
    for (key, bytes) in all.into_iter().take(excess) {
        let d: Delivery = troupe_runtime::codec::decode(&bytes)?;
        if d.outcome != Outcome::Pending {
            batch = batch.delete(ALERT_DELIVERIES, key);
        }
    }
    if !batch.is_empty() {
        store.write(batch).await?;
    }
    Ok(())
}

/// Attempts `d` until it is delivered or has failed for good, recording each attempt.
async fn attempt(a: Alerting, mut d: Delivery, slots: Arc<tokio::sync::Semaphore>) {
    loop {
        if let Some(at) = d.next_attempt_at {
            if let Ok(wait) = (at - Utc::now()).to_std() {
                tokio::time::sleep(wait).await;
            }
        }
        let Ok(_slot) = slots.acquire().await else { return };
        d.attempts += 1;
        let sent = match a.channels().await {
            Ok(all) => match all.iter().find(|c| c.name == d.channel) {
                Some(c) => channels::send(&a.http, &c.kind, &d).await,
                None => Err(channels::Failed {
                    message: format!("no channel is named {:?} any more", d.channel),
                    permanent: true,
                    retry_after: None,
                }),
            },
            Err(e) => Err(channels::Failed {
                message: format!("the channels could not be read: {e}"),
                permanent: false,
                retry_after: None,
            }),
        };
        let mut batch = match sent {
            Ok(()) => {
                let now = Utc::now();
                d.outcome = Outcome::Delivered;
                d.delivered_at = Some(now);
                d.next_attempt_at = None;
                metrics::counter!("troupe_alert_deliveries_total", "channel" => d.channel.clone(), "outcome" => "delivered").increment(1);
                if let Ok(latency) = (now - d.at).to_std() {
                    metrics::histogram!("troupe_alert_delivery_seconds").record(latency.as_secs_f64());
                }
                None
            }
            Err(failed) => {
                tracing::warn!(delivery = %d.id, channel = %d.channel, attempt = d.attempts, error = %failed.message, "an alert delivery failed");
                d.last_error = Some(failed.message);
                let delay = (!failed.permanent)
                    .then(|| a.config.retry_delays.get(d.attempts as usize - 1).copied())
                    .flatten()
                    .map(|base| base.max(failed.retry_after.unwrap_or_default()));
                match delay {
                    Some(delay) => {
                        d.next_attempt_at = Some(Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default());
                        None
                    }
                    None => {
                        d.outcome = Outcome::Failed;
                        d.next_attempt_at = None;
                        metrics::counter!("troupe_alert_deliveries_total", "channel" => d.channel.clone(), "outcome" => "failed").increment(1);
                        // A delivery about alerting's own events (a rule may name them) that
                        // fails makes no event of its own: a rule on ALERT_DELIVERY_FAILED
                        // whose channel refuses would otherwise feed itself without end.
                        if d.kind.starts_with("ALERT_") {
                            tracing::warn!(delivery = %d.id, channel = %d.channel, kind = %d.kind,
                                "an alert about alerting itself was not delivered; no event is made of it");
                            None
                        } else {
                            let data = json!({ "channel": d.channel, "rule": d.rule, "attempts": d.attempts,
                                               "error": d.last_error, "summary": d.summary });
                            Some(NewEvent::new("ALERT_DELIVERY_FAILED", Some(d.id.clone()), data))
                        }
                    }
                }
            }
        }
        .map_or_else(Batch::new, |e| Batch::new().event(e));
        match put(&d) {
            Ok(p) => batch.extend(p),
            Err(e) => {
                tracing::error!(error = %e, "an alert delivery could not be encoded");
                return;
            }
        }
        if let Err(e) = a.store.write(batch).await {
            tracing::warn!(delivery = %d.id, error = %e, "could not record an alert delivery's attempt");
            return;
        }
        if d.outcome != Outcome::Pending {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_kept_by_an_earlier_release_without_fired_as_still_reads() {
        let notice = Notice {
            rule: "r".into(),
            channels: vec!["ops".into()],
            group: "r/a".into(),
            status: Status::Firing,
            kind: "AGENT_FAILED".into(),
            fired_as: "AGENT_FAILED".into(),
            subject: Some("a".into()),
            subject_name: None,
            data: json!({}),
            severity: Severity::Warning,
            count: 1,
            starts_at: Utc::now(),
            at: Utc::now(),
            seq: 1,
        };
        let mut d = delivery(&notice, "ops", Utc::now());
        d.fired_as = None;
        // The same record as an earlier release wrote it: its fields, without the last one.
        let mut bytes = troupe_runtime::codec::encode(&d).unwrap();
        assert_eq!(
            (bytes[0], bytes.last()),
            (0xdc, Some(&0xc0)),
            "an array16 ending in nil"
        );
        let fields = u16::from_be_bytes([bytes[1], bytes[2]]) - 1;
        bytes[1..3].copy_from_slice(&fields.to_be_bytes());
        bytes.pop();
        let read: Delivery = troupe_runtime::codec::decode(&bytes).unwrap();
        assert_eq!((read.alert_kind(), read.fired_as.as_deref()), ("AGENT_FAILED", None));
    }

    #[test]
    fn a_cluster_that_cannot_commit_makes_the_notifier_wait_not_fail() {
        assert!(waits_for_the_cluster(&StoreError::Unavailable(
            "no majority within 5s".into()
        )));
        assert!(waits_for_the_cluster(&StoreError::NotLeader { leader: None }));
        assert!(!waits_for_the_cluster(&StoreError::Database("disk full".into())));
        assert!(!waits_for_the_cluster(&StoreError::Encoding("bad".into())));
    }
}

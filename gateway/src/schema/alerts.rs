//! Alerts that reach people: the channels and rules of the config, the deliveries made, and
//! a test send (docs/alerts.md).

use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use troupe_actors::alerts::{rules::Status, Delivery, Outcome};
use troupe_actors::Api;
use troupe_runtime::auth::Role;
use troupe_runtime::config::outside::ChannelKind;

use crate::auth::RoleGuard;
use crate::error::OrGql;
use crate::schema::Int64;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum AlertDeliveryOutcome {
    /// Not delivered yet: attempted again at `nextAttemptAt`.
    Pending,
    Delivered,
    /// Given up on (out of attempts, or refused for good); an ALERT_DELIVERY_FAILED event
    /// says so.
    Failed,
}

impl From<Outcome> for AlertDeliveryOutcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Pending => Self::Pending,
            Outcome::Delivered => Self::Delivered,
            Outcome::Failed => Self::Failed,
        }
    }
}

impl From<AlertDeliveryOutcome> for Outcome {
    fn from(o: AlertDeliveryOutcome) -> Self {
        match o {
            AlertDeliveryOutcome::Pending => Self::Pending,
            AlertDeliveryOutcome::Delivered => Self::Delivered,
            AlertDeliveryOutcome::Failed => Self::Failed,
        }
    }
}

/// One notice to one channel.
#[derive(SimpleObject)]
pub struct AlertDelivery {
    /// Also its `webhook-id` header: the same across attempts and failover.
    pub id: ID,
    pub rule: String,
    pub channel: String,
    /// `<rule>/<subject>`: the alert it belongs to.
    pub group: String,
    /// FIRING or RESOLVED.
    pub status: String,
    pub outcome: AlertDeliveryOutcome,
    pub kind: String,
    pub severity: String,
    pub subject: Option<ID>,
    pub subject_name: Option<String>,
    /// The notice as a sentence, names first.
    pub summary: String,
    /// Events it stands for: 1, or the repeats folded into it.
    pub count: Int64,
    /// The event it is about.
    pub seq: Int64,
    pub at: DateTime<Utc>,
    pub starts_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl From<Delivery> for AlertDelivery {
    fn from(d: Delivery) -> Self {
        Self {
            id: ID(d.id),
            rule: d.rule,
            channel: d.channel,
            group: d.group,
            status: match d.status {
                Status::Firing => "FIRING".into(),
                Status::Resolved => "RESOLVED".into(),
            },
            outcome: d.outcome.into(),
            kind: d.kind,
            severity: d.severity,
            subject: d.subject.map(ID),
            subject_name: d.subject_name,
            summary: d.summary,
            count: Int64(d.count as i64),
            seq: Int64(d.seq as i64),
            at: d.at,
            starts_at: d.starts_at,
            created_at: d.created_at,
            attempts: d.attempts as i32,
            last_error: d.last_error,
            next_attempt_at: d.next_attempt_at,
            delivered_at: d.delivered_at,
        }
    }
}

/// Where alerts go (from the config; secrets are never shown).
#[derive(SimpleObject)]
pub struct AlertChannel {
    pub name: String,
    /// webhook, slack or email.
    pub kind: String,
    /// Where it delivers: a webhook's URL without its query string, Slack's host only (its
    /// URL is the secret), an email channel's recipients.
    pub target: String,
    /// Whether webhook deliveries are signed.
    pub signed: bool,
}

impl AlertChannel {
    fn of(c: &troupe_runtime::config::outside::Channel) -> Self {
        let (target, signed) = match &c.kind {
            // A query string may carry a receiver's token: not shown.
            ChannelKind::Webhook { url, secret } => match url.split_once('?') {
                Some((base, _)) => (format!("{base}?…"), secret.is_some()),
                None => (url.clone(), secret.is_some()),
            },
            ChannelKind::Slack { url } => {
                let host = url.split('/').nth(2).unwrap_or_default();
                (format!("{host} (Slack)"), false)
            }
            ChannelKind::Email(smtp) => (smtp.to.join(", "), false),
        };
        AlertChannel {
            name: c.name.clone(),
            kind: c.kind.name().into(),
            target,
            signed,
        }
    }
}

/// A channel made through the API. Its secrets (`secret`, `smtpPassword`, a Slack URL) are
/// kept in the replicated store and never shown by any query.
#[derive(InputObject)]
pub struct AlertChannelInput {
    pub name: String,
    /// webhook, slack or email.
    pub kind: String,
    /// webhook, slack: where to POST.
    pub url: Option<String>,
    /// webhook: the signing secret (`whsec_<base64>`, or any text); without it requests
    /// are not signed.
    pub secret: Option<String>,
    /// email: the SMTP server, `host:port`.
    pub smtp: Option<String>,
    /// email: none, starttls or tls [default: starttls].
    pub smtp_tls: Option<String>,
    pub smtp_user: Option<String>,
    pub smtp_password: Option<String>,
    pub from: Option<String>,
    #[graphql(default)]
    pub to: Vec<String>,
}

/// Which events alert, and where.
#[derive(SimpleObject)]
pub struct AlertRule {
    pub name: String,
    /// Event kinds (`AGENT_*` takes a prefix); empty: every kind at or above `severity`.
    pub kinds: Vec<String>,
    /// `key=value` labels the event's agent must have.
    pub labels: Vec<String>,
    pub severity: String,
    pub channels: Vec<String>,
    pub group_interval_ms: Int64,
    /// CONFIG (the node's config file: changed there) or API (`setAlertRule`).
    pub source: String,
}

impl AlertRule {
    fn of(r: &troupe_runtime::config::outside::Rule, source: &str) -> Self {
        Self {
            name: r.name.clone(),
            kinds: r.kinds.clone(),
            labels: r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            severity: r.severity.as_str().into(),
            channels: r.channels.clone(),
            group_interval_ms: Int64(r.group_interval.as_millis() as i64),
            source: source.into(),
        }
    }
}

/// A rule made through the API; the channels are the config's.
#[derive(InputObject)]
pub struct AlertRuleInput {
    /// 1-64 letters, digits, - or _; not a config rule's name.
    pub name: String,
    /// Event kinds; `AGENT_*` takes a prefix; none: every kind at or above `severity`.
    #[graphql(default)]
    pub kinds: Vec<String>,
    /// `key=value` labels the event's agent must have.
    #[graphql(default)]
    pub labels: Vec<String>,
    /// info, warning or critical [default: warning].
    pub severity: Option<String>,
    pub channels: Vec<String>,
    /// [default: 60000]
    pub group_interval_ms: Option<Int64>,
}

#[derive(Default)]
pub struct AlertsQuery;

#[Object]
impl AlertsQuery {
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn alert_channels(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<AlertChannel>> {
        let api = ctx.data::<Api>()?;
        let channels = api
            .alerting()
            .channels()
            .await
            .map_err(troupe_actors::ApiError::from)
            .gql()?;
        Ok(channels.iter().map(AlertChannel::of).collect())
    }

    /// The rules in force: the config file's, then those made through the API.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn alert_rules(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<AlertRule>> {
        let alerting = ctx.data::<Api>()?.alerting();
        let mut out: Vec<AlertRule> = alerting
            .config_rules()
            .iter()
            .map(|r| AlertRule::of(r, "CONFIG"))
            .collect();
        let made = alerting
            .api_rules()
            .await
            .map_err(troupe_actors::ApiError::from)
            .gql()?;
        out.extend(made.iter().map(|r| AlertRule::of(r, "API")));
        Ok(out)
    }

    /// The newest deliveries first (the store keeps the last 1,000); with `outcome`, only
    /// those (FAILED: the alerts that did not reach anyone).
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn alert_deliveries(
        &self,
        ctx: &Context<'_>,
        outcome: Option<AlertDeliveryOutcome>,
        #[graphql(default = 50, validator(minimum = 1, maximum = 500))] first: i32,
    ) -> async_graphql::Result<Vec<AlertDelivery>> {
        let api = ctx.data::<Api>()?;
        let found = api
            .alerting()
            .deliveries(outcome.map(Into::into), first as usize)
            .await
            .map_err(troupe_actors::ApiError::from)
            .gql()?;
        Ok(found.into_iter().map(Into::into).collect())
    }
}

#[derive(Default)]
pub struct AlertsMutation;

#[Object]
impl AlertsMutation {
    /// Makes or replaces an alert rule; the notifier takes it up at once. A config rule's
    /// name is CONFLICT, an unknown channel or severity INVALID_INPUT.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn set_alert_rule(&self, ctx: &Context<'_>, input: AlertRuleInput) -> async_graphql::Result<AlertRule> {
        let mut labels = std::collections::BTreeMap::new();
        for l in input.labels {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| troupe_actors::ApiError::invalid(format!("label {l:?} is not key=value")))
                .gql()?;
            labels.insert(k.trim().to_owned(), v.trim().to_owned());
        }
        let file = troupe_runtime::config::outside::RuleFile {
            name: input.name,
            kinds: input.kinds,
            labels,
            severity: input.severity,
            channels: input.channels,
            group_interval_ms: input
                .group_interval_ms
                .map(|ms| ms.non_negative("groupIntervalMs"))
                .transpose()?,
        };
        let rule = ctx.data::<Api>()?.alerting().set_rule(file).await.gql()?;
        Ok(AlertRule::of(&rule, "API"))
    }

    /// Makes or replaces an alert channel; rules may name it at once. A config channel's
    /// name is CONFLICT, a bad kind, URL or address INVALID_INPUT.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn set_alert_channel(
        &self,
        ctx: &Context<'_>,
        input: AlertChannelInput,
    ) -> async_graphql::Result<AlertChannel> {
        let stored = troupe_actors::alerts::ApiChannel {
            name: input.name,
            kind: input.kind,
            url: input.url,
            secret: input.secret,
            smtp: input.smtp,
            smtp_tls: input.smtp_tls,
            smtp_user: input.smtp_user,
            smtp_password: input.smtp_password,
            from: input.from,
            to: input.to,
        };
        let channel = ctx.data::<Api>()?.alerting().set_channel(stored).await.gql()?;
        Ok(AlertChannel::of(&channel))
    }

    /// Deletes a channel made through the API; whether there was one. One a rule names is
    /// CONFLICT.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn delete_alert_channel(&self, ctx: &Context<'_>, name: String) -> async_graphql::Result<bool> {
        ctx.data::<Api>()?.alerting().delete_channel(&name).await.gql()
    }

    /// Deletes a rule made through the API; whether there was one.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn delete_alert_rule(&self, ctx: &Context<'_>, name: String) -> async_graphql::Result<bool> {
        ctx.data::<Api>()?.alerting().delete_rule(&name).await.gql()
    }

    /// Sends a test notice through the channel now, once; answers how it went (recorded
    /// among the deliveries).
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn send_test_alert(&self, ctx: &Context<'_>, channel: String) -> async_graphql::Result<AlertDelivery> {
        let api = ctx.data::<Api>()?;
        Ok(api.alerting().test(&channel).await.gql()?.into())
    }
}

//! What an admin makes through GraphQL beside the config file: alert rules and channels,
//! kept in the replicated store (so every member has them), checked as the config's are.

use serde::{Deserialize, Serialize};
use serde_json::json;
use troupe_runtime::config::outside::{Channel, Rule, RuleFile};
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{Batch, StoreError};

use super::{Alerting, ALERT_CHANNELS, ALERT_RULES};

/// A channel made through GraphQL, as the replicated store keeps it: with its secrets, which
/// no query shows (every member's data dir holds them, as it holds the node's admin token).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiChannel {
    pub name: String,
    /// `webhook`, `slack` or `email`.
    pub kind: String,
    pub url: Option<String>,
    /// webhook: the signing secret (`whsec_<base64>` or plain text).
    pub secret: Option<String>,
    pub smtp: Option<String>,
    pub smtp_tls: Option<String>,
    pub smtp_user: Option<String>,
    pub smtp_password: Option<String>,
    pub from: Option<String>,
    pub to: Vec<String>,
}

impl ApiChannel {
    fn checked(&self) -> Result<Channel, troupe_runtime::config::ConfigError> {
        troupe_runtime::config::outside::channel(troupe_runtime::config::outside::ChannelFile {
            name: self.name.clone(),
            kind: self.kind.clone(),
            url: self.url.clone(),
            secret: self.secret.as_ref().map(|s| s.trim().as_bytes().to_vec()),
            smtp: self.smtp.clone(),
            smtp_tls: self.smtp_tls.clone(),
            smtp_user: self.smtp_user.clone(),
            smtp_password: self.smtp_password.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            ..Default::default()
        })
    }
}

impl Alerting {
    /// Every channel: the config's, then those made through GraphQL.
    pub async fn channels(&self) -> Result<Vec<Channel>, StoreError> {
        let mut all = self.config.channels.clone();
        for (_, bytes) in self.store.scan(ALERT_CHANNELS, None, usize::MAX, |_| true).await? {
            let stored: ApiChannel = troupe_runtime::codec::decode(&bytes)?;
            match stored.checked() {
                Ok(c) => all.push(c),
                Err(e) => {
                    tracing::warn!(channel = %stored.name, error = %e, "an alert channel set through the API no longer holds")
                }
            }
        }
        Ok(all)
    }

    /// Makes or replaces a channel (not one of the config's); the notifier sends through it
    /// from its next notice. Its secrets are kept, never shown.
    pub async fn set_channel(&self, channel: ApiChannel) -> Result<Channel, crate::ApiError> {
        if self.config.channels.iter().any(|c| c.name == channel.name) {
            return Err(crate::ApiError::Conflict(format!(
                "the channel {:?} is the config file's: change it there",
                channel.name
            )));
        }
        let checked = channel.checked().map_err(config_error)?;
        let data = json!({ "channel": checked.name, "kind": checked.kind.name() });
        let batch = Batch::new()
            .put(
                ALERT_CHANNELS,
                channel.name.clone(),
                troupe_runtime::codec::encode(&channel)?,
            )
            .event(NewEvent::new("ALERT_CHANNEL_SET", Some(channel.name.clone()), data));
        self.store.write(batch).await?;
        Ok(checked)
    }

    /// Deletes a channel made through GraphQL; whether there was one. One a rule still names
    /// is CONFLICT: delete or change the rule first.
    pub async fn delete_channel(&self, name: &str) -> Result<bool, crate::ApiError> {
        if self.config.channels.iter().any(|c| c.name == name) {
            return Err(crate::ApiError::Conflict(format!(
                "the channel {name:?} is the config file's: remove it there"
            )));
        }
        if self.store.get(ALERT_CHANNELS, name).await?.is_none() {
            return Ok(false);
        }
        let naming: Vec<String> = self
            .rules()
            .await?
            .into_iter()
            .filter(|r| r.channels.iter().any(|c| c == name))
            .map(|r| r.name)
            .collect();
        if !naming.is_empty() {
            return Err(crate::ApiError::Conflict(format!(
                "the channel {name:?} is named by the rule(s) {}: change them first",
                naming.join(", ")
            )));
        }
        let batch = Batch::new().delete(ALERT_CHANNELS, name).event(NewEvent::new(
            "ALERT_CHANNEL_DELETED",
            Some(name.to_owned()),
            json!({ "channel": name }),
        ));
        self.store.write(batch).await?;
        Ok(true)
    }

    /// The config's rules.
    pub fn config_rules(&self) -> &[Rule] {
        &self.config.rules
    }

    /// The rules made through GraphQL, by name.
    pub async fn api_rules(&self) -> Result<Vec<Rule>, StoreError> {
        let mut out = Vec::new();
        let channels = self.channels().await?;
        for (_, bytes) in self.store.scan(ALERT_RULES, None, usize::MAX, |_| true).await? {
            let file: RuleFile = troupe_runtime::codec::decode(&bytes)?;
            // Checked when set; a channel since removed from the config drops the rule.
            match troupe_runtime::config::outside::rule(file.clone(), &channels) {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(rule = %file.name, error = %e, "an alert rule set through the API no longer holds")
                }
            }
        }
        Ok(out)
    }

    /// Every rule in force: the config's, then those made through GraphQL.
    pub async fn rules(&self) -> Result<Vec<Rule>, StoreError> {
        let mut all = self.config.rules.clone();
        all.extend(self.api_rules().await?);
        Ok(all)
    }

    /// Makes or replaces a rule (not one of the config's), checked against the channels.
    pub async fn set_rule(&self, file: RuleFile) -> Result<Rule, crate::ApiError> {
        if self.config.rules.iter().any(|r| r.name == file.name) {
            return Err(crate::ApiError::Conflict(format!(
                "the rule {:?} is the config file's: change it there",
                file.name
            )));
        }
        let channels = self.channels().await?;
        let rule = troupe_runtime::config::outside::rule(file.clone(), &channels).map_err(config_error)?;
        let data = json!({ "rule": rule.name, "kinds": rule.kinds, "severity": rule.severity.as_str(), "channels": rule.channels });
        let batch = Batch::new()
            .put(ALERT_RULES, file.name.clone(), troupe_runtime::codec::encode(&file)?)
            .event(NewEvent::new("ALERT_RULE_SET", Some(file.name.clone()), data));
        self.store.write(batch).await?;
        Ok(rule)
    }

    /// Deletes a rule made through GraphQL; whether there was one.
    pub async fn delete_rule(&self, name: &str) -> Result<bool, crate::ApiError> {
        if self.config.rules.iter().any(|r| r.name == name) {
            return Err(crate::ApiError::Conflict(format!(
                "the rule {name:?} is the config file's: remove it there"
            )));
        }
        if self.store.get(ALERT_RULES, name).await?.is_none() {
            return Ok(false);
        }
        let batch = Batch::new().delete(ALERT_RULES, name).event(NewEvent::new(
            "ALERT_RULE_DELETED",
            Some(name.to_owned()),
            json!({ "rule": name }),
        ));
        self.store.write(batch).await?;
        Ok(true)
    }
}

/// A config check's refusal, as the API says it.
fn config_error(e: troupe_runtime::config::ConfigError) -> crate::ApiError {
    match e {
        troupe_runtime::config::ConfigError::Invalid { message, .. } => crate::ApiError::invalid(message),
        other => crate::ApiError::invalid(other.to_string()),
    }
}

//! Which events alert, and how repeats are folded: the pure part of alerting, driven by the
//! notifier with the time it reads (so its tests set the time).
//!
//! ```text
//!  event ─▶ rule matches (kind, severity, labels)? ─▶ group rule/subject
//!            group quiet ─▶ notice now (count 1), window opens for group_interval
//!            group in window ─▶ folded (count += 1)
//!  window ends ─▶ folded > 0 ─▶ one notice with the count, a new window
//!              └▶ none ─▶ the window closes (the group still fires until resolved)
//!  resolving event (AGENT_HEALTHY after AGENT_UNHEALTHY…) ─▶ a resolved notice; group gone
//!  AGENT_RESTARTED after AGENT_FAILED ─▶ resolved once the group's interval passes with no
//!                                       new failure (a crash loop stays one alert)
//! ```
//!
//! A resolved notice carries the alert's kind and severity as its last firing notice did
//! (Alertmanager's labels stay the same from firing to resolved), and says what ended it.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use troupe_runtime::config::outside::{Rule, Severity};
use troupe_runtime::events::Event;

/// How much an event kind needs a person; kinds not named are `info`.
pub fn severity(kind: &str) -> Severity {
    match kind {
        "AGENT_FAILED"
        | "AGENT_ALERT"
        | "TASK_DEAD"
        | "SERVICE_FAILED"
        | "SUPERVISOR_FAILED"
        | "SUPERVISOR_ESCALATED"
        | "SWARM_FAILED"
        | "HOST_DOWN"
        | "HOST_FAILED"
        | "VM_EVACUATION_FAILED"
        | "MEMBER_DOWN" => Severity::Critical,
        "AGENT_UNHEALTHY"
        | "AGENT_UNRESPONSIVE"
        | "AGENT_BREAKER_OPENED"
        | "SWARM_DEGRADED"
        | "HOST_UNREACHABLE"
        | "VM_DOMAIN_MISSING"
        | "VM_RESTARTED"
        | "MEMBER_SUSPECT"
        | "LEADER_CHANGED"
        | "ALERT_DELIVERY_FAILED" => Severity::Warning,
        _ => Severity::Info,
    }
}

/// How much `event` needs a person: its kind's [`severity`], except an agent's failure that
/// its supervisor is already restarting (`AGENT_FAILED` with `restarting: true`), which is a
/// warning; the failure it gives up on is critical.
pub fn severity_of(event: &Event) -> Severity {
    if event.kind == "AGENT_FAILED" && event.data.get("restarting") == Some(&serde_json::Value::Bool(true)) {
        return Severity::Warning;
    }
    severity(&event.kind)
}

/// The kinds that end an alert of `kind` on the same subject once its group's interval has
/// passed with no new firing event after them: the subject recovered by itself, and a new
/// failure within the interval is a repeat of the same alert (a restart that crashes again
/// would otherwise resolve and fire it anew on every turn of a crash loop).
pub fn resolved_after_quiet(kind: &str) -> &'static [&'static str] {
    match kind {
        "AGENT_FAILED" => &["AGENT_RESTARTED"],
        _ => &[],
    }
}

/// The kinds that end an alert of `kind` on the same subject (events are edges, not levels).
pub fn resolved_by(kind: &str) -> &'static [&'static str] {
    match kind {
        "AGENT_ALERT" | "AGENT_FAILED" => &["AGENT_STARTED", "AGENT_HEALTHY", "AGENT_REMOVED"],
        "AGENT_UNHEALTHY" => &["AGENT_HEALTHY", "AGENT_REMOVED"],
        "AGENT_UNRESPONSIVE" => &["AGENT_RESPONSIVE", "AGENT_REMOVED"],
        "AGENT_BREAKER_OPENED" => &["AGENT_BREAKER_CLOSED", "AGENT_REMOVED"],
        "HOST_DOWN" | "HOST_UNREACHABLE" => &["HOST_UP", "HOST_REMOVED"],
        "MEMBER_DOWN" | "MEMBER_SUSPECT" => &["MEMBER_UP"],
        _ => &[],
    }
}

/// Whether `kind` is one the rule names (`AGENT_*` takes a prefix); a rule naming none
/// takes every kind. Alerting's own failures never alert through a rule that does not name
/// them, so a broken channel cannot feed itself.
fn kind_matches(rule: &Rule, kind: &str) -> bool {
    if rule.kinds.is_empty() {
        return !kind.starts_with("ALERT_");
    }
    rule.kinds.iter().any(|k| match k.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => k == kind,
    })
}

/// What the notifier knows of an event's subject.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Subject {
    /// The entity's kind and name, for people ("agent upper").
    pub name: Option<String>,
    /// An agent's labels.
    pub labels: BTreeMap<String, String>,
}

pub fn matches(rule: &Rule, event: &Event, subject: &Subject) -> bool {
    kind_matches(rule, &event.kind)
        && severity_of(event) >= rule.severity
        && rule.labels.iter().all(|(k, v)| subject.labels.get(k) == Some(v))
}

/// An alert's state in a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Status {
    Firing,
    Resolved,
}

/// One notification to make: to each of the rule's channels.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub rule: String,
    pub channels: Vec<String>,
    pub group: String,
    pub status: Status,
    /// The event the notice is about (the last one folded, for a repeat; for a resolved
    /// notice, the one that ended the alert).
    pub kind: String,
    /// The kind the alert fired with, as its last firing notice said: the notice's own kind
    /// when it fires, the ended alert's when it is resolved.
    pub fired_as: String,
    pub subject: Option<String>,
    pub subject_name: Option<String>,
    pub data: serde_json::Value,
    /// The alert's severity: the event's when it fires, the last firing notice's when it is
    /// resolved.
    pub severity: Severity,
    /// Events this notice stands for: 1 for the first, the folded repeats' count after.
    pub count: u64,
    /// When the alert began firing.
    pub starts_at: DateTime<Utc>,
    /// When the event it is about happened.
    pub at: DateTime<Utc>,
    pub seq: u64,
}

/// A group that fired when the notifier stopped, as its newest delivery says.
pub struct Restored {
    pub group: String,
    pub rule: String,
    pub kind: String,
    pub severity: Severity,
    pub subject_name: Option<String>,
    pub starts_at: DateTime<Utc>,
}

struct Group {
    rule: usize,
    kind: String,
    /// The kind and severity of the last firing notice sent: a resolved notice carries them.
    sent: (String, Severity),
    starts_at: DateTime<Utc>,
    /// What its subject was called when it fired: a resolving event about a subject that is
    /// gone (an agent removed) can no longer be named from the store.
    subject_name: Option<String>,
    /// The end of the window repeats are folded in; `None` when no window is open.
    window_ends: Option<DateTime<Utc>>,
    folded: u64,
    last: Option<Notice>,
    /// A recovery that resolves the alert unless it fails again before then (see
    /// [`resolved_after_quiet`]): when, and the resolved notice it makes.
    resolving: Option<(DateTime<Utc>, Notice)>,
}

/// The rules and the state of each group that fires.
pub struct Grouper {
    rules: Vec<Rule>,
    groups: HashMap<String, Group>,
}

impl Grouper {
    pub fn new(rules: Vec<Rule>) -> Self {
        Self {
            rules,
            groups: HashMap::new(),
        }
    }

    /// Takes the rules now in force; a group whose rule is gone is dropped.
    pub fn set_rules(&mut self, rules: Vec<Rule>) {
        let old = std::mem::replace(&mut self.rules, rules);
        let now = &self.rules;
        self.groups
            .retain(|_, g| match now.iter().position(|r| r.name == old[g.rule].name) {
                Some(i) => {
                    g.rule = i;
                    true
                }
                None => false,
            });
    }

    /// Whether `event` may make a notice: a rule takes its kind and severity, or it may end
    /// a firing group (the subject's labels, read from the store, are only needed then).
    pub fn wants(&self, event: &Event) -> bool {
        self.rules
            .iter()
            .any(|r| kind_matches(r, &event.kind) && severity_of(event) >= r.severity)
            || self.groups.values().any(|g| {
                resolved_by(&g.kind).contains(&event.kind.as_str())
                    || resolved_after_quiet(&g.kind).contains(&event.kind.as_str())
            })
    }

    /// The notices `event` makes now; repeats are folded until their window ends.
    pub fn on_event(&mut self, event: &Event, subject: &Subject, now: DateTime<Utc>) -> Vec<Notice> {
        let mut out = Vec::new();
        let key_of = |rule: &Rule| format!("{}/{}", rule.name, event.subject.as_deref().unwrap_or(&event.kind));
        // A resolving event ends the groups it resolves on the same subject, and fires no
        // alert of its own under those rules (a rule taking `MEMBER_*` would otherwise fire
        // again, and for good, on the `MEMBER_UP` that just ended its `MEMBER_DOWN`).
        let mut ended = Vec::new();
        for rule in &self.rules {
            let key = key_of(rule);
            let ends = self
                .groups
                .get(&key)
                .is_some_and(|g| resolved_by(&g.kind).contains(&event.kind.as_str()));
            if ends {
                let group = self.groups.remove(&key).expect("just seen");
                out.push(self.resolved(&group, &key, event, subject));
                ended.push(key);
                continue;
            }
            let recovers = self
                .groups
                .get(&key)
                .is_some_and(|g| resolved_after_quiet(&g.kind).contains(&event.kind.as_str()));
            if recovers {
                let g = &self.groups[&key];
                let notice = self.resolved(g, &key, event, subject);
                let quiet = chrono::Duration::from_std(rule.group_interval).unwrap_or_default();
                self.groups.get_mut(&key).expect("just seen").resolving = Some((now + quiet, notice));
                ended.push(key);
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if !matches(rule, event, subject) {
                continue;
            }
            let key = key_of(rule);
            if ended.contains(&key) {
                continue;
            }
            let existing = self.groups.get(&key);
            let in_window = existing.is_some_and(|g| g.window_ends.is_some_and(|end| now < end));
            let starts_at = existing.map_or(event.at, |g| g.starts_at);
            let count = if in_window { 0 } else { 1 };
            let notice = self.notice(i, &key, Status::Firing, event, subject, count, starts_at);
            if in_window {
                let g = self.groups.get_mut(&key).expect("just seen");
                g.folded += 1;
                g.kind = event.kind.clone();
                // It failed again before its recovery held: the same alert.
                g.resolving = None;
                g.last = Some(notice);
            } else {
                let window = chrono::Duration::from_std(rule.group_interval).unwrap_or_default();
                let group = Group {
                    rule: i,
                    kind: event.kind.clone(),
                    sent: (notice.fired_as.clone(), notice.severity),
                    starts_at,
                    subject_name: subject.name.clone(),
                    window_ends: Some(now + window),
                    folded: 0,
                    last: None,
                    resolving: None,
                };
                self.groups.insert(key, group);
                out.push(notice);
            }
        }
        out
    }

    /// The folded repeats of each window that has ended by `now`, one notice per group, and
    /// the recoveries that held (see [`resolved_after_quiet`]).
    pub fn due(&mut self, now: DateTime<Utc>) -> Vec<Notice> {
        let mut out = Vec::new();
        for g in self.groups.values_mut() {
            let Some(end) = g.window_ends else { continue };
            if now < end {
                continue;
            }
            match g.last.take() {
                Some(mut notice) if g.folded > 0 => {
                    notice.count = g.folded;
                    g.sent = (notice.fired_as.clone(), notice.severity);
                    out.push(notice);
                    g.folded = 0;
                    let interval = self.rules[g.rule].group_interval;
                    g.window_ends = Some(now + chrono::Duration::from_std(interval).unwrap_or_default());
                }
                _ => g.window_ends = None,
            }
        }
        out.sort_by_key(|n| n.seq);
        // After the repeats folded before it (failures before the recovery), if any.
        let held: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.resolving.as_ref().is_some_and(|(at, _)| *at <= now))
            .map(|(key, _)| key.clone())
            .collect();
        for key in held {
            let g = self.groups.remove(&key).expect("just seen");
            out.extend(g.resolving.map(|(_, notice)| notice));
        }
        out
    }

    /// Takes up again a group that was firing when the notifier last stopped (its node
    /// stopped, or it stopped leading), as its newest delivery keeps it: `last` is that
    /// delivery's notice. A group whose rule is gone is left out; one taken up has no window
    /// open, so its next event is sent at once.
    pub fn restore(&mut self, last: &Restored) {
        let Some(rule) = self.rules.iter().position(|r| r.name == last.rule) else {
            return;
        };
        let group = Group {
            rule,
            kind: last.kind.clone(),
            sent: (last.kind.clone(), last.severity),
            starts_at: last.starts_at,
            subject_name: last.subject_name.clone(),
            window_ends: None,
            folded: 0,
            last: None,
            resolving: None,
        };
        self.groups.insert(last.group.clone(), group);
    }

    /// When the next window ends, or the next recovery holds.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.groups
            .values()
            .flat_map(|g| [g.window_ends, g.resolving.as_ref().map(|(at, _)| *at)])
            .flatten()
            .min()
    }

    /// The resolved notice of `group`, ended by `event`: with the kind and severity its last
    /// firing notice had, and its subject's name as it fired when the subject is gone.
    fn resolved(&self, group: &Group, key: &str, event: &Event, subject: &Subject) -> Notice {
        let mut notice = self.notice(group.rule, key, Status::Resolved, event, subject, 1, group.starts_at);
        notice.subject_name = notice.subject_name.or(group.subject_name.clone());
        (notice.fired_as, notice.severity) = group.sent.clone();
        notice
    }

    #[allow(clippy::too_many_arguments)]
    fn notice(
        &self,
        rule: usize,
        group: &str,
        status: Status,
        event: &Event,
        subject: &Subject,
        count: u64,
        starts_at: DateTime<Utc>,
    ) -> Notice {
        let rule = &self.rules[rule];
        Notice {
            rule: rule.name.clone(),
            channels: rule.channels.clone(),
            group: group.to_owned(),
            status,
            kind: event.kind.clone(),
            fired_as: event.kind.clone(),
            subject: event.subject.clone(),
            subject_name: subject.name.clone(),
            data: event.data.clone(),
            severity: severity_of(event),
            count,
            starts_at,
            at: event.at,
            seq: event.seq,
        }
    }
}

#[cfg(test)]
mod tests;

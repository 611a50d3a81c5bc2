//! What people read instead of ids: an event's subject by its kind and name, read from the
//! replicated store, and an event told as a sentence ("agent reviewer failed: exit 1"). The
//! alert notices and GraphQL's `Event.text` say the same thing the same way.

use std::collections::BTreeMap;

use serde_json::Value;
use troupe_runtime::codec::decode;
use troupe_runtime::events::Event;
use troupe_runtime::store::Store;

use crate::tables;

/// An event's subject as a person knows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Named {
    /// `AGENT`, `HOST`, `VM`, `SWARM`, `TASK` or `MEMBER`.
    pub kind: &'static str,
    /// Its name (a task's "capability · short id", a member's node name).
    pub name: String,
    /// An agent's labels.
    pub labels: BTreeMap<String, String>,
}

impl Named {
    /// "agent reviewer", "VM web-1", "task triage · 3f9c1a".
    pub fn phrase(&self) -> String {
        let word = match self.kind {
            "VM" => "VM".to_owned(),
            other => other.to_lowercase(),
        };
        format!("{word} {}", self.name)
    }
}

/// A task as people tell tasks apart: what it asks for and the end of its id, which (unlike
/// a UUIDv7's start) differs between tasks made in the same minute.
/// The tail is the id's last six hex digits, its `@node` and dashes left out (the
/// dashboard shows the same end, as long as keeps the tasks it lists apart).
/// Without a capability (a task aimed at an agent) it is told by the agent's name, as the
/// dashboard tells it, or by its tail alone ("task 2a5e1c" in a sentence).
pub fn task_name(what: Option<&str>, id: &str) -> String {
    let bare: String = id
        .split('@')
        .next()
        .unwrap_or(id)
        .chars()
        .filter(|c| *c != '-')
        .collect();
    let tail = &bare[bare.len().saturating_sub(6)..];
    match what {
        Some(what) => format!("{what} · {tail}"),
        None => tail.to_owned(),
    }
}

/// [`task_name`] of a task, its agent's name read from the store when it has no capability.
pub async fn task_label(store: &Store, spec: &crate::task::TaskSpec) -> String {
    let agent = match (&spec.capability, &spec.target_agent) {
        (None, Some(agent)) => Box::pin(named(store, agent)).await.map(|n| n.name),
        _ => None,
    };
    task_name(spec.capability.as_deref().or(agent.as_deref()), &spec.id)
}

/// What the event's subject is called, from the store; `None` when it has no subject or is
/// gone (the event then shows its id).
pub async fn subject_of(store: &Store, event: &Event) -> Option<Named> {
    let id = event.subject.as_deref()?;
    // `TASKS_MOVED` is about the member that took the tasks.
    if event.kind.starts_with("MEMBER_")
        || matches!(event.kind.as_str(), "LEADER_CHANGED" | "NODE_FENCED" | "TASKS_MOVED")
    {
        return Some(Named {
            kind: "MEMBER",
            name: id.to_owned(),
            labels: BTreeMap::new(),
        });
    }
    named(store, id).await
}

/// What the entity `id` (an agent, task, swarm, host or VM) is called, from the store. Only
/// an entity's id (`<uuid>@<node>`) is looked up: a service's or supervisor's subject is its
/// own name, and reading five tables for it on every event would find nothing.
pub async fn named(store: &Store, id: &str) -> Option<Named> {
    crate::ids::home(id)?;
    let read = |table| async move { store.get(table, id).await.ok().flatten() };
    let plain = |kind, name| {
        Some(Named {
            kind,
            name,
            labels: BTreeMap::new(),
        })
    };
    if let Some(spec) = read(tables::AGENTS)
        .await
        .and_then(|b| decode::<crate::agent::AgentSpec>(&b).ok())
    {
        return Some(Named {
            kind: "AGENT",
            name: spec.name,
            labels: spec.labels,
        });
    }
    if let Some(spec) = read(tables::TASKS)
        .await
        .and_then(|b| decode::<crate::task::TaskSpec>(&b).ok())
    {
        return plain("TASK", task_label(store, &spec).await);
    }
    if let Some(spec) = read(tables::SWARMS)
        .await
        .and_then(|b| decode::<crate::swarm::SwarmSpec>(&b).ok())
    {
        return plain("SWARM", spec.name);
    }
    if let Some(spec) = read(tables::HOSTS)
        .await
        .and_then(|b| decode::<crate::host::HostSpec>(&b).ok())
    {
        // Every node's simulated hosts are sim-1…: where another host has this one's name,
        // it is told by the name and the node that made it, as the dashboard titles it.
        let name = match shares_its_name(store, &spec).await {
            true => spec.qualified_name(),
            false => spec.name,
        };
        return plain("HOST", name);
    }
    if let Some(spec) = read(tables::VMS)
        .await
        .and_then(|b| decode::<crate::vm::VmSpec>(&b).ok())
    {
        return plain("VM", spec.name);
    }
    None
}

/// Whether another host in the store has `host`'s name.
async fn shares_its_name(store: &Store, host: &crate::host::HostSpec) -> bool {
    let (id, name) = (host.id.clone(), host.name.clone());
    let others = store
        .scan(tables::HOSTS, None, 1, move |bytes| {
            decode::<crate::host::HostSpec>(bytes).is_ok_and(|other| other.name == name && other.id != id)
        })
        .await;
    others.is_ok_and(|others| !others.is_empty())
}

/// What happened, as the verb phrase after the subject ("failed", "was spawned").
pub fn verb(kind: &str) -> String {
    let fixed = match kind {
        "AGENT_ALERT" => "was given up on",
        "AGENT_FAILED" => "failed",
        "AGENT_SPAWNED" => "was spawned",
        "AGENT_DEFINED" => "was defined",
        "AGENT_STARTING" => "is starting",
        "AGENT_STARTED" => "started",
        "AGENT_STOPPING" => "is stopping",
        "AGENT_STOPPED" => "stopped",
        "AGENT_REMOVED" => "was removed",
        "AGENT_PAUSED" => "was paused",
        "AGENT_RESUMED" => "was resumed",
        "AGENT_UPDATED" => "was updated",
        "AGENT_MOVED" => "moved",
        "AGENT_HEALTHY" => "is healthy",
        "AGENT_UNHEALTHY" => "is unhealthy",
        "AGENT_UNRESPONSIVE" => "does not answer its watchdog",
        "AGENT_RESPONSIVE" => "answers its watchdog again",
        "AGENT_BREAKER_OPENED" => "opened its circuit breaker",
        "AGENT_BREAKER_HALF_OPEN" => "half-opened its circuit breaker",
        "AGENT_BREAKER_CLOSED" => "closed its circuit breaker",
        "AGENT_CHECKPOINTED" => "saved a checkpoint",
        "AGENT_ROLLED_BACK" => "was rolled back",
        "TASK_QUEUED" => "was queued",
        "TASK_WAITING" => "is waiting",
        "TASK_STARTED" => "started",
        "TASK_AWAITING_APPROVAL" => "awaits an operator's approval",
        "TASK_RESUMED" => "resumed",
        "TASK_PROGRESS" => "made progress",
        "TASK_STEP" => "took a step",
        "TASK_SUCCEEDED" => "succeeded",
        "TASK_FAILED" => "failed",
        "TASK_RETRYING" => "is retrying",
        "TASK_REQUEUED" => "was requeued",
        "TASK_CANCELLED" => "was cancelled",
        "TASK_EXPIRED" => "expired",
        "TASK_DEAD" => "is dead: out of attempts",
        "TASK_DEPENDENCY_FAILED" => "cannot run: a dependency failed",
        "SWARM_CREATED" => "was created",
        "SWARM_DESTROYED" => "was destroyed",
        "SWARM_SCALED" => "was scaled",
        "SWARM_DEGRADED" => "is degraded",
        "SWARM_FAILED" => "failed",
        "SWARM_MOVED" => "moved",
        "HOST_ADDED" => "was added",
        "HOST_REMOVED" => "was removed",
        "HOST_UP" | "MEMBER_UP" => "is up",
        "HOST_DOWN" | "MEMBER_DOWN" => "is down",
        "HOST_UNREACHABLE" => "is unreachable",
        "MEMBER_SUSPECT" => "is suspect",
        "MEMBER_JOINED" => "joined",
        "MEMBER_LEFT" => "left",
        "LEADER_CHANGED" => "leads the cluster",
        "VM_CREATED" => "was created",
        "VM_STARTED" => "started",
        "VM_DELETED" => "was deleted",
        "VM_RESTARTED" => "was restarted",
        "VM_EVACUATED" => "was evacuated",
        "SUPERVISOR_ESCALATED" => "escalated: too many restarts",
        _ => "",
    };
    if fixed.is_empty() {
        kind.to_lowercase().replace('_', " ")
    } else {
        fixed.to_owned()
    }
}

/// Who an event is about, for its sentence: its subject by kind and name; else, when its
/// data names it ("experiment chaos-1"), that; else its subject's id.
/// A part of a swarm's subtree (its `coordinator`, its `members` supervisor) is told as
/// the swarm's: "swarm math's coordinator", from the supervisor that records it.
pub fn who(kind: &str, named: Option<&Named>, subject: Option<&str>, data: &Value) -> Option<String> {
    if let Some(n) = named {
        return Some(n.phrase());
    }
    let word = kind.split('_').next().unwrap_or_default().to_lowercase();
    if let (Some(part), Some(swarm)) = (
        subject,
        data.get("supervisor").and_then(Value::as_str).and_then(swarm_of),
    ) {
        return Some(format!("swarm {swarm}'s {part}"));
    }
    // A node's own service or supervisor: every node has a `watchdog` and a `hosts`.
    if let (Some(part), Some(node)) = (subject, data.get("node").and_then(Value::as_str)) {
        if kind.starts_with("SERVICE_") || kind.starts_with("SUPERVISOR_") {
            return Some(format!("{node}'s {part}"));
        }
    }
    match data.get("name").and_then(Value::as_str) {
        Some(name) if kind.contains('_') => Some(format!("{word} {name}")),
        _ => subject.map(str::to_owned),
    }
}

/// The swarm's name in its supervisor's, "swarm <name> (<id>)".
fn swarm_of(supervisor: &str) -> Option<&str> {
    let rest = supervisor.strip_prefix("swarm ")?;
    let (name, id) = rest.rsplit_once(" (")?;
    crate::ids::home(id.strip_suffix(')')?).map(|_| name)
}

/// `text` with every entity id in it (`<uuid>@<node>`) replaced by what the entity is
/// called ("agent reviewer"), for a text people read that was written with ids; an id the
/// store no longer knows stays as it is.
pub async fn name_ids(store: &Store, text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((start, end)) = next_id(rest) {
        out.push_str(&rest[..start]);
        let id = &rest[start..end];
        match named(store, id).await {
            Some(n) => out.push_str(&n.phrase()),
            None => out.push_str(id),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Where the first entity id in `text` begins and ends: a UUID's 36 characters, `@`, and a
/// node name.
fn next_id(text: &str) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let node_char = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
    let mut from = 0;
    while let Some(at) = text[from..].find('@').map(|i| i + from) {
        from = at + 1;
        let Some(start) = at.checked_sub(36) else { continue };
        let uuid = &bytes[start..at];
        let shaped = uuid.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
        let mut end = at + 1;
        while end < bytes.len() && node_char(bytes[end]) {
            end += 1;
        }
        // A sentence's full stop is not the node's.
        while end > at + 1 && bytes[end - 1] == b'.' {
            end -= 1;
        }
        if shaped && end > at + 1 {
            return Some((start, end));
        }
    }
    None
}

/// The event as a sentence: who, what happened, and why when its data says.
pub fn sentence(kind: &str, who: Option<&str>, data: &Value) -> String {
    // A delivery's subject is its id, which says nothing to a person: the channel and the
    // rule do.
    if let ("ALERT_DELIVERY_FAILED", Some(channel)) = (kind, data.get("channel").and_then(Value::as_str)) {
        let rule = data.get("rule").and_then(Value::as_str).unwrap_or("?");
        let mut s = format!("an alert of rule {rule} was not delivered to channel {channel}");
        if let Some(error) = data.get("error").and_then(Value::as_str) {
            s.push_str(": ");
            s.extend(error.chars().take(300));
        }
        return s;
    }
    let mut what = verb(kind);
    // "agent echoer restarted", not "agent echoer agent restarted"; "swarm math's
    // coordinator started", not "… coordinator swarm coordinator started".
    if let (Some(who), Some((first, rest))) = (who, what.clone().split_once(' ')) {
        // "VM web-2 is running", not "VM web-2 vm running": a kind's word is in capitals.
        if who.split(' ').next().is_some_and(|w| w.eq_ignore_ascii_case(first)) {
            what = rest.to_owned();
            if let Some((next, rest)) = what.clone().split_once(' ') {
                if who.rsplit(' ').next() == Some(next) {
                    what = rest.to_owned();
                }
            }
        }
    }
    // "member c took 3 tasks from b", not "c tasks moved".
    if let ("TASKS_MOVED", Some(count), Some(from)) = (
        kind,
        data.get("count").and_then(Value::as_u64),
        data.get("from").and_then(Value::as_str),
    ) {
        let tasks = if count == 1 {
            "1 task".to_owned()
        } else {
            format!("{count} tasks")
        };
        what = format!("took {tasks} from {from}");
    }
    let why = ["reason", "error", "lastError", "message"]
        .iter()
        .find_map(|k| data.get(*k).and_then(|v| v.as_str()));
    let mut s = match who {
        Some(who) => format!("{who} {what}"),
        None => {
            let mut what = what;
            if let Some(first) = what.get(0..1) {
                what.replace_range(0..1, &first.to_uppercase());
            }
            what
        }
    };
    if let Some(why) = why {
        s.push_str(": ");
        s.extend(why.chars().take(300));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_failed_alert_delivery_is_told_by_its_channel_and_rule_not_its_id() {
        let data = json!({ "channel": "broken", "rule": "agents", "attempts": 3, "error": "answered 500" });
        assert_eq!(
            sentence(
                "ALERT_DELIVERY_FAILED",
                Some("01a228c6-5aae-7000-8000-000000000000"),
                &data
            ),
            "an alert of rule agents was not delivered to channel broken: answered 500"
        );
    }

    #[test]
    fn an_event_reads_as_a_sentence_with_its_cause() {
        let s = sentence("AGENT_FAILED", Some("agent reviewer"), &json!({ "error": "exit 1" }));
        assert_eq!(s, "agent reviewer failed: exit 1");
        assert_eq!(
            sentence("TASK_DEAD", Some("task triage · 3f9c1a"), &Value::Null),
            "task triage · 3f9c1a is dead: out of attempts"
        );
    }

    #[test]
    fn a_kind_without_a_phrase_drops_the_subjects_kind_and_data_can_name_the_subject() {
        assert_eq!(
            sentence("AGENT_RESTARTED", Some("agent echoer"), &Value::Null),
            "agent echoer restarted"
        );
        let data = json!({ "name": "chaos-1" });
        let named = who("EXPERIMENT_STARTED", None, Some("01a2@n"), &data);
        assert_eq!(
            sentence("EXPERIMENT_STARTED", named.as_deref(), &data),
            "experiment chaos-1 started"
        );
        assert_eq!(
            who("FAULT_INJECTED", None, Some("01a2@n"), &Value::Null).as_deref(),
            Some("01a2@n")
        );
    }

    #[test]
    fn a_part_of_a_swarms_subtree_is_told_as_the_swarms() {
        let data = json!({ "supervisor": "swarm math (01a21b1e-480c-72c8-a280-ef8a4bc77682@vm)" });
        let coordinator = who("SWARM_COORDINATOR_STARTED", None, Some("coordinator"), &data);
        assert_eq!(
            sentence("SWARM_COORDINATOR_STARTED", coordinator.as_deref(), &data),
            "swarm math's coordinator started"
        );
        let members = who("SUPERVISOR_STARTED", None, Some("members"), &data);
        assert_eq!(
            sentence("SUPERVISOR_STARTED", members.as_deref(), &data),
            "swarm math's members supervisor started"
        );
        // A node's own supervisors and services say their own names, and their node's.
        let core = json!({ "supervisor": "root" });
        let named = who("SUPERVISOR_STARTED", None, Some("core"), &core);
        assert_eq!(
            sentence("SUPERVISOR_STARTED", named.as_deref(), &core),
            "core supervisor started"
        );
        let watchdog = json!({ "supervisor": "chores", "node": "c" });
        let named = who("SERVICE_STARTED", None, Some("watchdog"), &watchdog);
        assert_eq!(
            sentence("SERVICE_STARTED", named.as_deref(), &watchdog),
            "c's watchdog service started"
        );
    }

    #[test]
    fn ids_in_a_text_are_found_whole() {
        let id = "01a21b1e-480c-72c8-a280-ef8a4bc77682@node-a.2";
        let text = format!("restarted as predicted: {id}, {id}.");
        let (start, end) = next_id(&text).unwrap();
        assert_eq!(&text[start..end], id);
        let (s2, e2) = next_id(&text[end..]).unwrap();
        assert_eq!(&text[end + s2..end + e2], id);
        assert_eq!(&text[end + e2..], ".");
        assert_eq!(next_id("mail me@example.org, or 01a2@n"), None);
    }

    #[test]
    fn a_vms_kind_word_is_not_said_twice() {
        let data = json!({ "reason": "booted" });
        assert_eq!(
            sentence("VM_RUNNING", Some("VM web-2"), &data),
            "VM web-2 running: booted"
        );
    }

    #[test]
    fn tasks_moved_to_a_member_read_as_the_member_taking_them() {
        let data = json!({ "from": "b", "to": "c", "count": 3, "reason": "b is stopping; agents on c serve them" });
        let member = Named {
            kind: "MEMBER",
            name: "c".into(),
            labels: BTreeMap::new(),
        };
        let who = who("TASKS_MOVED", Some(&member), Some("c"), &data);
        assert_eq!(
            sentence("TASKS_MOVED", who.as_deref(), &data),
            "member c took 3 tasks from b: b is stopping; agents on c serve them"
        );
        let one = json!({ "from": "b", "to": "c", "count": 1 });
        assert_eq!(
            sentence("TASKS_MOVED", Some("member c"), &one),
            "member c took 1 task from b"
        );
    }

    #[test]
    fn a_kind_without_a_phrase_and_without_a_subject_still_reads() {
        assert_eq!(sentence("CLUSTER_RECOVERED", None, &Value::Null), "Cluster recovered");
    }

    #[tokio::test]
    async fn a_host_whose_name_another_host_has_is_told_with_the_node_that_made_it() {
        use crate::host::{HostMode, HostSpec};
        use troupe_runtime::store::Batch;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
        let host = |id: &str, name: &str, node: &str| HostSpec {
            id: id.into(),
            name: name.into(),
            uri: "test:///default".into(),
            node: node.into(),
            labels: BTreeMap::new(),
            overcommit: Default::default(),
            reserved_memory_mib: 0,
            mode: HostMode::Active,
            simulated: true,
            created_at: chrono::Utc::now(),
        };
        let mut batch = Batch::new();
        // c's sim-1 moved to a, beside a's own sim-1; b's sim-2 is the only one of its name.
        for spec in [
            host("1@a", "sim-1", "a"),
            host("2@c", "sim-1", "a"),
            host("3@b", "sim-2", "b"),
        ] {
            batch = batch.put(tables::HOSTS, &spec.id, troupe_runtime::codec::encode(&spec).unwrap());
        }
        store.write(batch).await.unwrap();
        let name = |id: &'static str| {
            let store = store.clone();
            async move { named(&store, id).await.unwrap().phrase() }
        };
        assert_eq!(name("1@a").await, "host sim-1@a");
        assert_eq!(name("2@c").await, "host sim-1@c");
        assert_eq!(name("3@b").await, "host sim-2");
    }

    #[test]
    fn tasks_of_the_same_minute_have_different_names() {
        let a = task_name(Some("triage"), "01936f2a-0000-7000-8000-00000000a1b2@node-a");
        let b = task_name(Some("triage"), "01936f2a-0000-7000-8000-00000000c3d4");
        assert_ne!(a, b);
        assert_eq!(a, "triage · 00a1b2");
        // Aimed at no capability and no agent known: "task 00a1b2", not "task task · 00a1b2".
        let bare = Named {
            kind: "TASK",
            name: task_name(None, "01936f2a-0000-7000-8000-00000000a1b2@node-a"),
            labels: BTreeMap::new(),
        };
        assert_eq!(bare.phrase(), "task 00a1b2");
        assert_eq!(
            Named {
                kind: "VM",
                name: "web".into(),
                labels: BTreeMap::new()
            }
            .phrase(),
            "VM web"
        );
    }
}

//! The coordinator's membership decisions as pure functions of what it sees: which members
//! to start or remove to reach the swarm's size, when autoscale may move the size again (its
//! cool-down), and what it moves it to. The coordinator reads the swarm, asks these, and
//! carries out the answer (starts, removals, the recorded change).
//!
//! ```text
//!   tick ──▶ health(states)            ──▶ record a health change
//!        └─▶ cooled(scaled_at, now)? ──▶ autoscale(load) ──▶ record the size ──▶ members(…)
//!   start / scale / autoscale ──────────────────────────────────────────────────▶ members(…)
//! ```

use chrono::{DateTime, Utc};

use super::rules;
use super::spec::{SwarmSpec, SwarmStatus};
use crate::agent::SpawnAgentRequest;

/// What the coordinator does to bring the members to the swarm's size.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Membership {
    /// The members to start, from the templates (member `i` from template `i mod n`).
    pub(crate) start: Vec<SpawnAgentRequest>,
    /// The members to remove, newest first.
    pub(crate) remove: Vec<String>,
}

/// The starts and removals that bring `members` (ids, oldest first) to the swarm's size. A
/// swarm without templates does not grow; a member leading a sub-team (in `leaders`) is
/// never removed. Each new member's name gets `suffix(n)`.
pub(crate) fn members(
    spec: &SwarmSpec,
    members: &[String],
    leaders: &[String],
    mut suffix: impl FnMut(usize) -> String,
) -> Membership {
    let (have, want) = (members.len(), spec.size as usize);
    let mut plan = Membership::default();
    if have < want && !spec.templates.is_empty() {
        for n in have..want {
            let template = &spec.templates[n % spec.templates.len()];
            let mut req = template.clone();
            req.name = format!("{}-{}", template.name, suffix(n));
            req.node = None;
            req.start = true;
            if !req.capabilities.contains(&spec.queue_capability()) {
                req.capabilities.push(spec.queue_capability());
            }
            plan.start.push(req);
        }
    }
    let removable = members.iter().rev().filter(|m| !leaders.contains(m));
    plan.remove = removable.take(have.saturating_sub(want)).cloned().collect();
    plan
}

/// Whether autoscale may move the size at `now`: never moved, or the cool-down has passed
/// since it last did.
pub(crate) fn cooled(scaled_at: Option<DateTime<Utc>>, now: DateTime<Utc>, cooldown_ms: u64) -> bool {
    let cooldown = chrono::Duration::milliseconds(cooldown_ms.min(i64::MAX as u64) as i64);
    scaled_at.is_none_or(|t| now - t >= cooldown)
}

/// How loaded the swarm's members are: subtasks waiting in the queue, and the members' busy
/// and total task slots.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Load {
    pub(crate) waiting: usize,
    pub(crate) busy: usize,
    pub(crate) slots: usize,
}

/// Autoscale's step at `now`, on the records as they are: the new size and the reason when
/// the swarm has a policy, has cooled down, and its load asks for a change. Applying it sets
/// the size and the time of the change (the start of the next cool-down).
pub(crate) fn autoscale(
    spec: &SwarmSpec,
    status: &SwarmStatus,
    now: DateTime<Utc>,
    load: Load,
) -> Option<(u32, String)> {
    let policy = spec.autoscale?;
    if !cooled(status.scaled_at, now, policy.cooldown_ms) {
        return None;
    }
    let bounds = (spec.min_agents, spec.max_agents);
    let (size, reason) = rules::autoscale(&policy, spec.size, bounds, load.waiting, load.busy, load.slots)?;
    Some((size, format!("autoscale: {reason}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{BackendSpec, BuiltinKind};
    use crate::swarm::spec::{Autoscale, MemberStrategy, Topology};

    fn template(name: &str) -> SpawnAgentRequest {
        let mut req = SpawnAgentRequest::new(name, BackendSpec::Builtin(BuiltinKind::Echo));
        req.capabilities = vec!["x".into()];
        req
    }

    fn spec(size: u32, templates: Vec<SpawnAgentRequest>) -> SwarmSpec {
        SwarmSpec {
            id: "s1".into(),
            name: "s".into(),
            node: "n".into(),
            topology: Topology::Hierarchical,
            templates,
            min_agents: 1,
            max_agents: 6,
            size,
            strategy: MemberStrategy::OneForOne,
            autoscale: Some(Autoscale {
                queue_per_agent: 2.0,
                idle_below: 0.25,
                cooldown_ms: 5_000,
            }),
            memory_limit_bytes: 1024,
            lead: None,
            created_at: troupe_runtime::clock::now(),
            budget: None,
        }
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("m{i}")).collect()
    }

    #[test]
    fn a_swarm_below_its_size_starts_members_from_its_templates_in_turn() {
        let spec = spec(4, vec![template("a"), template("b")]);
        let plan = members(&spec, &ids(1), &[], |n| n.to_string());
        let names: Vec<&str> = plan.start.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["b-1", "a-2", "b-3"]);
        assert!(plan.start.iter().all(|r| r.start && r.node.is_none()));
        assert!(plan.start.iter().all(|r| r.capabilities == ["x", "swarm:s1"]));
        assert!(plan.remove.is_empty());
    }

    #[test]
    fn a_swarm_without_templates_does_not_grow() {
        assert_eq!(
            members(&spec(3, vec![]), &ids(1), &[], |_| String::new()),
            Membership::default()
        );
    }

    #[test]
    fn a_swarm_above_its_size_removes_its_newest_members_but_not_a_team_leader() {
        let spec = spec(2, vec![template("a")]);
        let plan = members(&spec, &ids(5), &["m4".into()], |_| String::new());
        assert_eq!(plan.remove, ["m3", "m2", "m1"]);
        assert!(plan.start.is_empty());
    }

    #[test]
    fn autoscale_moves_once_per_cool_down() {
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let spec = spec(1, vec![template("a")]);
        let mut status = SwarmStatus::new(Topology::Hierarchical);
        let load = Load {
            waiting: 7,
            busy: 1,
            slots: 1,
        };
        let (size, reason) = autoscale(&spec, &status, t0, load).expect("never scaled: it may");
        assert_eq!(size, 4);
        assert!(reason.starts_with("autoscale: 7 tasks wait for 1 members"), "{reason}");
        status.scaled_at = Some(t0);
        let later = |ms| t0 + chrono::Duration::milliseconds(ms);
        assert_eq!(
            autoscale(&spec, &status, later(4_999), load),
            None,
            "within the cool-down"
        );
        assert!(
            autoscale(&spec, &status, later(5_000), load).is_some(),
            "once it has passed"
        );
    }

    #[test]
    fn autoscale_does_nothing_without_a_policy_or_a_reason() {
        let mut spec = spec(2, vec![template("a")]);
        let status = SwarmStatus::new(Topology::Hierarchical);
        let steady = Load {
            waiting: 1,
            busy: 1,
            slots: 2,
        };
        assert_eq!(autoscale(&spec, &status, troupe_runtime::clock::now(), steady), None);
        spec.autoscale = None;
        let loaded = Load { waiting: 50, ..steady };
        assert_eq!(autoscale(&spec, &status, troupe_runtime::clock::now(), loaded), None);
    }

    #[test]
    fn a_huge_cool_down_does_not_overflow() {
        let now = troupe_runtime::clock::now();
        assert!(!cooled(Some(now), now, u64::MAX));
        assert!(cooled(None, now, u64::MAX));
    }
}

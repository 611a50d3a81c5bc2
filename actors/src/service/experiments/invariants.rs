//! The invariants an experiment checks at its end: the tree restored, restarts as the
//! strategies predicted, no escalation, every peer up, no task lost or retried past its
//! limit, no VM running twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::time::Instant;
use troupe_runtime::events::Event;

use super::run::{after, TICK};
use super::select::{self, Candidate};
use super::{Injection, InvariantResult};
use crate::scheduler::TaskFilter;
use crate::service::Api;
use crate::task::TaskState;

/// The most open tasks remembered at the start of an experiment.
const WATCHED_TASKS: usize = 5_000;

/// Every child that ran under the targets' supervisors before runs there again.
pub(super) async fn tree_restored(
    api: &Api,
    before: Option<&[Candidate]>,
    injections: &[Injection],
    deadline: Instant,
) -> InvariantResult {
    let name = "TREE_RESTORED".to_owned();
    let Some(before) = before else {
        return InvariantResult {
            name,
            ok: false,
            detail: Some("the tree could not be read before the faults".into()),
        };
    };
    let owners: BTreeSet<&str> = injections.iter().map(|i| i.supervisor.as_str()).collect();
    let wanted: Vec<&Candidate> = before
        .iter()
        .filter(|c| owners.contains(c.owner.as_str()) && c.state == "RUNNING")
        .collect();
    loop {
        let missing: Vec<String> = match api.own_tree().await {
            Ok(tree) => {
                let now = select::flatten(&tree);
                wanted
                    .iter()
                    .filter(|w| {
                        !now.iter()
                            .any(|c| c.id == w.id && c.owner == w.owner && c.state == "RUNNING")
                    })
                    .map(|w| w.id.clone())
                    .collect()
            }
            Err(e) => vec![format!("(the tree could not be read: {e})")],
        };
        if missing.is_empty() {
            return InvariantResult {
                name,
                ok: true,
                detail: Some(format!(
                    "{} children of {} running again",
                    wanted.len(),
                    owners.into_iter().collect::<Vec<_>>().join(", ")
                )),
            };
        }
        if Instant::now() >= deadline {
            return InvariantResult {
                name,
                ok: false,
                detail: Some(format!("not running again: {}", missing.join(", "))),
            };
        }
        tokio::time::sleep(TICK).await;
    }
}

/// The children restarted are those the strategies predicted; anything else in this node's
/// tree (`mine`, as it was before the faults) is unexpected. The event log is the
/// cluster's: a restart in another node's tree is another tree's business (another part of
/// the same experiment, or none of it).
pub(super) fn restarts_match(
    injections: &[Injection],
    events: &[Arc<Event>],
    mine: Option<&[Candidate]>,
) -> (InvariantResult, Vec<Arc<Event>>) {
    let expected: BTreeSet<&str> = injections
        .iter()
        .flat_map(|i| {
            i.expected
                .iter()
                .filter(|e| e.effect == "RESTART")
                .map(|e| e.id.as_str())
        })
        .collect();
    let targets: BTreeSet<&str> = injections.iter().map(|i| i.target.as_str()).collect();
    let seq = injections.iter().map(|i| i.after_seq).min().unwrap_or(0);
    let unexpected: Vec<Arc<Event>> = after(events, seq)
        .filter(|e| e.kind.ends_with("_RESTARTED"))
        .filter(|e| {
            let s = e.subject.as_deref().unwrap_or("");
            !expected.contains(s) && !targets.contains(s) && mine.is_none_or(|m| m.iter().any(|c| c.id == s))
        })
        .cloned()
        .collect();
    let missing: Vec<&str> = expected
        .iter()
        .filter(|id| !after(events, seq).any(|e| e.subject.as_deref() == Some(**id) && e.kind.ends_with("_RESTARTED")))
        .copied()
        .collect();
    let ok = unexpected.is_empty() && missing.is_empty();
    let detail = if ok {
        format!(
            "restarted as predicted: {}",
            expected.iter().copied().collect::<Vec<_>>().join(", ")
        )
    } else {
        let extra: Vec<String> = unexpected.iter().filter_map(|e| e.subject.clone()).collect();
        format!(
            "predicted but not restarted: [{}]; restarted but not predicted: [{}]",
            missing.join(", "),
            extra.join(", ")
        )
    };
    (
        InvariantResult {
            name: "RESTARTS_MATCH_STRATEGY".into(),
            ok,
            detail: Some(detail),
        },
        unexpected,
    )
}

pub(super) fn no_escalation(injections: &[Injection], events: &[Arc<Event>], allowed: bool) -> InvariantResult {
    let seq = injections.iter().map(|i| i.after_seq).min().unwrap_or(0);
    let escalations: Vec<String> = after(events, seq)
        .filter(|e| e.kind == "SUPERVISOR_ESCALATED")
        .filter_map(|e| e.subject.clone())
        .collect();
    let predicted = injections
        .iter()
        .any(|i| i.expected.iter().any(|e| e.effect == "ESCALATE"));
    InvariantResult {
        name: "NO_ESCALATION".into(),
        ok: escalations.is_empty() || (allowed && predicted),
        detail: (!escalations.is_empty()).then(|| format!("escalated: {}", escalations.join(", "))),
    }
}

/// Every member of the cluster is UP (as this node sees it), waiting up to the deadline.
pub(super) async fn peers_up(api: &Api, deadline: Instant) -> InvariantResult {
    loop {
        let down: Vec<String> = match api.cluster_state().await {
            Ok(state) => state
                .members
                .iter()
                .filter(|m| m.state != crate::cluster::lease::MemberState::Up)
                .map(|m| format!("{} {}", m.name, m.state.name()))
                .collect(),
            Err(e) => vec![format!("(the cluster could not be read: {e})")],
        };
        if down.is_empty() || Instant::now() >= deadline {
            return InvariantResult {
                name: "PEERS_UP".into(),
                ok: down.is_empty(),
                detail: Some(match down.is_empty() {
                    true => "every member is UP".into(),
                    false => format!("not UP: {}", down.join(", ")),
                }),
            };
        }
        tokio::time::sleep(TICK).await;
    }
}

/// The tasks open (QUEUED or RUNNING) when the experiment begins.
pub(super) async fn open_tasks(api: &Api) -> BTreeSet<String> {
    let mut open = BTreeSet::new();
    for state in [TaskState::Queued, TaskState::Running, TaskState::AwaitingApproval] {
        let filter = TaskFilter {
            state: Some(state),
            agent: None,
        };
        match api.tasks().list(filter, None, WATCHED_TASKS).await {
            Ok(listing) => open.extend(listing.items.into_iter().map(|t| t.spec.id)),
            Err(e) => tracing::warn!(error = %e, "an experiment could not list the open tasks"),
        }
    }
    open
}

/// Every task open when the experiment began or queued during it is still there (in
/// whatever state it reached), and none failed more attempts than it allows.
pub(super) async fn tasks_kept(
    api: &Api,
    open: &BTreeSet<String>,
    events: &[Arc<Event>],
    deadline: Instant,
) -> InvariantResult {
    let name = "TASKS_KEPT".to_owned();
    let queued = events
        .iter()
        .filter(|e| e.kind == "TASK_QUEUED")
        .filter_map(|e| e.subject.clone());
    let watched: BTreeSet<String> = open.iter().cloned().chain(queued).collect();
    let mut lost = Vec::new();
    let mut over = Vec::new();
    for id in &watched {
        // A task held by a peer that is coming back is waited for, up to the deadline.
        let found = loop {
            match api.tasks().get(id).await {
                Ok(found) => break Ok(found),
                Err(e) if Instant::now() >= deadline => break Err(e),
                Err(_) => tokio::time::sleep(TICK).await,
            }
        };
        match found {
            Ok(Some(t)) if t.status.failures > t.spec.max_attempts => over.push(format!(
                "{id} ({} failures of {})",
                t.status.failures, t.spec.max_attempts
            )),
            Ok(Some(_)) => {}
            Ok(None) => lost.push(id.clone()),
            Err(e) => lost.push(format!("{id} (unreadable: {e})")),
        }
    }
    let ok = lost.is_empty() && over.is_empty();
    InvariantResult {
        name,
        ok,
        detail: Some(match ok {
            true => format!("{} tasks watched, none lost", watched.len()),
            false => format!(
                "lost: [{}]; past their attempts: [{}]",
                lost.join(", "),
                over.join(", ")
            ),
        }),
    }
}

/// How long VMS_SINGLE waits for a listing of each host taken after it began.
const FRESH_LISTING: std::time::Duration = std::time::Duration::from_secs(5);
/// How often it reads the hosts again meanwhile: a peer's listing arrives with its beat
/// (every 100 ms), and a read asks libvirt again for each host of this node.
const LISTING_AGAIN: std::time::Duration = std::time::Duration::from_millis(100);

/// No domain runs on two hosts at once (a VM started again elsewhere while its first copy
/// still runs). Each host's listing must be taken after the check began: a peer's host is
/// read from its node's last sweep, which may predate a move that ended just before.
pub(super) async fn vms_single(api: &Api) -> InvariantResult {
    let name = "VMS_SINGLE".to_owned();
    let began = troupe_runtime::clock::now();
    let deadline = Instant::now() + FRESH_LISTING;
    loop {
        let hosts = match api.hosts().list().await {
            Ok(hosts) => hosts,
            Err(e) => {
                return InvariantResult {
                    name,
                    ok: false,
                    detail: Some(format!("the hosts could not be listed: {e}")),
                }
            }
        };
        let mut running: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let (mut unread, mut stale) = (Vec::new(), false);
        for host in hosts.items.iter().filter(|h| h.state == crate::host::HostState::Up) {
            match api.hosts().domains(&host.spec.id).await {
                Ok(listed) if listed.at < began => {
                    stale = true;
                    unread.push(format!("{} (its last listing is from {})", host.spec.id, listed.at));
                }
                Ok(listed) => {
                    for d in listed
                        .domains
                        .into_iter()
                        .filter(|d| d.state == crate::host::DomainStateName::Running)
                    {
                        running.entry(d.name).or_default().push(host.spec.id.clone());
                    }
                }
                Err(e) => unread.push(format!("{} ({e})", host.spec.id)),
            }
        }
        if stale && Instant::now() < deadline {
            tokio::time::sleep(LISTING_AGAIN).await;
            continue;
        }
        let twice: Vec<String> = running
            .iter()
            .filter(|(_, on)| on.len() > 1)
            .map(|(vm, on)| format!("{vm} on {}", on.join(" and ")))
            .collect();
        return InvariantResult {
            name,
            ok: twice.is_empty(),
            detail: Some(match (twice.is_empty(), unread.is_empty()) {
                (true, true) => format!("{} domains running, each on one host", running.len()),
                (true, false) => format!(
                    "{} domains running, each on one host; not read: {}",
                    running.len(),
                    unread.join(", ")
                ),
                (false, _) => format!("running twice: {}", twice.join("; ")),
            }),
        };
    }
}

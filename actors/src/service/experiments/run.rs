//! An experiment after its injections: held for its duration (or until stopped, halted or
//! its lease lapses), reverted, then judged from the events of the run: each injection's
//! detection and recovery, the invariants over the tree, and the verdict.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::Notify;
use tokio::time::Instant;
use troupe_runtime::events::{Event, EventFilter, NewEvent};

use super::invariants as inv;
use super::{inject, select};
use super::{lock, End, ExperimentInput, ExperimentState, FaultAction, Injection, InvariantResult, RecoveryReport};
use crate::service::Api;

/// How often recovery and the lease are looked at.
pub(super) const TICK: Duration = Duration::from_millis(25);
/// The most events of a run kept for judging it.
const KEEP: usize = 50_000;
/// The most observed events shown per injection.
const SHOWN: usize = 50;

fn ms(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_milliseconds().max(0)
}

/// The run's events as they are committed, from the first injection on.
struct Observer {
    events: Arc<Mutex<Vec<Arc<Event>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    fn start(api: &Api, after: u64) -> Self {
        let events: Arc<Mutex<Vec<Arc<Event>>>> = Arc::default();
        let sink = events.clone();
        let mut stream = Box::pin(api.subscribe(after.saturating_sub(1), EventFilter::default()));
        let task = tokio::spawn(async move {
            while let Some(Ok(e)) = stream.next().await {
                let mut all = lock(&sink);
                if all.len() < KEEP {
                    all.push(e);
                }
            }
        });
        Self { events, task }
    }

    fn snapshot(&self) -> Vec<Arc<Event>> {
        lock(&self.events).clone()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether the experiment was told to end (stop, halt, a lapsed lease).
fn end_asked(api: &Api, id: &str) -> Option<Option<End>> {
    let records = lock(&api.experiments.records);
    let Some(r) = records.get(id) else {
        return Some(None);
    };
    if let Some(end) = r.end.clone() {
        return Some(Some(end));
    }
    if r.lease_until.is_some_and(|t| Instant::now() >= t) {
        return Some(Some(End {
            why: "its lease lapsed: the client stopped renewing it".to_owned(),
            aborted: true,
        }));
    }
    None
}

/// Waits until `until` (or, with `early`, until nothing of the experiment is armed), judging
/// the injections that can be judged meanwhile; the end asked, if one was.
async fn wait(
    api: &Api,
    id: &str,
    input: &ExperimentInput,
    observer: &Observer,
    until: Instant,
    early: bool,
    wake: &Notify,
) -> Option<Option<End>> {
    loop {
        if let Some(end) = end_asked(api, id) {
            return Some(end);
        }
        judge(api, id, input, observer, false).await;
        let armed = lock(&api.experiments.records)
            .get(id)
            .is_some_and(|r| !r.gates.is_empty());
        if (early && !armed) || Instant::now() >= until {
            // Read after the gates: the kill switch takes them and asks the end under one
            // lock, so gates it emptied since the look above end the experiment as ABORTED.
            return end_asked(api, id);
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// Holds each round's faults, reverts them, runs the next round, then judges.
pub(super) async fn run(api: Api, id: String, input: ExperimentInput, seed: u64, hold: Duration, wake: Arc<Notify>) {
    let Some(start) = api.experiments.current(&id) else {
        return;
    };
    let after = start.injections.iter().map(|i| i.after_seq).min().unwrap_or(1);
    let observer = Observer::start(&api, after);
    let before = api.own_tree().await.map(|t| select::flatten(&t)).ok();
    let open_tasks = inv::open_tasks(&api).await;
    let began = Instant::now();
    let every = input.every.unwrap_or_default();

    let mut ended: Option<End> = None;
    for round in 0..input.count {
        let starts = began + every * round;
        if round > 0 {
            // Until the round is due, then its injections.
            if let Some(end) = wait(&api, &id, &input, &observer, starts, false, &wake).await {
                ended = end;
                break;
            }
            let first = api.experiments.current(&id).map_or(0, |e| e.injections.len());
            let made = super::rounds::next_round(&api, &id, &input, seed, round, hold, first).await;
            api.experiments.update(&id, |e| e.injections.extend(made));
        }
        // Held until the round's hold ends (a one-round run ends at once when nothing
        // stays armed), or an end is asked.
        let asked = wait(&api, &id, &input, &observer, starts + hold, input.count == 1, &wake).await;
        let gates = lock(&api.experiments.records)
            .get_mut(&id)
            .map(|r| std::mem::take(&mut r.gates))
            .unwrap_or_default();
        for (gate, armed) in gates {
            api.experiments.revert(&id, &gate, armed).await;
        }
        if let Some(end) = asked {
            ended = end;
            break;
        }
    }
    api.experiments.update(&id, |e| e.state = ExperimentState::Recovering);

    // Each injection has until `recover_within` after its revert (or its injection, when
    // nothing stayed armed) to recover.
    let deadline = Instant::now() + input.recover_within;
    while judge(&api, &id, &input, &observer, true).await {
        tokio::time::sleep(TICK).await;
    }

    // The invariants, then the verdict.
    let wanted: Vec<String> = if input.invariants.is_empty() {
        super::INVARIANTS.iter().map(|s| s.to_string()).collect()
    } else {
        input.invariants.clone()
    };
    let Some(experiment) = api.experiments.current(&id) else {
        return;
    };
    let mut invariants = Vec::new();
    let mut unexpected = Vec::new();
    let events = observer.snapshot();
    for name in &wanted {
        let result = match name.as_str() {
            "TREE_RESTORED" => inv::tree_restored(&api, before.as_deref(), &experiment.injections, deadline).await,
            "RESTARTS_MATCH_STRATEGY" => {
                // What another experiment of this node hit meanwhile is that one's to judge.
                let theirs = api.experiments.touched_by_others(&id, experiment.started_at);
                let mine: Option<Vec<_>> = before
                    .as_ref()
                    .map(|b| b.iter().filter(|c| !theirs.contains(&c.id)).cloned().collect());
                let (result, extra) = inv::restarts_match(&experiment.injections, &events, mine.as_deref());
                unexpected.extend(extra);
                result
            }
            "NO_ESCALATION" => inv::no_escalation(&experiment.injections, &events, input.allow_escalation),
            "PEERS_UP" => inv::peers_up(&api, deadline).await,
            "TASKS_KEPT" => inv::tasks_kept(&api, &open_tasks, &events, deadline).await,
            "VMS_SINGLE" => inv::vms_single(&api).await,
            _ => continue,
        };
        // The checks speak in ids; the report is read by people.
        let mut result = result;
        if let Some(detail) = &result.detail {
            result.detail = Some(crate::names::name_ids(api.store(), detail).await);
        }
        if !result.ok {
            api.record(NewEvent::new(
                "INVARIANT_VIOLATED",
                Some(id.clone()),
                json!({ "invariant": result.name, "detail": result.detail }),
            ))
            .await;
        }
        invariants.push(result);
    }
    let injected = experiment
        .injections
        .iter()
        .filter(|i| !i.outcome.starts_with("NOT_INJECTED"))
        .count();
    let recovered = experiment
        .injections
        .iter()
        .filter(|i| i.outcome == "RECOVERED")
        .count();
    let not_injected = experiment
        .injections
        .iter()
        .find(|i| i.outcome.starts_with("NOT_INJECTED"));
    let broken: Vec<&InvariantResult> = invariants.iter().filter(|i| !i.ok).collect();
    let reason = if let Some(i) = not_injected {
        format!("injection {} was not made: {}", i.id, i.outcome)
    } else if recovered < injected {
        let late: Vec<&str> = experiment
            .injections
            .iter()
            .filter(|i| i.outcome != "RECOVERED")
            .map(|i| i.target.as_str())
            .collect();
        format!(
            "{} of {injected} targets did not recover within {} ms: {}",
            injected - recovered,
            input.recover_within.as_millis(),
            late.join(", ")
        )
    } else if let Some(b) = broken.first() {
        format!("invariant {} broken: {}", b.name, b.detail.clone().unwrap_or_default())
    } else {
        format!("every target recovered and {} invariants held", invariants.len())
    };
    let pass = not_injected.is_none() && recovered == injected && broken.is_empty();
    if ended.is_none() {
        // The kill switch pressed while it recovered ends it ABORTED too, as it says.
        ended = lock(&api.experiments.records)
            .get(&id)
            .and_then(|r| r.end.clone())
            .filter(|e| e.aborted);
    }
    let report = RecoveryReport {
        verdict: if pass { "PASS" } else { "FAIL" }.into(),
        reason: match &ended {
            Some(end) if end.aborted => format!("aborted ({}); {reason}", end.why),
            Some(end) => format!("{}; {reason}", end.why),
            None => reason,
        },
        injected,
        recovered,
        max_time_to_recover_ms: experiment.injections.iter().filter_map(|i| i.time_to_recover_ms).max(),
        invariants,
        unexpected,
    };
    let state = match (ended.as_ref().is_some_and(|e| e.aborted), pass) {
        (true, _) => ExperimentState::Aborted,
        (false, true) => ExperimentState::Passed,
        (false, false) => ExperimentState::Failed,
    };
    api.record(NewEvent::new(
        "EXPERIMENT_FINISHED",
        Some(id.clone()),
        json!({ "name": experiment.name, "state": format!("{state:?}").to_uppercase(), "verdict": report.verdict, "reason": report.reason }),
    ))
    .await;
    let finished = Utc::now();
    api.experiments.update(&id, |e| {
        e.report = Some(report);
        e.state = state;
        e.finished_at = Some(finished);
    });
}

pub(super) fn after(events: &[Arc<Event>], seq: u64) -> impl Iterator<Item = &Arc<Event>> {
    events.iter().filter(move |e| e.seq >= seq)
}

/// The injection's events so far: those about its target and the children it was expected
/// to touch; its detection is the first sign a supervisor or the agent saw it.
fn observe(inj: &mut Injection, events: &[Arc<Event>]) {
    let touched: BTreeSet<&str> = inj
        .expected
        .iter()
        .map(|e| e.id.as_str())
        .chain([inj.target.as_str()])
        .collect();
    inj.observed = after(events, inj.after_seq)
        .filter(|e| e.subject.as_deref().is_some_and(|s| touched.contains(s)))
        .filter(|e| !e.kind.starts_with("FAULT_") && e.kind != "RECOVERY_OBSERVED")
        .take(SHOWN)
        .cloned()
        .collect();
    if inj.time_to_detect_ms.is_none() {
        let detected = inj.observed.iter().find(|e| {
            e.subject.as_deref() == Some(inj.target.as_str())
                && [
                    "_FAILED",
                    "_UNHEALTHY",
                    "_UNRESPONSIVE",
                    "_RESTARTED",
                    "_UNREACHABLE",
                    "_MISSING",
                    "_LEFT_STOPPED",
                    "_SUSPECT",
                    "_DOWN",
                ]
                .iter()
                .any(|k| e.kind.ends_with(k))
        });
        if let Some(e) = detected {
            inj.time_to_detect_ms = Some(ms(inj.injected_at, e.at));
            if inj.effective_at.is_none() {
                inj.effective_at = Some(e.at);
            }
        }
    }
}

/// A crash recovered when every child expected to restart was started again.
fn crash_recovered(
    events: &[Arc<Event>],
    target: &str,
    expected: &[super::Expected],
    seq: u64,
) -> Option<DateTime<Utc>> {
    let mut restarted: Vec<&str> = expected
        .iter()
        .filter(|e| e.effect == "RESTART")
        .map(|e| e.id.as_str())
        .collect();
    if restarted.is_empty() {
        restarted.push(target);
    }
    let mut last: Option<DateTime<Utc>> = None;
    for id in restarted {
        let at = after(events, seq)
            .find(|e| {
                e.subject.as_deref() == Some(id) && (e.kind.ends_with("_RESTARTED") || e.kind.ends_with("_STARTED"))
            })?
            .at;
        last = Some(last.map_or(at, |l| l.max(at)));
    }
    last
}

/// Judges the injections that can be judged now: those with nothing armed, or reverted.
/// Each recovered one is marked (with RECOVERY_OBSERVED), each past its deadline marked
/// NOT_RECOVERED; with `last`, the ones still armed count as reverted now. Whether any is
/// still waiting.
async fn judge(api: &Api, id: &str, input: &ExperimentInput, observer: &Observer, last: bool) -> bool {
    let events = observer.snapshot();
    let now = Utc::now();
    let mut waiting = false;
    let mut ready = Vec::new();
    api.experiments.update(id, |e| {
        for inj in e
            .injections
            .iter_mut()
            .filter(|i| i.outcome == "PENDING" || i.outcome == "ARMED")
        {
            observe(inj, &events);
            waiting = true;
            if inj.outcome == "PENDING" || inj.reverted_at.is_some() || last {
                ready.push(inj.clone());
            }
        }
    });
    for inj in ready {
        let (target, action) = (&inj.target, inj.action);
        let at = match action {
            FaultAction::Crash => inj
                .recovered_at
                .or_else(|| crash_recovered(&events, target, &inj.expected, inj.after_seq)),
            // A killed process is replaced; a held loop or a stopped process goes on.
            FaultAction::ProcessKill => inject::agent_recovered(api, target, &inj.groups).await.then_some(now),
            // A held loop, a stopped process or a faulty link goes on.
            FaultAction::Hang if inj.kind != "AGENT" => {
                let held = select::Candidate {
                    id: inj.target.clone(),
                    kind: inj.kind.clone(),
                    owner: inj.supervisor.clone(),
                    state: String::new(),
                    path: Vec::new(),
                };
                inject::child_recovered(api, &held).await.then_some(now)
            }
            FaultAction::Hang | FaultAction::ProcessPause | FaultAction::MessageDelay | FaultAction::MessageDrop => {
                inject::agent_recovered(api, target, &[]).await.then_some(now)
            }
            FaultAction::HostDisconnect | FaultAction::HostHang => {
                inject::host_recovered(api, target).await.then_some(now)
            }
            FaultAction::DomainDestroy | FaultAction::DomainUndefine => {
                inject::vm_recovered(api, &inj, &events).await.then_some(now)
            }
            FaultAction::Partition => {
                (rejoined(&events, &inj) && inject::nodes_up(api, &inj.nodes).await).then_some(now)
            }
            // Recorded through the target's store: the write is the recovery.
            FaultAction::StoreReject | FaultAction::StoreSlowCommit | FaultAction::DiskFull => {
                inject::store_recovered(api, target, id, &inj.id).await
            }
        };
        if let Some(at) = at {
            api.experiments.update(id, |e| {
                if let Some(i) = e.injections.iter_mut().find(|i| i.id == inj.id) {
                    i.recovered_at = Some(at);
                    i.time_to_recover_ms = Some(ms(i.injected_at, at));
                    i.outcome = "RECOVERED".into();
                }
            });
            if !action.reaches_store() {
                api.record(NewEvent::new(
                    "RECOVERY_OBSERVED",
                    Some(target.clone()),
                    json!({ "experiment": id, "injection": inj.id }),
                ))
                .await;
            }
            continue;
        }
        let since = inj.reverted_at.unwrap_or(inj.injected_at).max(inj.injected_at);
        let due = since + chrono::Duration::from_std(input.recover_within).unwrap_or(chrono::Duration::MAX);
        if Utc::now() >= due {
            api.experiments.update(id, |e| {
                if let Some(i) = e.injections.iter_mut().find(|i| i.id == inj.id) {
                    i.outcome = "NOT_RECOVERED".into();
                }
            });
        }
    }
    waiting
}

/// Every node of a partition that was declared down has taken up its work again since:
/// UP alone is not enough, its writes wait until it has fenced them (NODE_FENCED).
fn rejoined(events: &[Arc<Event>], inj: &Injection) -> bool {
    inj.nodes.iter().all(|node| {
        let about = |kind: &str| {
            after(events, inj.after_seq)
                .filter(|e| e.kind == kind && e.subject.as_deref() == Some(node.as_str()))
                .map(|e| e.seq)
                .last()
        };
        match about("MEMBER_DOWN") {
            None => true,
            Some(down) => about("NODE_FENCED").is_some_and(|fenced| fenced > down),
        }
    })
}

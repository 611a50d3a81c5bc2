//! A short history of the series the dashboard's overview draws, kept by the node so a chart
//! is right when a page opens (`history`): the cluster's tasks ended and failed per second
//! and their latency from queued to ended (p50, p99), this node's agents by state, and its
//! own CPU and memory. One sample each `history_interval_ms` (10 s by default), the last
//! [`KEPT`] kept: an hour at the default, a few kilobytes. Prometheus (`/metrics`) stays the
//! long-term store.
//!
//! The tasks are counted from the events this node applies ([`tasks`]), as the overview's
//! live figures are, so both count the whole cluster's on any member; the agents and the
//! node's usage are read from its own metrics (the text `/metrics` serves) and
//! `/proc/self/stat`.

pub mod agents;
pub mod tasks;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::PrometheusHandle;
use troupe_runtime::store::{Change, Projection, StoreError, View};

/// Samples kept.
pub const KEPT: usize = 360;

/// The series at one time.
#[derive(Clone, Debug, PartialEq, async_graphql::SimpleObject)]
#[graphql(name = "HistorySample")]
pub struct Sample {
    pub at: DateTime<Utc>,
    /// The cluster's tasks that succeeded since the sample before (their events as this
    /// node applied them), and per second.
    pub succeeded: i32,
    pub succeeded_per_sec: f64,
    /// The cluster's tasks that ended otherwise since the sample before.
    pub failed: i32,
    /// Tasks that ended otherwise (failed, dead, expired, cancelled…) per second.
    pub failed_per_sec: f64,
    /// Of the tasks that ended since the sample before and were queued while this node
    /// listened (none: null), from queued to ended, in ms (within 5 %).
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// This node's agents by state (`running`, `failed`, …), at the time.
    pub agents: Vec<StateCount>,
    /// The node's process: CPU (1.0 is one core busy) since the sample before, and memory.
    pub cpu_cores: f64,
    pub rss_bytes: crate::schema::Int64,
}

#[derive(Clone, Debug, Default, PartialEq, async_graphql::SimpleObject)]
pub struct StateCount {
    pub state: String,
    pub count: i32,
}

/// What one render of the metrics holds of interest, as running totals.
#[derive(Clone, Debug, Default, PartialEq)]
struct Totals {
    agents: BTreeMap<String, f64>,
    cpu_seconds: f64,
}

/// The history: shared by the schema, fed by its own sampling task while the schema lives.
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
    /// The cluster's tasks since the last sample.
    tasks: Mutex<tasks::Tally>,
    /// Each running agent's CPU and memory.
    pub agents: agents::AgentHistory,
    interval: Duration,
}

impl History {
    /// Samples `metrics`, and the agents `api` observes, every `interval` from now on, for
    /// as long as the history is held.
    pub fn start(metrics: PrometheusHandle, api: troupe_actors::Api, interval: Duration) -> Arc<Self> {
        let history = Arc::new(Self::new(interval));
        tokio::spawn(follow_tasks(Arc::downgrade(&history), api.store().clone()));
        tokio::spawn(sample(Arc::downgrade(&history), metrics, Some(api), interval));
        history
    }

    fn new(interval: Duration) -> Self {
        Self {
            samples: Mutex::new(VecDeque::with_capacity(KEPT)),
            tasks: Mutex::new(tasks::Tally::default()),
            agents: agents::AgentHistory::default(),
            interval,
        }
    }

    /// How far back the history reaches: [`KEPT`] samples.
    fn window(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.interval * KEPT as u32).unwrap_or(chrono::Duration::hours(1))
    }

    /// The samples of the last `minutes`, oldest first.
    pub fn since(&self, minutes: u32) -> Vec<Sample> {
        let from = troupe_runtime::clock::now() - chrono::Duration::minutes(i64::from(minutes));
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.iter().filter(|s| s.at >= from).cloned().collect()
    }

    fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }
}

/// Tallies the tasks' events as this node applies them, from now on (a projection: the
/// state machine hands it each write's events as it applies them). Followed as a stream of
/// events, every entry woke a task on the node's workers; a follower of three spent a tenth
/// of its context switches on it.
async fn follow_tasks(history: Weak<History>, store: troupe_runtime::store::Store) {
    if let Err(e) = store.project(Arc::new(TaskTally(history))).await {
        tracing::warn!(error = %e, "the history will not count tasks: its tally could not follow the store");
    }
}

/// The history's tally of the tasks, as the state machine drives it.
struct TaskTally(Weak<History>);

impl Projection for TaskTally {
    fn name(&self) -> &'static str {
        "history of tasks"
    }

    /// Nothing to read: the tally counts the events applied from now on, and a snapshot's
    /// (whose writes come with no event) are not among them, as a node's that was away.
    fn rebuild(&self, _: &View<'_>) -> Result<(), StoreError> {
        Ok(())
    }

    fn apply(&self, change: &Change<'_>) -> Result<(), StoreError> {
        if let Some(history) = self.0.upgrade() {
            let mut tally = history.tasks.lock().unwrap_or_else(|p| p.into_inner());
            change.events.iter().for_each(|e| tally.add(e));
        }
        Ok(())
    }

    /// The history it counts for went with its gateway.
    fn gone(&self) -> bool {
        self.0.strong_count() == 0
    }
}

/// The sampling task: ends once the history is dropped (the gateway stopped).
async fn sample(
    history: Weak<History>,
    metrics: PrometheusHandle,
    api: Option<troupe_actors::Api>,
    interval: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut before: Option<(Totals, tokio::time::Instant)> = None;
    loop {
        ticks.tick().await;
        let Some(history) = history.upgrade() else { return };
        if let Some(api) = &api {
            let observed = api.agents().observed_everywhere().await;
            let forget_before = troupe_runtime::clock::now() - history.window();
            history.agents.record(observed, forget_before);
        }
        let mut now = read(&metrics.render());
        let (cpu, rss) = troupe_actors::agent::own_usage().unwrap_or_default();
        now.cpu_seconds = cpu;
        let at = tokio::time::Instant::now();
        // From the next sample on, an end counts if it happened since this one, less a slack
        // for the members' clocks and a busy member's apply (an interval, at least 10 s).
        let slack =
            chrono::Duration::from_std(interval.max(Duration::from_secs(10))).unwrap_or(chrono::Duration::seconds(10));
        let ended = history
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(troupe_runtime::clock::now(), slack);
        if let Some((last, then)) = &before {
            history.push(between(last, &now, at.duration_since(*then), rss, &ended));
        }
        before = Some((now, at));
    }
}

/// The sample of what happened between two totals `elapsed` apart, in which `ended` ended.
fn between(last: &Totals, now: &Totals, elapsed: Duration, rss: u64, ended: &tasks::Ended) -> Sample {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let per_sec = |n: f64| (n.max(0.0) / secs * 1000.0).round() / 1000.0;
    Sample {
        at: troupe_runtime::clock::now(),
        succeeded: ended.succeeded as i32,
        succeeded_per_sec: per_sec(ended.succeeded as f64),
        failed: ended.otherwise as i32,
        failed_per_sec: per_sec(ended.otherwise as f64),
        latency_p50_ms: ended.p50_ms,
        latency_p99_ms: ended.p99_ms,
        agents: now
            .agents
            .iter()
            .filter(|(_, n)| **n > 0.0)
            .map(|(state, n)| StateCount {
                state: state.clone(),
                count: *n as i32,
            })
            .collect(),
        cpu_cores: per_sec(now.cpu_seconds - last.cpu_seconds),
        rss_bytes: crate::schema::Int64(rss as i64),
    }
}

/// The totals a render of the metrics (Prometheus' text format) holds.
fn read(text: &str) -> Totals {
    let mut totals = Totals::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let label = |key: &str| {
            let from = labels.find(&format!("{key}=\""))? + key.len() + 2;
            labels[from..].split('"').next()
        };
        if let ("troupe_agents", Some(state)) = (name, label("state")) {
            *totals.agents.entry(state.to_owned()).or_default() += value;
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# TYPE troupe_agents gauge
troupe_tasks_total{outcome="succeeded"} 10
troupe_agents{state="running"} 3
troupe_agents{state="failed"} 0
"#;

    const AFTER: &str = r#"troupe_tasks_total{outcome="succeeded"} 110
troupe_agents{state="running"} 2
troupe_agents{state="failed"} 1
"#;

    #[test]
    fn a_sample_is_the_rates_and_latencies_of_what_ended_between_two_ticks() {
        let (mut last, mut now) = (read(BEFORE), read(AFTER));
        (last.cpu_seconds, now.cpu_seconds) = (1.0, 6.0);
        let ended = tasks::Ended {
            succeeded: 100,
            otherwise: 4,
            p50_ms: Some(10.0),
            p99_ms: Some(12.5),
        };
        let s = between(&last, &now, Duration::from_secs(10), 4096, &ended);
        assert_eq!((s.succeeded_per_sec, s.failed_per_sec), (10.0, 0.4));
        assert_eq!((s.succeeded, s.failed), (100, 4));
        assert_eq!((s.latency_p50_ms, s.latency_p99_ms), (Some(10.0), Some(12.5)));
        assert_eq!(s.cpu_cores, 0.5);
        let agents: Vec<_> = s.agents.iter().map(|a| (a.state.as_str(), a.count)).collect();
        assert_eq!(agents, [("failed", 1), ("running", 2)]);
        // Nothing ended: no latency.
        let idle = between(&now, &now, Duration::from_secs(10), 0, &tasks::Ended::default());
        assert_eq!((idle.latency_p50_ms, idle.succeeded_per_sec), (None, 0.0));
    }

    #[tokio::test]
    async fn the_history_counts_the_tasks_ended_as_the_store_applies_their_events() {
        use troupe_runtime::events::NewEvent;
        use troupe_runtime::store::{Batch, Store};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
        let history = Arc::new(History::new(Duration::from_secs(10)));
        follow_tasks(Arc::downgrade(&history), store.clone()).await;
        let event = |kind: &str, task: &str| NewEvent::new(kind, Some(task.into()), serde_json::json!({}));
        store
            .write(
                Batch::new()
                    .event(event("TASK_QUEUED", "t1"))
                    .event(event("TASK_QUEUED", "t2")),
            )
            .await
            .unwrap();
        store
            .write(Batch::new().event(event("TASK_SUCCEEDED", "t1")))
            .await
            .unwrap();
        store
            .write(
                Batch::new()
                    .event(event("TASK_FAILED", "t2"))
                    .event(event("AGENT_STARTED", "a1")),
            )
            .await
            .unwrap();
        // Counted by the time each write is answered: the tally follows the apply.
        let ended = history
            .tasks
            .lock()
            .unwrap()
            .take(troupe_runtime::clock::now(), chrono::Duration::seconds(10));
        assert_eq!((ended.succeeded, ended.otherwise), (1, 1));
        assert!(ended.p50_ms.is_some(), "each end has its latency from its queueing");
    }

    #[tokio::test]
    async fn the_history_keeps_its_last_samples_and_stops_with_its_holder() {
        let history = Arc::new(History::new(Duration::from_secs(10)));
        for _ in 0..KEPT + 5 {
            history.push(between(
                &Totals::default(),
                &Totals::default(),
                Duration::from_secs(10),
                0,
                &tasks::Ended::default(),
            ));
        }
        assert_eq!(history.since(60).len(), KEPT);
        let weak = Arc::downgrade(&history);
        drop(history);
        // The sampler returns at its next tick once nobody holds the history.
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle();
        let ended = tokio::time::timeout(
            Duration::from_secs(60),
            sample(weak, handle, None, Duration::from_millis(10)),
        )
        .await;
        assert!(ended.is_ok());
    }
}

//! A short history of the series the dashboard's overview draws, kept by the node so a chart
//! is right when a page opens (`history`): tasks ended and failed per second, the latency of
//! the attempts that ended (p50, p99), agents by state, and the node's own CPU and memory.
//! One sample each `history_interval_ms` (10 s by default), the last [`KEPT`] kept: an hour
//! at the default, a few kilobytes. Prometheus (`/metrics`) stays the long-term store.
//!
//! Each sample is read from the node's own metrics (the text `/metrics` serves) and
//! `/proc/self/stat`, so it counts exactly what Prometheus would, and costs one render a tick.

pub mod agents;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::PrometheusHandle;

/// Samples kept.
pub const KEPT: usize = 360;

/// The node's series at one time.
#[derive(Clone, Debug, PartialEq, async_graphql::SimpleObject)]
#[graphql(name = "HistorySample")]
pub struct Sample {
    pub at: DateTime<Utc>,
    /// Tasks that succeeded since the sample before, and per second.
    pub succeeded: i32,
    pub succeeded_per_sec: f64,
    /// Tasks that ended otherwise since the sample before.
    pub failed: i32,
    /// Tasks that ended otherwise (failed, dead, expired, cancelled…) per second.
    pub failed_per_sec: f64,
    /// Of the attempts that ended since the sample before (none ended: null), in ms, as
    /// the duration histogram's buckets bound them (its largest bound, 60 s, when past it).
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
    succeeded: f64,
    ended_otherwise: f64,
    /// The task duration histogram: (upper bound in seconds, cumulative count).
    buckets: Vec<(f64, f64)>,
    agents: BTreeMap<String, f64>,
    cpu_seconds: f64,
}

/// The history: shared by the schema, fed by its own sampling task while the schema lives.
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
    /// Each running agent's CPU and memory.
    pub agents: agents::AgentHistory,
    interval: Duration,
}

impl History {
    /// Samples `metrics`, and the agents `api` observes, every `interval` from now on, for
    /// as long as the history is held.
    pub fn start(metrics: PrometheusHandle, api: troupe_actors::Api, interval: Duration) -> Arc<Self> {
        let history = Arc::new(Self::new(interval));
        tokio::spawn(sample(Arc::downgrade(&history), metrics, Some(api), interval));
        history
    }

    fn new(interval: Duration) -> Self {
        Self {
            samples: Mutex::new(VecDeque::with_capacity(KEPT)),
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
        if let Some((last, then)) = &before {
            history.push(between(last, &now, at.duration_since(*then), rss));
        }
        before = Some((now, at));
    }
}

/// The sample of what happened between two totals `elapsed` apart.
fn between(last: &Totals, now: &Totals, elapsed: Duration, rss: u64) -> Sample {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let rate = |a: f64, b: f64| ((b - a).max(0.0) / secs * 1000.0).round() / 1000.0;
    // The attempts that ended meanwhile, by bucket.
    let ended: Vec<(f64, f64)> = now
        .buckets
        .iter()
        .map(|(le, count)| {
            let before = last.buckets.iter().find(|(l, _)| l == le).map_or(0.0, |(_, c)| *c);
            (*le, (count - before).max(0.0))
        })
        .collect();
    // The largest finite bound stands for what lies past it.
    let largest = ended
        .iter()
        .map(|(le, _)| *le)
        .filter(|le| le.is_finite())
        .fold(0.0, f64::max);
    let quantile = |q: f64| {
        let total = ended.last().map_or(0.0, |(_, c)| *c);
        (total > 0.0).then(|| {
            let bound = ended
                .iter()
                .find(|(_, c)| *c >= q * total)
                .map_or(largest, |(le, _)| *le);
            bound.min(largest) * 1000.0
        })
    };
    Sample {
        at: troupe_runtime::clock::now(),
        succeeded: (now.succeeded - last.succeeded).max(0.0) as i32,
        succeeded_per_sec: rate(last.succeeded, now.succeeded),
        failed: (now.ended_otherwise - last.ended_otherwise).max(0.0) as i32,
        failed_per_sec: rate(last.ended_otherwise, now.ended_otherwise),
        latency_p50_ms: quantile(0.5),
        latency_p99_ms: quantile(0.99),
        agents: now
            .agents
            .iter()
            .filter(|(_, n)| **n > 0.0)
            .map(|(state, n)| StateCount {
                state: state.clone(),
                count: *n as i32,
            })
            .collect(),
        cpu_cores: rate(last.cpu_seconds, now.cpu_seconds),
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
        match name {
            "troupe_tasks_total" => match label("outcome") {
                Some("succeeded") => totals.succeeded += value,
                // A retry is an attempt, not an end.
                Some("retried") | None => {}
                Some(_) => totals.ended_otherwise += value,
            },
            "troupe_task_duration_seconds_bucket" => {
                let le = match label("le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(le) => le.parse().unwrap_or(f64::INFINITY),
                    None => continue,
                };
                totals.buckets.push((le, value));
            }
            "troupe_agents" => {
                if let Some(state) = label("state") {
                    *totals.agents.entry(state.to_owned()).or_default() += value;
                }
            }
            _ => {}
        }
    }
    totals.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# TYPE troupe_tasks_total counter
troupe_tasks_total{outcome="succeeded"} 10
troupe_tasks_total{outcome="failed"} 1
troupe_tasks_total{outcome="retried"} 5
troupe_task_duration_seconds_bucket{le="0.001"} 2
troupe_task_duration_seconds_bucket{le="0.01"} 8
troupe_task_duration_seconds_bucket{le="+Inf"} 11
troupe_agents{state="running"} 3
troupe_agents{state="failed"} 0
"#;

    const AFTER: &str = r#"troupe_tasks_total{outcome="succeeded"} 110
troupe_tasks_total{outcome="failed"} 3
troupe_tasks_total{outcome="dead"} 2
troupe_tasks_total{outcome="retried"} 50
troupe_task_duration_seconds_bucket{le="0.001"} 52
troupe_task_duration_seconds_bucket{le="0.01"} 106
troupe_task_duration_seconds_bucket{le="+Inf"} 115
troupe_agents{state="running"} 2
troupe_agents{state="failed"} 1
"#;

    #[test]
    fn a_sample_is_the_rates_and_latencies_of_what_ended_between_two_renders() {
        let (mut last, mut now) = (read(BEFORE), read(AFTER));
        (last.cpu_seconds, now.cpu_seconds) = (1.0, 6.0);
        let s = between(&last, &now, Duration::from_secs(10), 4096);
        assert_eq!((s.succeeded_per_sec, s.failed_per_sec), (10.0, 0.4));
        assert_eq!((s.succeeded, s.failed), (100, 4));
        // 104 ended: 50 within 1 ms, 98 within 10 ms, the rest above.
        assert_eq!((s.latency_p50_ms, s.latency_p99_ms), (Some(10.0), Some(10.0)));
        assert_eq!(s.cpu_cores, 0.5);
        let agents: Vec<_> = s.agents.iter().map(|a| (a.state.as_str(), a.count)).collect();
        assert_eq!(agents, [("failed", 1), ("running", 2)]);
        // Nothing ended: no latency.
        let idle = between(&now, &now, Duration::from_secs(10), 0);
        assert_eq!((idle.latency_p50_ms, idle.succeeded_per_sec), (None, 0.0));
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

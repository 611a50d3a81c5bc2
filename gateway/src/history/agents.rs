//! Each running agent's CPU and memory over the last hour, for the charts of an agent's page
//! (`Agent.usageHistory`). The node's history sampler records, at each of its ticks, what
//! every agent of the cluster was last observed using: this node's agents asked then, a
//! peer's from its last heartbeat report (so a peer is never asked, and a report heard twice
//! is one point). Only agents that run processes have usage; an agent unseen for longer than
//! the window is forgotten, so memory follows the agents that run: at most [`KEPT`] points
//! (24 bytes each, about 9 kB an agent at the defaults).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use troupe_actors::agent::AgentLive;

use super::KEPT;

/// An agent's usage at one time.
#[derive(Clone, Debug, PartialEq, async_graphql::SimpleObject)]
#[graphql(name = "AgentUsageSample")]
pub struct Point {
    /// When it was observed, on the node that runs the agent.
    pub at: DateTime<Utc>,
    /// CPU of its processes since the point before (1.0 is one core busy); null for the
    /// first point, or when its processes were replaced meanwhile (their CPU time restarted).
    pub cpu_cores: Option<f64>,
    /// Resident memory of its processes.
    pub rss_bytes: crate::schema::Int64,
}

#[derive(Default)]
struct Series {
    points: VecDeque<Point>,
    /// The CPU seconds of the last point, for the next one's rate.
    cpu_seconds: f64,
}

/// Every agent's series, by id.
#[derive(Default)]
pub struct AgentHistory {
    series: Mutex<HashMap<String, Series>>,
}

impl AgentHistory {
    /// Takes one observation of the agents in; forgets those last seen before `forget_before`.
    pub fn record(&self, observed: Vec<(String, AgentLive)>, forget_before: DateTime<Utc>) {
        let mut all = self.series.lock().unwrap_or_else(|p| p.into_inner());
        for (id, live) in observed {
            let (Some(usage), Some(at)) = (live.usage, live.seen_at) else {
                continue;
            };
            let series = all.entry(id).or_default();
            let last = series.points.back().map(|p| p.at);
            // A peer's report heard again since the last tick: nothing new.
            if last.is_some_and(|last| at <= last) {
                continue;
            }
            let cpu_cores = last.and_then(|last| {
                let secs = (at - last).num_milliseconds() as f64 / 1000.0;
                let spent = usage.cpu_seconds - series.cpu_seconds;
                (secs > 0.0 && spent >= 0.0).then(|| (spent / secs * 1000.0).round() / 1000.0)
            });
            if series.points.len() == KEPT {
                series.points.pop_front();
            }
            series.points.push_back(Point {
                at,
                cpu_cores,
                rss_bytes: crate::schema::Int64(usage.rss_bytes as i64),
            });
            series.cpu_seconds = usage.cpu_seconds;
        }
        all.retain(|_, s| s.points.back().is_some_and(|p| p.at >= forget_before));
    }

    /// Agent `id`'s points since `from`, oldest first.
    pub fn of(&self, id: &str, from: DateTime<Utc>) -> Vec<Point> {
        let all = self.series.lock().unwrap_or_else(|p| p.into_inner());
        all.get(id)
            .map(|s| s.points.iter().filter(|p| p.at >= from).cloned().collect())
            .unwrap_or_default()
    }

    #[cfg(test)]
    fn agents(&self) -> usize {
        self.series.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe_actors::agent::Usage;

    fn seen(id: &str, secs: i64, cpu: f64, rss: u64) -> (String, AgentLive) {
        let at = DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap();
        let live = AgentLive {
            usage: Some(Usage {
                rss_bytes: rss,
                cpu_seconds: cpu,
                processes: 1,
            }),
            seen_at: Some(at),
            ..Default::default()
        };
        (id.to_owned(), live)
    }

    #[test]
    fn cpu_is_the_rate_between_points_and_a_report_heard_twice_is_one_point() {
        let h = AgentHistory::default();
        let long_ago = DateTime::from_timestamp(0, 0).unwrap();
        h.record(vec![seen("a", 0, 1.0, 100)], long_ago);
        h.record(vec![seen("a", 10, 6.0, 200)], long_ago);
        h.record(vec![seen("a", 10, 6.0, 200)], long_ago);
        // Its processes were replaced: their CPU time started again.
        h.record(vec![seen("a", 20, 0.5, 300)], long_ago);
        let points = h.of("a", long_ago);
        let cpu: Vec<_> = points.iter().map(|p| p.cpu_cores).collect();
        assert_eq!(cpu, [None, Some(0.5), None]);
        assert_eq!(points[2].rss_bytes.0, 300);
        // Without usage (no process) nothing is kept.
        h.record(vec![("b".to_owned(), AgentLive::default())], long_ago);
        assert!(h.of("b", long_ago).is_empty());
    }

    #[test]
    fn each_series_is_bounded_and_an_agent_unseen_for_the_window_is_forgotten() {
        let h = AgentHistory::default();
        let long_ago = DateTime::from_timestamp(0, 0).unwrap();
        for i in 0..(KEPT as i64 + 10) {
            h.record(vec![seen("a", i * 10, i as f64, 1)], long_ago);
        }
        assert_eq!(h.of("a", long_ago).len(), KEPT);
        h.record(
            vec![seen("b", 100_000, 0.0, 1)],
            DateTime::from_timestamp(1_700_000_000 + 50_000, 0).unwrap(),
        );
        assert_eq!(h.agents(), 1, "a, last seen long before, is forgotten");
    }
}

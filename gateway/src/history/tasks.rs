//! The cluster's tasks as the events this node applies tell them (every member applies every
//! event): each end counted, and its latency from its `TASK_QUEUED` to its end. The
//! overview's live figures come from the same events, so the history they continue from
//! counts what they count, on whichever member the page is open.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};
use troupe_runtime::events::Event;

/// The kinds the tally reads: a task queued, and its ends.
pub const KINDS: &[&str] = &[
    "TASK_QUEUED",
    "TASK_SUCCEEDED",
    "TASK_FAILED",
    "TASK_DEAD",
    "TASK_CANCELLED",
    "TASK_EXPIRED",
    "TASK_DEPENDENCY_FAILED",
];

/// Open tasks whose queueing time is kept, at most: the oldest is forgotten first (its end
/// is still counted, without a latency).
const OPEN_KEPT: usize = 100_000;

/// Latencies are counted in buckets 5 % wide from 0.1 ms, the last one open-ended.
const BUCKETS: usize = 400;
const FIRST_MS: f64 = 0.1;
const RATIO: f64 = 1.05;

/// What ended since the last [`Tally::take`].
#[derive(Debug, Default, PartialEq)]
pub struct Ended {
    pub succeeded: u64,
    pub otherwise: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

pub struct Tally {
    /// Ends older than this are not counted: events this node applies late (catching up
    /// after a restart or a cut) ended long before, not in the interval being sampled.
    counted_from: DateTime<Utc>,
    queued: HashMap<String, DateTime<Utc>>,
    order: VecDeque<String>,
    succeeded: u64,
    otherwise: u64,
    latencies: Vec<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            counted_from: troupe_runtime::clock::now(),
            queued: HashMap::new(),
            order: VecDeque::new(),
            succeeded: 0,
            otherwise: 0,
            latencies: vec![0; BUCKETS],
        }
    }
}

impl Tally {
    pub fn add(&mut self, event: &Event) {
        let Some(task) = &event.subject else { return };
        match event.kind.as_str() {
            "TASK_QUEUED" => {
                if self.queued.len() >= OPEN_KEPT {
                    while let Some(oldest) = self.order.pop_front() {
                        if self.queued.remove(&oldest).is_some() {
                            break;
                        }
                    }
                }
                if self.queued.insert(task.clone(), event.at).is_none() {
                    self.order.push_back(task.clone());
                }
            }
            kind if KINDS.contains(&kind) => {
                if event.at < self.counted_from {
                    self.queued.remove(task);
                    return;
                }
                match kind {
                    "TASK_SUCCEEDED" => self.succeeded += 1,
                    _ => self.otherwise += 1,
                }
                if let Some(queued) = self.queued.remove(task) {
                    let ms = (event.at - queued).num_microseconds().unwrap_or(i64::MAX).max(0) as f64 / 1000.0;
                    self.latencies[bucket(ms)] += 1;
                }
                // An ended task's id stays in the order until then: dropped now and then.
                if self.order.len() > 2 * OPEN_KEPT {
                    let queued = &self.queued;
                    self.order.retain(|t| queued.contains_key(t));
                }
            }
            _ => {}
        }
    }

    /// What ended since the last call, and the quantiles of its latencies (null when none
    /// had a latency); the counts start again from zero, and count ends from `now` less
    /// `slack` (the members' clocks and the time an event takes to be applied here).
    pub fn take(&mut self, now: DateTime<Utc>, slack: chrono::Duration) -> Ended {
        self.counted_from = now - slack;
        let total: u64 = self.latencies.iter().sum();
        let quantile = |q: f64| {
            (total > 0).then(|| {
                let mut seen = 0;
                let at = self
                    .latencies
                    .iter()
                    .position(|n| {
                        seen += n;
                        seen as f64 >= q * total as f64
                    })
                    .unwrap_or(BUCKETS - 1);
                upper_ms(at)
            })
        };
        let ended = Ended {
            succeeded: self.succeeded,
            otherwise: self.otherwise,
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
        };
        self.succeeded = 0;
        self.otherwise = 0;
        self.latencies.iter_mut().for_each(|n| *n = 0);
        ended
    }
}

/// The bucket of a latency of `ms`.
fn bucket(ms: f64) -> usize {
    if ms <= FIRST_MS {
        return 0;
    }
    ((ms / FIRST_MS).ln() / RATIO.ln()).ceil().min((BUCKETS - 1) as f64) as usize
}

/// The upper bound of bucket `i`, in ms (rounded to a hundredth).
fn upper_ms(i: usize) -> f64 {
    (FIRST_MS * RATIO.powi(i as i32) * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, task: &str, at_ms: i64) -> Event {
        Event {
            seq: 0,
            kind: kind.into(),
            subject: Some(task.into()),
            data: serde_json::Value::Null,
            at: DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::milliseconds(at_ms),
        }
    }

    fn take(tally: &mut Tally) -> Ended {
        tally.take(DateTime::<Utc>::UNIX_EPOCH, chrono::Duration::zero())
    }

    fn fresh() -> Tally {
        Tally {
            counted_from: DateTime::<Utc>::UNIX_EPOCH,
            ..Tally::default()
        }
    }

    #[test]
    fn ends_are_counted_with_their_latency_from_their_queueing() {
        let mut tally = fresh();
        for i in 0..100 {
            tally.add(&event("TASK_QUEUED", &format!("t{i}"), 0));
        }
        // 98 end within 10 ms, two take a second; one of those fails.
        for i in 0..98 {
            tally.add(&event("TASK_STARTED", &format!("t{i}"), 1));
            tally.add(&event("TASK_SUCCEEDED", &format!("t{i}"), 10));
        }
        tally.add(&event("TASK_SUCCEEDED", "t98", 1000));
        tally.add(&event("TASK_DEAD", "t99", 1000));
        // Queued before the node listened: counted, no latency.
        tally.add(&event("TASK_CANCELLED", "earlier", 1000));
        let ended = take(&mut tally);
        assert_eq!((ended.succeeded, ended.otherwise), (99, 2));
        let (p50, p99) = (ended.p50_ms.unwrap(), ended.p99_ms.unwrap());
        assert!((10.0..10.6).contains(&p50), "{p50}");
        assert!((1000.0..1050.0).contains(&p99), "{p99}");
        // Counted once: the next sample starts from nothing.
        assert_eq!(take(&mut tally), Ended::default());
    }

    #[test]
    fn an_end_applied_late_is_not_counted_as_if_it_happened_now() {
        let mut tally = fresh();
        let at = |ms| DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::milliseconds(ms);
        tally.take(at(60_000), chrono::Duration::seconds(10));
        // Caught up after a restart: ended a minute ago.
        tally.add(&event("TASK_QUEUED", "old", 1_000));
        tally.add(&event("TASK_SUCCEEDED", "old", 2_000));
        // Within the slack: counted.
        tally.add(&event("TASK_QUEUED", "new", 55_000));
        tally.add(&event("TASK_SUCCEEDED", "new", 55_500));
        let ended = tally.take(at(70_000), chrono::Duration::seconds(10));
        assert_eq!((ended.succeeded, ended.otherwise), (1, 0));
        assert!(tally.queued.is_empty());
    }

    #[test]
    fn the_open_tasks_kept_are_bounded() {
        let mut tally = fresh();
        for i in 0..OPEN_KEPT + 10 {
            tally.add(&event("TASK_QUEUED", &format!("t{i}"), 0));
        }
        assert_eq!(tally.queued.len(), OPEN_KEPT);
        // The oldest were forgotten: their ends have no latency.
        tally.add(&event("TASK_SUCCEEDED", "t0", 5));
        assert_eq!(take(&mut tally).p50_ms, None);
        tally.add(&event("TASK_SUCCEEDED", &format!("t{}", OPEN_KEPT + 9), 5));
        assert!(take(&mut tally).p50_ms.is_some());
    }
}

//! The restart decision, apart from any actor: which children to restart, after how long, or
//! whether to give up and escalate.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Which children restart when one exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    OneForOne,
    OneForAll,
    RestForOne,
}

/// When a child is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always.
    Permanent,
    /// Only after a failure, not after a normal exit.
    Transient,
    /// Never.
    Temporary,
}

/// How a child exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Normal,
    Failed,
}

/// The most restarts a supervisor makes within a window before it escalates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    pub max_restarts: u32,
    pub window: Duration,
}

/// Delay before a restart: `base * 2^(n-1)` for the n-th restart in the window, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn delay(&self, nth: u32) -> Duration {
        let factor = 1u32.checked_shl(nth.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// What a supervisor does about an exited child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Forget the child.
    Remove,
    /// Stop `stop` (running siblings, in reverse start order), wait `delay`, then start
    /// `start` in start order. `restarts` counts restarts within the window, this one included.
    Restart {
        stop: Vec<String>,
        start: Vec<String>,
        delay: Duration,
        restarts: u32,
    },
    /// Too many restarts within the window: fail and let the parent decide.
    Escalate { restarts: u32 },
}

/// A supervisor's restart history and policy.
#[derive(Debug, Clone)]
pub struct RestartLadder {
    pub strategy: Strategy,
    pub intensity: Intensity,
    pub backoff: Backoff,
    restarts: VecDeque<Instant>,
}

impl RestartLadder {
    pub fn new(strategy: Strategy, intensity: Intensity, backoff: Backoff) -> Self {
        Self {
            strategy,
            intensity,
            backoff,
            restarts: VecDeque::new(),
        }
    }

    /// Decides what to do about `child` exiting. `children` lists every child in start order
    /// with its restart policy and whether it is running now.
    pub fn decide(&mut self, children: &[(String, Restart, bool)], child: &str, exit: Exit, now: Instant) -> Decision {
        let Some(pos) = children.iter().position(|(id, _, _)| id == child) else {
            return Decision::Remove;
        };
        let wants_restart = match (children[pos].1, exit) {
            (Restart::Permanent, _) => true,
            (Restart::Transient, Exit::Failed) => true,
            (Restart::Transient, Exit::Normal) | (Restart::Temporary, _) => false,
        };
        if !wants_restart {
            return Decision::Remove;
        }
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.intensity.window)
        {
            self.restarts.pop_front();
        }
        self.restarts.push_back(now);
        let restarts = self.restarts.len() as u32;
        if restarts > self.intensity.max_restarts {
            return Decision::Escalate { restarts };
        }
        let group: Vec<usize> = match self.strategy {
            Strategy::OneForOne => vec![pos],
            Strategy::OneForAll => (0..children.len()).collect(),
            Strategy::RestForOne => (pos..children.len()).collect(),
        };
        // Siblings dragged into the restart come back unless they are temporary.
        let start = group
            .iter()
            .filter(|&&i| i == pos || children[i].1 != Restart::Temporary)
            .map(|&i| children[i].0.clone())
            .collect();
        let stop = group
            .iter()
            .rev()
            .filter(|&&i| i != pos && children[i].2)
            .map(|&i| children[i].0.clone())
            .collect();
        Decision::Restart {
            stop,
            start,
            delay: self.backoff.delay(restarts),
            restarts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder(strategy: Strategy, max: u32) -> RestartLadder {
        RestartLadder::new(
            strategy,
            Intensity {
                max_restarts: max,
                window: Duration::from_secs(10),
            },
            Backoff {
                base: Duration::from_millis(100),
                max: Duration::from_secs(1),
            },
        )
    }

    fn kids(policies: &[Restart]) -> Vec<(String, Restart, bool)> {
        policies
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("c{i}"), *p, true))
            .collect()
    }

    #[test]
    fn one_for_one_restarts_only_the_failed_child() {
        let mut l = ladder(Strategy::OneForOne, 5);
        let d = l.decide(&kids(&[Restart::Permanent; 3]), "c1", Exit::Failed, Instant::now());
        assert_eq!(
            d,
            Decision::Restart {
                stop: vec![],
                start: vec!["c1".into()],
                delay: Duration::from_millis(100),
                restarts: 1
            }
        );
    }

    #[test]
    fn one_for_all_stops_siblings_in_reverse_and_restarts_all_in_order() {
        let mut l = ladder(Strategy::OneForAll, 5);
        let d = l.decide(&kids(&[Restart::Permanent; 3]), "c1", Exit::Failed, Instant::now());
        let Decision::Restart { stop, start, .. } = d else {
            panic!("expected a restart, got {d:?}")
        };
        assert_eq!(stop, vec!["c2", "c0"]);
        assert_eq!(start, vec!["c0", "c1", "c2"]);
    }

    #[test]
    fn rest_for_one_restarts_the_child_and_those_started_after_it() {
        let mut l = ladder(Strategy::RestForOne, 5);
        let d = l.decide(&kids(&[Restart::Permanent; 4]), "c1", Exit::Failed, Instant::now());
        let Decision::Restart { stop, start, .. } = d else {
            panic!("expected a restart, got {d:?}")
        };
        assert_eq!(stop, vec!["c3", "c2"]);
        assert_eq!(start, vec!["c1", "c2", "c3"]);
    }

    #[test]
    fn restart_policies_decide_whether_an_exit_restarts() {
        let mut l = ladder(Strategy::OneForOne, 5);
        let c = kids(&[Restart::Permanent, Restart::Transient, Restart::Temporary]);
        let now = Instant::now();
        assert!(matches!(
            l.decide(&c, "c0", Exit::Normal, now),
            Decision::Restart { .. }
        ));
        assert_eq!(l.decide(&c, "c1", Exit::Normal, now), Decision::Remove);
        assert!(matches!(
            l.decide(&c, "c1", Exit::Failed, now),
            Decision::Restart { .. }
        ));
        assert_eq!(l.decide(&c, "c2", Exit::Failed, now), Decision::Remove);
        assert_eq!(l.decide(&c, "unknown", Exit::Failed, now), Decision::Remove);
    }

    #[test]
    fn exceeding_intensity_within_the_window_escalates() {
        let mut l = ladder(Strategy::OneForOne, 2);
        let c = kids(&[Restart::Permanent]);
        let t = Instant::now();
        assert!(matches!(
            l.decide(&c, "c0", Exit::Failed, t),
            Decision::Restart { restarts: 1, .. }
        ));
        assert!(matches!(
            l.decide(&c, "c0", Exit::Failed, t),
            Decision::Restart { restarts: 2, .. }
        ));
        assert_eq!(l.decide(&c, "c0", Exit::Failed, t), Decision::Escalate { restarts: 3 });
    }

    #[test]
    fn restarts_older_than_the_window_are_forgotten() {
        let mut l = ladder(Strategy::OneForOne, 1);
        let c = kids(&[Restart::Permanent]);
        let t = Instant::now();
        assert!(matches!(l.decide(&c, "c0", Exit::Failed, t), Decision::Restart { .. }));
        let later = t + Duration::from_secs(11);
        assert!(matches!(
            l.decide(&c, "c0", Exit::Failed, later),
            Decision::Restart { restarts: 1, .. }
        ));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(500),
        };
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(3), Duration::from_millis(400));
        assert_eq!(b.delay(4), Duration::from_millis(500));
        assert_eq!(b.delay(64), Duration::from_millis(500));
    }

    #[test]
    fn temporary_siblings_are_not_restarted_with_the_group() {
        let mut l = ladder(Strategy::OneForAll, 5);
        let c = kids(&[Restart::Temporary, Restart::Permanent]);
        let Decision::Restart { stop, start, .. } = l.decide(&c, "c1", Exit::Failed, Instant::now()) else {
            panic!("expected a restart")
        };
        assert_eq!(stop, vec!["c0"]);
        assert_eq!(start, vec!["c1"]);
    }
}

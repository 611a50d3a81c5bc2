//! The restart decision, apart from any actor: which children to restart, after how long,
//! or whether to give up on one child or escalate.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// Which children restart when one exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Strategy {
    OneForOne,
    OneForAll,
    RestForOne,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::OneForOne => "ONE_FOR_ONE",
            Strategy::OneForAll => "ONE_FOR_ALL",
            Strategy::RestForOne => "REST_FOR_ONE",
        }
    }
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

/// The most restarts within a window before giving up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Intensity {
    pub max_restarts: u32,
    pub window: Duration,
}

/// Delay before a restart. The first restart within the window is immediate, as OTP's are;
/// the n-th after it waits `base * 2^(n-2)`, at most `max`, so a crash loop slows down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn delay(&self, nth: u32) -> Duration {
        if nth <= 1 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(nth - 2).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// What a supervisor does about an exited child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Forget the child: it is not to be restarted.
    Remove,
    /// Stop `stop` (running siblings, in reverse start order), wait `delay`, then start
    /// `start` in start order. `restarts` counts restarts within the window, this one included.
    Restart {
        stop: Vec<String>,
        start: Vec<String>,
        delay: Duration,
        restarts: u32,
    },
    /// The child used up its own intensity: it alone is given up on (FAILED); its siblings
    /// and its supervisor are not touched.
    GiveUp { restarts: u32 },
    /// The supervisor used up its intensity: fail and let the parent decide.
    Escalate { restarts: u32 },
}

/// One child as the decision sees it.
#[derive(Debug, Clone)]
pub struct ChildView {
    pub id: String,
    pub restart: Restart,
    pub running: bool,
    /// The child's own intensity: past it the child is given up on, not the supervisor.
    pub intensity: Option<Intensity>,
}

/// The window the backoff counts restarts in when a supervisor has no intensity.
const UNBOUNDED_WINDOW: Duration = Duration::from_secs(60);

/// A restart history: the instants of the restarts still within the window.
#[derive(Debug, Clone, Default)]
struct History(VecDeque<Instant>);

impl History {
    /// Records a restart at `now`; how many fall within `window`, this one included.
    fn record(&mut self, now: Instant, window: Duration) -> u32 {
        while self.0.front().is_some_and(|t| now.duration_since(*t) > window) {
            self.0.pop_front();
        }
        self.0.push_back(now);
        self.0.len() as u32
    }
}

/// A supervisor's restart policy and history.
#[derive(Debug, Clone)]
pub struct RestartLadder {
    pub strategy: Strategy,
    /// The supervisor's own intensity; `None` never escalates.
    pub intensity: Option<Intensity>,
    pub backoff: Backoff,
    history: History,
    per_child: HashMap<String, History>,
}

impl RestartLadder {
    pub fn new(strategy: Strategy, intensity: Option<Intensity>, backoff: Backoff) -> Self {
        Self {
            strategy,
            intensity,
            backoff,
            history: History::default(),
            per_child: HashMap::new(),
        }
    }

    /// Forgets a child's own history (it was removed).
    pub fn forget(&mut self, child: &str) {
        self.per_child.remove(child);
    }

    /// Decides what to do about `child` exiting; `children` lists every child in start order.
    pub fn decide(&mut self, children: &[ChildView], child: &str, exit: Exit, now: Instant) -> Decision {
        let Some(pos) = children.iter().position(|c| c.id == child) else {
            return Decision::Remove;
        };
        let wants_restart = match (children[pos].restart, exit) {
            (Restart::Permanent, _) => true,
            (Restart::Transient, Exit::Failed) => true,
            (Restart::Transient, Exit::Normal) | (Restart::Temporary, _) => false,
        };
        if !wants_restart {
            return Decision::Remove;
        }
        let restarts = match children[pos].intensity {
            Some(own) => {
                let n = self
                    .per_child
                    .entry(child.to_owned())
                    .or_default()
                    .record(now, own.window);
                if n > own.max_restarts {
                    return Decision::GiveUp { restarts: n - 1 };
                }
                n
            }
            None => {
                let window = self.intensity.map_or(UNBOUNDED_WINDOW, |i| i.window);
                let n = self.history.record(now, window);
                if self.intensity.is_some_and(|i| n > i.max_restarts) {
                    return Decision::Escalate { restarts: n };
                }
                n
            }
        };
        let group: Vec<usize> = match self.strategy {
            Strategy::OneForOne => vec![pos],
            Strategy::OneForAll => (0..children.len()).collect(),
            Strategy::RestForOne => (pos..children.len()).collect(),
        };
        // Siblings dragged into the restart come back unless they are temporary.
        let start = group
            .iter()
            .filter(|&&i| i == pos || children[i].restart != Restart::Temporary)
            .map(|&i| children[i].id.clone())
            .collect();
        let stop = group
            .iter()
            .rev()
            .filter(|&&i| i != pos && children[i].running)
            .map(|&i| children[i].id.clone())
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
mod tests;

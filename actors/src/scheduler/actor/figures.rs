//! Per-agent figures the scheduler keeps as attempts end: success rate and latency over the
//! last attempts, and the model tokens results reported.

use std::collections::VecDeque;

use serde_json::Value;

use super::State;
use crate::agent::Recent;
use crate::scheduler::engine::Now;
use crate::task::Outcome;

/// How many recent attempts the figures cover.
const WINDOW: usize = 100;

/// The last attempts of one agent: (duration ms, succeeded).
#[derive(Default)]
pub struct Window(VecDeque<(f64, bool)>);

impl Window {
    fn push(&mut self, ms: f64, ok: bool) {
        if self.0.len() == WINDOW {
            self.0.pop_front();
        }
        self.0.push_back((ms, ok));
    }

    pub fn figures(&self) -> Recent {
        if self.0.is_empty() {
            return Recent::default();
        }
        let n = self.0.len();
        let ok = self.0.iter().filter(|(_, ok)| *ok).count();
        let mut ms: Vec<f64> = self.0.iter().map(|(ms, _)| *ms).collect();
        ms.sort_by(f64::total_cmp);
        // Nearest rank.
        let at = |q: f64| ms[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        Recent {
            attempts: n as u32,
            success_rate: Some(ok as f64 / n as f64),
            latency_p50_ms: Some(at(0.50)),
            latency_p95_ms: Some(at(0.95)),
        }
    }
}

impl State {
    /// Notes an attempt's end in its agent's figures, if it is the attempt running now.
    pub(super) fn observe(&mut self, task: &str, attempt: u32, agent: &str, outcome: &Outcome, now: Now) {
        let Some(status) = self.engine.status(task) else { return };
        let current =
            status.state.is_running() && status.attempts == attempt && status.agent_id.as_deref() == Some(agent);
        if !current {
            return;
        }
        let ms = status
            .started_at
            .map_or(0.0, |s| (now.wall - s).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        self.recent
            .entry(agent.to_owned())
            .or_default()
            .push(ms.max(0.0), outcome.is_ok());
        if let Ok(result) = outcome {
            let tokens = |name: &str| result.pointer(&format!("/usage/{name}")).and_then(Value::as_u64);
            let (prompt, completion) = (tokens("promptTokens"), tokens("completionTokens"));
            if prompt.is_some() || completion.is_some() {
                let stats = self.stats.entry(agent.to_owned()).or_default();
                stats.prompt_tokens += prompt.unwrap_or(0);
                stats.completion_tokens += completion.unwrap_or(0);
                self.dirty_stats.insert(agent.to_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_nearest_rank_over_the_window() {
        let mut w = Window::default();
        assert_eq!(w.figures(), Recent::default());
        for i in 1..=200 {
            w.push(i as f64, i % 4 != 0);
        }
        let f = w.figures();
        assert_eq!(f.attempts, 100);
        assert_eq!(f.latency_p50_ms, Some(150.0));
        assert_eq!(f.latency_p95_ms, Some(195.0));
        assert_eq!(f.success_rate, Some(0.75));
    }
}

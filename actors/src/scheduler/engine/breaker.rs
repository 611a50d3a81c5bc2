//! Each agent's circuit breaker: consecutive failed attempts open it (the agent gets no
//! tasks), a cool-down half-opens it (one trial task), and a success closes it.

use serde_json::json;

use super::{Breaker, Effect, Engine, Now};
use crate::agent::BreakerState;

impl Engine {
    /// How many tasks the agent may run at once now: its slots, unless its breaker says less.
    pub(super) fn capacity(&self, agent: &str, slots: u32) -> u32 {
        match self.breakers.get(agent).map(|b| b.state) {
            None | Some(BreakerState::Closed) => slots,
            Some(BreakerState::Open) => 0,
            Some(BreakerState::HalfOpen) => 1,
        }
    }

    pub(super) fn breaker_success(&mut self, agent: &str) {
        let Some(b) = self.breakers.get_mut(agent) else { return };
        b.consecutive = 0;
        if b.state != BreakerState::Closed {
            let from = b.state;
            *b = Breaker::default();
            self.breaker_event(agent, "AGENT_BREAKER_CLOSED", from);
            self.refile(agent);
        }
    }

    pub(super) fn breaker_failure(&mut self, agent: &str, now: Now) {
        let policy = self.breaker;
        let b = self.breakers.entry(agent.to_owned()).or_default();
        b.consecutive += 1;
        let trips = match b.state {
            BreakerState::HalfOpen => true,
            BreakerState::Closed => b.consecutive >= policy.failures,
            BreakerState::Open => false,
        };
        if !trips {
            return;
        }
        let from = b.state;
        let until = now.at + policy.cooldown;
        b.state = BreakerState::Open;
        b.until = Some(until);
        b.opened_at = Some(now.wall);
        self.breaker_wakes.insert((until, agent.to_owned()));
        self.breaker_event(agent, "AGENT_BREAKER_OPENED", from);
        self.refile(agent);
        self.arm();
    }

    /// The cool-down of an open breaker is over: one trial task may run.
    pub(super) fn half_open(&mut self, agent: &str, due: tokio::time::Instant, now: Now) {
        let Some(b) = self.breakers.get_mut(agent) else { return };
        if b.state != BreakerState::Open || b.until != Some(due) {
            return;
        }
        b.state = BreakerState::HalfOpen;
        b.until = None;
        self.breaker_event(agent, "AGENT_BREAKER_HALF_OPEN", BreakerState::Open);
        self.refile(agent);
        self.fill(agent, now);
    }

    fn breaker_event(&mut self, agent: &str, kind: &'static str, from: BreakerState) {
        let b = self.breakers.get(agent).copied().unwrap_or_default();
        tracing::info!(%agent, from = from.as_str(), to = b.state.as_str(), "agent breaker changed");
        self.out.push(Effect::AgentEvent {
            agent: agent.to_owned(),
            kind,
            data: json!({
                "from": from.as_str(),
                "to": b.state.as_str(),
                "consecutiveFailures": b.consecutive,
                "cooldownMs": self.breaker.cooldown.as_millis() as u64,
            }),
        });
    }
}

//! The agent recovery ladder, as decisions apart from the actors that carry them out.
//!
//! ```text
//!  crash ─▶ RECOVERING ─▶ restart (backoff) ─▶ RUNNING        within the agent's intensity
//!        └▶ intensity spent ─▶ restart from the newest checkpoint, once ─▶ RUNNING
//!                           └▶ (no checkpoint, or already rolled back) ─▶ FAILED + AGENT_ALERT
//!  heartbeats missed ─▶ UNHEALTHY (closed to tasks) ─▶ heard again ─▶ RUNNING / PAUSED
//! ```
//!
//! The supervisor counts restarts within the intensity and waits its backoff; the agent's
//! handle ([`super::AgentChild`]) feeds its events to [`Ladder::event`] and its "one more
//! chance?" to [`Ladder::spent`], and the agent actor feeds health news to [`health`]. Each
//! answers what to do: the callers record, report and restart.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use troupe_runtime::supervision::{ChildEvent, Intensity};

use super::spec::{Desired, RestartLimit};
use super::status::{AgentState, AgentStatus};
use crate::scheduler::report::Down;

/// What the ladder remembers between events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ladder {
    /// Whether the rollback rung was used since the agent last started cleanly.
    rolled_back: bool,
}

/// What an event of the agent's supervisor comes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The agent's status now.
    pub status: AgentStatus,
    /// The data of an `AGENT_ALERT`, when the agent was given up on.
    pub alert: Option<Value>,
    /// What the scheduler is told about the incarnation that ended, if one did.
    pub down: Option<Down>,
}

/// The restart intensity of an agent: its spec's own, else the node's.
pub fn intensity(own: Option<RestartLimit>, node: Intensity) -> Intensity {
    match own {
        Some(r) => Intensity {
            max_restarts: r.max_restarts,
            window: Duration::from_millis(r.window_ms),
        },
        None => node,
    }
}

impl Ladder {
    /// The supervisor says what happened to the agent, whose status was `status` and whose
    /// user wants it `desired`.
    pub fn event(&mut self, event: &ChildEvent, desired: Desired, status: &AgentStatus, now: DateTime<Utc>) -> Step {
        // A started agent the user paused comes up paused (its actor suspended it).
        let up = match desired {
            Desired::Paused => AgentState::Paused,
            _ => AgentState::Running,
        };
        let mut status = status.clone();
        let mut alert = None;
        match event {
            ChildEvent::Started => {
                status.state = up;
                self.rolled_back = false;
            }
            ChildEvent::Restarted { .. } => {
                // The status keeps the agent's own count; the supervisor's starts again when
                // the supervisor is rebuilt. A restart after its own failure was counted
                // when the supervisor decided it (below); one its siblings caused is
                // counted here.
                if status.state != AgentState::Recovering {
                    status.restarts += 1;
                }
                status.state = up;
            }
            ChildEvent::Failed { reason, restarting } => {
                // Counted as the supervisor decides to restart it, whether or not the start
                // then succeeds: an agent whose every start fails was restarted as often
                // as "gave up after N restarts" says.
                if *restarting {
                    status.restarts += 1;
                }
                status.state = match restarting {
                    true => AgentState::Recovering,
                    false => AgentState::Failed,
                };
                status.last_error = Some(reason.clone());
                if !restarting {
                    alert = Some(json!({ "alert": true, "reason": reason, "restarts": status.restarts }));
                }
            }
            ChildEvent::Stopped => status.state = AgentState::Stopped,
        }
        status.updated_at = now;
        let down = match event {
            ChildEvent::Failed { reason, .. } => Some(Down::Failed(reason.clone())),
            ChildEvent::Stopped => Some(Down::Stopped),
            _ => None,
        };
        Step { status, alert, down }
    }

    /// The agent's restart intensity is spent: the checkpoint to restart it from (the
    /// ladder's second rung, once per clean start), or `None` to give up on it.
    pub fn spent(&mut self, latest_checkpoint: Option<&str>) -> Option<String> {
        let checkpoint = latest_checkpoint?;
        if self.rolled_back {
            return None;
        }
        self.rolled_back = true;
        Some(checkpoint.to_owned())
    }
}

/// Whether an agent is heard from, as its actor tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub healthy: bool,
    pub paused: bool,
}

/// What a change of health comes to: the agent's state and the event that records it (it
/// is closed to tasks while unhealthy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthStep {
    pub state: AgentState,
    pub kind: &'static str,
}

/// The backend says the agent is `healthy` (heard from) or not; `None` when nothing changes.
pub fn health(now: &mut Health, healthy: bool) -> Option<HealthStep> {
    if now.healthy == healthy {
        return None;
    }
    now.healthy = healthy;
    Some(match (healthy, now.paused) {
        (false, _) => HealthStep {
            state: AgentState::Unhealthy,
            kind: "AGENT_UNHEALTHY",
        },
        (true, true) => HealthStep {
            state: AgentState::Paused,
            kind: "AGENT_HEALTHY",
        },
        (true, false) => HealthStep {
            state: AgentState::Running,
            kind: "AGENT_HEALTHY",
        },
    })
}

/// What a process agent's silence means at a watchdog tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silence {
    /// Heard within an interval and a half.
    Heard,
    /// A heartbeat missed (with half an interval of slack): UNHEALTHY.
    Late,
    /// Silent for `missed` intervals: hung, to be killed.
    Hung,
}

/// Judges `silent` against the heartbeat `interval` and the `missed` intervals that make an
/// agent hung.
pub fn silence(silent: Duration, interval: Duration, missed: u32) -> Silence {
    if silent >= interval * missed {
        Silence::Hung
    } else if silent >= interval + interval / 2 {
        Silence::Late
    } else {
        Silence::Heard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: AgentState) -> AgentStatus {
        AgentStatus::new(state)
    }

    fn failed(restarting: bool) -> ChildEvent {
        ChildEvent::Failed {
            reason: "boom".into(),
            restarting,
        }
    }

    #[test]
    fn a_crash_within_the_intensity_is_recovering_then_running_with_one_more_restart() {
        let (mut ladder, now) = (Ladder::default(), troupe_runtime::clock::now());
        let step = ladder.event(&failed(true), Desired::Running, &status(AgentState::Running), now);
        assert_eq!(step.status.state, AgentState::Recovering);
        assert_eq!(step.status.last_error.as_deref(), Some("boom"));
        assert_eq!(step.down, Some(Down::Failed("boom".into())));
        assert_eq!(step.alert, None);
        let restarted = ChildEvent::Restarted { restarts: 1 };
        let step = ladder.event(&restarted, Desired::Running, &step.status, now);
        assert_eq!((step.status.state, step.status.restarts), (AgentState::Running, 1));
        assert_eq!(step.down, None);
        let step = ladder.event(&restarted, Desired::Paused, &step.status, now);
        assert_eq!(
            (step.status.state, step.status.restarts),
            (AgentState::Paused, 2),
            "a paused agent comes back paused"
        );
    }

    #[test]
    fn an_agent_whose_every_start_fails_counts_each_restart_its_supervisor_made() {
        let (mut ladder, now) = (Ladder::default(), troupe_runtime::clock::now());
        let mut status = status(AgentState::Starting);
        for _ in 0..5 {
            status = ladder.event(&failed(true), Desired::Running, &status, now).status;
        }
        assert_eq!((status.state, status.restarts), (AgentState::Recovering, 5));
        let given_up = ladder.event(&failed(false), Desired::Running, &status, now);
        assert_eq!(given_up.status.restarts, 5, "as many as the alert says");
        assert_eq!(given_up.alert.as_ref().map(|a| a["restarts"].clone()), Some(json!(5)));
    }

    #[test]
    fn an_agent_given_up_on_is_failed_with_an_alert() {
        let mut before = status(AgentState::Recovering);
        before.restarts = 4;
        let step = Ladder::default().event(&failed(false), Desired::Running, &before, troupe_runtime::clock::now());
        assert_eq!(step.status.state, AgentState::Failed);
        assert_eq!(
            step.alert,
            Some(json!({ "alert": true, "reason": "boom", "restarts": 4 }))
        );
        assert_eq!(step.down, Some(Down::Failed("boom".into())));
    }

    #[test]
    fn a_stop_is_stopped_and_its_tasks_go_back_uncharged() {
        let step = Ladder::default().event(
            &ChildEvent::Stopped,
            Desired::Stopped,
            &status(AgentState::Running),
            troupe_runtime::clock::now(),
        );
        assert_eq!(
            (step.status.state, step.down),
            (AgentState::Stopped, Some(Down::Stopped))
        );
    }

    #[test]
    fn the_rollback_rung_is_used_once_per_clean_start_and_only_with_a_checkpoint() {
        let mut ladder = Ladder::default();
        assert_eq!(ladder.spent(None), None, "no checkpoint: given up on");
        assert_eq!(ladder.spent(Some("c1")), Some("c1".to_string()));
        assert_eq!(ladder.spent(Some("c1")), None, "rolled back already");
        let now = troupe_runtime::clock::now();
        ladder.event(
            &ChildEvent::Started,
            Desired::Running,
            &status(AgentState::Starting),
            now,
        );
        assert_eq!(
            ladder.spent(Some("c2")),
            Some("c2".to_string()),
            "a clean start resets it"
        );
    }

    #[test]
    fn an_agent_restart_limit_is_its_own_else_the_nodes() {
        let node = Intensity {
            max_restarts: 3,
            window: Duration::from_secs(5),
        };
        assert_eq!(intensity(None, node), node);
        let own = RestartLimit {
            max_restarts: 1,
            window_ms: 200,
        };
        assert_eq!(
            intensity(Some(own), node),
            Intensity {
                max_restarts: 1,
                window: Duration::from_millis(200)
            }
        );
    }

    #[test]
    fn health_changes_are_reported_once_and_come_back_to_the_state_before() {
        let mut now = Health {
            healthy: true,
            paused: false,
        };
        assert_eq!(health(&mut now, true), None);
        let sick = health(&mut now, false).map(|s| (s.state, s.kind));
        assert_eq!(sick, Some((AgentState::Unhealthy, "AGENT_UNHEALTHY")));
        assert_eq!(health(&mut now, false), None, "reported once");
        now.paused = true;
        let back = health(&mut now, true).map(|s| (s.state, s.kind));
        assert_eq!(back, Some((AgentState::Paused, "AGENT_HEALTHY")));
    }

    #[test]
    fn silence_is_late_after_an_interval_and_a_half_and_hung_after_the_missed_intervals() {
        let interval = Duration::from_millis(1000);
        assert_eq!(silence(Duration::from_millis(1499), interval, 3), Silence::Heard);
        assert_eq!(silence(Duration::from_millis(1500), interval, 3), Silence::Late);
        assert_eq!(silence(Duration::from_millis(2999), interval, 3), Silence::Late);
        assert_eq!(silence(Duration::from_millis(3000), interval, 3), Silence::Hung);
    }
}

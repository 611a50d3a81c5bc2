//! Progress of running attempts: the latest report is kept on the task at once; its
//! TASK_PROGRESS event (written with the status) goes out at most once per
//! [`PROGRESS_INTERVAL`] per task. A report that comes sooner is held and written when the
//! interval is over, so the last one is always kept, even by a task that reports often.
//! Reports of an attempt that is not the running one are ignored. A report that says the
//! attempt now waits for an approval (or no longer does) moves the task to
//! AWAITING_APPROVAL (or back to RUNNING) at once, with its own event.

use std::time::Duration;

use serde_json::json;

use super::{Engine, Now};
use crate::task::{TaskProgress, TaskState};

/// What an agent reports of a running attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Reported {
    /// How far it got, 0 to 1.
    pub fraction: Option<f64>,
    pub note: Option<String>,
    /// It waits for an operator's decision on a tool call (an LLM agent's approval gate).
    pub held: bool,
}

impl Reported {
    /// Progress of an attempt at work (not held).
    pub fn working(fraction: Option<f64>, note: Option<String>) -> Self {
        Self {
            fraction,
            note,
            held: false,
        }
    }
}

/// The least time between two TASK_PROGRESS events of one task.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

impl Engine {
    /// `agent` reports progress of `attempt`.
    pub fn progress(
        &mut self,
        task: &str,
        attempt: u32,
        agent: &str,
        Reported { fraction, note, held }: Reported,
        now: Now,
    ) -> Vec<super::Effect> {
        if !self.is_current(task, attempt, agent) {
            return Vec::new();
        }
        let Some(entry) = self.tasks.get_mut(task) else {
            return Vec::new();
        };
        entry.status.progress = Some(TaskProgress {
            fraction: fraction.filter(|f| f.is_finite()).map(|f| f.clamp(0.0, 1.0)),
            note,
            at: now.wall,
        });
        let state = match held {
            true => TaskState::AwaitingApproval,
            false => TaskState::Running,
        };
        if entry.status.state != state {
            entry.status.state = state;
            entry.progress_sent = Some(now.at);
            entry.progress_held = false;
            let progress = entry.status.progress.as_ref().expect("set just now");
            let data = json!({ "fraction": progress.fraction, "note": progress.note });
            let status = entry.status.clone();
            let kind = match held {
                true => "TASK_AWAITING_APPROVAL",
                false => "TASK_RESUMED",
            };
            self.record(task, &status, kind, data, None);
            return self.take();
        }
        let due = entry.progress_sent.map(|sent| sent + PROGRESS_INTERVAL);
        match due {
            Some(due) if due > now.at => {
                if !entry.progress_held {
                    entry.progress_held = true;
                    self.progress_wakes.insert((due, task.to_owned()));
                    self.arm();
                }
            }
            _ => self.progress_event(task, now),
        }
        self.take()
    }

    /// Writes the task's latest progress with its event.
    fn progress_event(&mut self, task: &str, now: Now) {
        let Some(entry) = self.tasks.get_mut(task) else { return };
        entry.progress_sent = Some(now.at);
        entry.progress_held = false;
        let Some(progress) = &entry.status.progress else { return };
        let data = json!({ "fraction": progress.fraction, "note": progress.note });
        let status = entry.status.clone();
        self.record(task, &status, "TASK_PROGRESS", data, None);
    }

    /// Writes the progress held back for tasks whose interval is over; a task that stopped
    /// running since has nothing to write (its end recorded its last progress).
    pub(super) fn held_progress_due(&mut self, now: Now) {
        while let Some((at, task)) = self.progress_wakes.first().cloned() {
            if at > now.at {
                break;
            }
            self.progress_wakes.pop_first();
            let held = self
                .tasks
                .get(&task)
                .is_some_and(|e| e.progress_held && e.status.state.is_running());
            if held {
                self.progress_event(&task, now);
            } else if let Some(e) = self.tasks.get_mut(&task) {
                e.progress_held = false;
            }
        }
    }
}

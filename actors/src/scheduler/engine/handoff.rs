//! Handing queued tasks to another node. A task queued here for a capability that no open
//! agent here serves waits for nothing this node can give it: the engine names such tasks
//! and lets go of them, and the scheduler moves them to a node whose agents serve the
//! capability (the cluster's heartbeats say which), so a queued task runs as soon as an
//! agent anywhere can take it.

use super::{Engine, Now};
use crate::task::{TaskState, TaskStatus};

impl Engine {
    /// Queued tasks aimed at a capability no open agent here serves, each with that
    /// capability, in queue order per capability, at most `limit`. Tasks with requirements
    /// (they stay where they were submitted) and tasks other tasks here wait on (those learn
    /// of their end here) are not named.
    pub fn unserved(&self, limit: usize) -> Vec<(String, String)> {
        let served = self.served();
        let mut out = Vec::new();
        for (capability, queue) in self.queues.by_capability() {
            if served.contains(capability) {
                continue;
            }
            for (_, _, id) in queue {
                if out.len() >= limit {
                    return out;
                }
                let Some(entry) = self.tasks.get(id) else { continue };
                if entry.limits.requires.is_some() || self.dependents.contains_key(id) {
                    continue;
                }
                out.push((id.clone(), capability.to_owned()));
            }
        }
        out
    }

    /// Lets go of a queued task another node takes over: its status as held here, or
    /// `None` when it is not held here or not waiting in a queue (started meanwhile).
    pub fn hand_off(&mut self, task: &str, now: Now) -> Option<TaskStatus> {
        let queued = self
            .tasks
            .get(task)
            .is_some_and(|e| e.queued.is_some() && e.status.state == TaskState::Queued);
        if !queued {
            return None;
        }
        self.take_out(task, now)
    }
}

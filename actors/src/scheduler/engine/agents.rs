//! The engine's agent inputs: an agent up (a new incarnation), opened or closed to new
//! tasks, down (stopped or lost), unreachable at dispatch, or removed for good.

use std::collections::HashSet;

use serde_json::json;

use super::index::Want;
use super::{Down, Effect, Engine, Now, Slot};
use crate::agent::Skills;
use crate::task::TaskState;

impl Engine {
    /// What agent `id` is called, for the texts people read (errors, waiting reasons).
    pub fn name_agent(&mut self, id: &str, name: &str) {
        if !name.is_empty() {
            self.names.insert(id.to_owned(), name.to_owned());
        }
    }

    /// "agent reviewer", or "agent <id>" for one whose name it was not told.
    pub(super) fn agent_phrase(&self, id: &str) -> String {
        format!("agent {}", self.names.get(id).map_or(id, String::as_str))
    }

    /// An agent (this incarnation of it) can take tasks. A different incarnation still on
    /// record died without saying so: what it held is settled first.
    pub fn agent_up(
        &mut self,
        id: &str,
        capabilities: Vec<String>,
        max: u32,
        incarnation: u64,
        now: Now,
    ) -> Vec<Effect> {
        self.agent_up_with(id, capabilities, Skills::default(), max, incarnation, now)
    }

    /// [`Engine::agent_up`] with the agent's proficiencies and weight.
    pub fn agent_up_with(
        &mut self,
        id: &str,
        capabilities: Vec<String>,
        skills: Skills,
        max: u32,
        incarnation: u64,
        now: Now,
    ) -> Vec<Effect> {
        if let Some(old) = self.agents.get(id) {
            if old.incarnation == incarnation {
                return Vec::new();
            }
            let old = old.incarnation;
            self.agent_gone(
                id,
                old,
                Down::Failed("the agent was restarted while running it".into()),
                now,
            );
        }
        self.agents.insert(
            id.to_owned(),
            Slot {
                keys: self.keys_of(&capabilities, &skills),
                capabilities,
                skills,
                max: max.max(1),
                running: HashSet::new(),
                incarnation,
                filed: Vec::new(),
                open: true,
                served: 0,
            },
        );
        self.refile(id);
        self.fill(id, now);
        self.take()
    }

    /// Opens or closes the agent (this incarnation of it) to new tasks; what it runs goes on.
    pub fn set_open(&mut self, id: &str, incarnation: u64, open: bool, now: Now) -> Vec<Effect> {
        let Some(slot) = self.agents.get_mut(id).filter(|s| s.incarnation == incarnation) else {
            return Vec::new();
        };
        if slot.open != open {
            slot.open = open;
            self.refile(id);
            self.fill(id, now);
        }
        self.take()
    }

    /// The agent (this incarnation) serves these capabilities now: filed under them, it
    /// takes the tasks waiting for a new one at once; what it runs goes on.
    pub fn set_capabilities(&mut self, id: &str, incarnation: u64, capabilities: Vec<String>, now: Now) -> Vec<Effect> {
        let Some(slot) = self.agents.get(id).filter(|s| s.incarnation == incarnation) else {
            return Vec::new();
        };
        let keys = self.keys_of(&capabilities, &slot.skills);
        if let Some(slot) = self.agents.get_mut(id) {
            slot.capabilities = capabilities;
            slot.keys = keys;
        }
        self.refile(id);
        self.fill(id, now);
        self.take()
    }

    /// The agent's incarnation is gone; an older or unknown incarnation is ignored.
    pub fn agent_down(&mut self, id: &str, incarnation: u64, down: Down, now: Now) -> Vec<Effect> {
        self.agent_gone(id, incarnation, down, now);
        self.take()
    }

    /// Some starts could not be handed to `agent` (its mailbox is closed): those attempts
    /// never began and are undone; the agent is treated as lost.
    pub fn undeliverable(&mut self, agent: &str, tasks: &[String], now: Now) -> Vec<Effect> {
        let Some(incarnation) = self.agents.get(agent).map(|s| s.incarnation) else {
            return Vec::new();
        };
        for task in tasks {
            self.release(agent, task);
            if let Some(e) = self.tasks.get_mut(task) {
                e.status.attempts = e.status.attempts.saturating_sub(1);
                e.status.state = TaskState::Queued;
            }
        }
        // The agent goes first, so the undone tasks are not offered to it again.
        self.agent_gone(agent, incarnation, Down::Failed("unreachable".into()), now);
        for task in tasks {
            self.make_runnable(task, now);
        }
        self.take()
    }

    /// The agent was removed: the tasks waiting for it alone can never run and end FAILED;
    /// what it runs was already given back when it stopped.
    pub fn agent_removed(&mut self, id: &str, now: Now) -> Vec<Effect> {
        let want = Want::Agent(id.to_owned());
        let mut waiting: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, e)| e.limits.want == want && !e.status.state.is_running())
            .map(|(task, _)| task.clone())
            .collect();
        waiting.sort();
        for task in waiting {
            let Some(entry) = self.forget(&task) else {
                continue;
            };
            if let Some(key) = &entry.queued {
                self.queues.remove(&want, key);
            }
            self.delayed.retain(|(_, t)| *t != task);
            let mut status = entry.status;
            status.state = TaskState::Failed;
            status.error = Some(format!("{} was removed", self.agent_phrase(id)));
            status.finished_at = Some(now.wall);
            self.record(
                &task,
                &status,
                "TASK_FAILED",
                json!({ "reason": "agent removed" }),
                Some((None, None)),
            );
            self.ended(&task, None, TaskState::Failed, now);
        }
        self.names.remove(id);
        self.take()
    }
}

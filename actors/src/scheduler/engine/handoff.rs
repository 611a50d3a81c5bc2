//! Handing queued tasks to another node. A task queued here that no open agent here can run
//! waits for nothing this node can give it: the engine names such tasks and lets go of
//! them, and the scheduler moves them to a node whose agents can run them (the cluster's
//! heartbeats and the replica's agents say which), so a queued task runs as soon as an agent
//! anywhere can take it. A task of a graph moves with the tasks of the graph that wait on it
//! or that it waits on, for a graph's tasks learn of each other's end on the node that holds
//! them: while one of them runs here, none moves. Each graph is walked once at a look.

use std::collections::{BTreeSet, HashSet};

use super::index::Want;
use super::{Engine, Now, Requirement};
use crate::task::{TaskState, TaskStatus};

/// Queued tasks no open agent here can run, to move together.
#[derive(Debug, Clone, PartialEq)]
pub struct Unserved {
    /// What the first task wants: its capability, or its requirement set's key.
    pub want: String,
    /// Set when the first task asks for several capabilities or a least proficiency.
    pub requires: Option<Requirement>,
    /// The first task, then the other tasks of its graph held here, if any.
    pub tasks: Vec<String>,
}

impl Engine {
    /// Queued tasks that no open agent here can run, in queue order per capability, with
    /// the graph each belongs to; at most `limit` tasks. A graph one of whose tasks runs, or
    /// is aimed at an agent of this node, is not named. Nor is a capability (or requirement
    /// set) that `served_elsewhere` says no peer serves either: its tasks would take the
    /// limit from those another node could run at once (300 waiting for a capability nobody
    /// had kept 197 of another's from moving, for as long as they waited). Once the engine
    /// drains (the node stops), no agent here starts anything more: every queued task is
    /// named, to go where agents serve it rather than wait for this node's restart.
    pub fn unserved(
        &self,
        limit: usize,
        served_elsewhere: impl Fn(&str, Option<&Requirement>) -> bool,
    ) -> Vec<Unserved> {
        let served: BTreeSet<&str> = self
            .agents
            .values()
            .filter(|slot| slot.open && !self.draining)
            .flat_map(|slot| slot.keys.iter().map(String::as_str))
            .collect();
        let mut out = Vec::new();
        // The tasks of every graph walked already, named or not: each is walked once.
        let mut walked: HashSet<String> = HashSet::new();
        let mut count = 0;
        for (want, queue) in self.queues.by_capability() {
            if served.contains(want) {
                continue;
            }
            // Every task of a queue wants the same: its first tells.
            let first = queue.iter().next().and_then(|(_, _, id)| self.tasks.get(id));
            if first.is_some_and(|entry| !served_elsewhere(want, entry.limits.requires.as_ref())) {
                continue;
            }
            for (_, _, id) in queue {
                if count >= limit {
                    return out;
                }
                if walked.contains(id) {
                    continue;
                }
                let Some(entry) = self.tasks.get(id) else { continue };
                let (tasks, movable) = self.graph_of(id);
                walked.extend(tasks.iter().cloned());
                if !movable {
                    continue;
                }
                if count + tasks.len() > limit && count > 0 {
                    return out;
                }
                count += tasks.len();
                out.push(Unserved {
                    want: want.to_owned(),
                    requires: entry.limits.requires.clone(),
                    tasks,
                });
            }
        }
        out
    }

    /// `task` and every task held here linked to it by dependencies (either way), `task`
    /// first, and whether they may move: none of them runs or is aimed at an agent.
    fn graph_of(&self, task: &str) -> (Vec<String>, bool) {
        let mut graph: Vec<String> = vec![task.to_owned()];
        let mut known: HashSet<&str> = HashSet::from([task]);
        let mut movable = true;
        let mut next = 0;
        while next < graph.len() {
            let id = graph[next].clone();
            next += 1;
            let Some(entry) = self.tasks.get(&id) else {
                movable = false;
                continue;
            };
            if entry.status.state != TaskState::Queued || matches!(entry.limits.want, Want::Agent(_)) {
                movable = false;
            }
            let up = entry.limits.depends_on.iter().filter(|d| self.tasks.contains_key(*d));
            let down = self.dependents.get(&id).into_iter().flatten();
            for linked in up.chain(down) {
                if known.insert(linked) {
                    graph.push(linked.clone());
                }
            }
        }
        (graph, movable)
    }

    /// Lets go of queued tasks another node takes over (a task and its graph, as
    /// [`Self::unserved`] named them): their statuses as held here, all or none (`None`
    /// when one of them is not held here or no longer waits: it started meanwhile).
    pub fn hand_off(&mut self, tasks: &[String], now: Now) -> Option<Vec<TaskStatus>> {
        let waiting = tasks.iter().all(|t| {
            self.tasks
                .get(t)
                .is_some_and(|e| e.status.state == TaskState::Queued && !matches!(e.limits.want, Want::Agent(_)))
        });
        if !waiting {
            return None;
        }
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            // The graph goes whole: nothing here waits on its tasks any more.
            self.dependents.remove(task);
            out.extend(self.take_out(task, now));
        }
        Some(out)
    }
}

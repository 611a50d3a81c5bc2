//! Handing the tasks no agent here can run to a node whose agents can (see
//! `engine::handoff`): at each publication of the rooms, the engine names them (each with
//! the tasks of its graph), the peers' heartbeats say where agents serve a capability (and
//! the replica's agents which of them meet a task's requirement set), and one entry moves
//! them there in the directory (`TASKS_MOVED`, which the receiving node adopts, as after a
//! failover).

use std::collections::{BTreeMap, HashMap};

use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::Batch;

use super::{Now, SchedulerMsg, State};
use crate::cluster::directory::{placement_in, Placement};
use crate::scheduler::engine::{Requirement, Unserved};
use crate::scheduler::tasks::elsewhere::nodes_meeting;
use crate::scheduler::Room;
use crate::tables::{DIRECTORY, TASKS, TASK_STATUS};
use crate::task::{TaskSpec, TaskStatus};

/// Tasks handed off at one publication at most.
const AT_ONCE: usize = 256;

/// The peer to hand a capability's tasks to: the one whose agents have the most free
/// slots for it, then the most agents; `None` when no peer's agents serve it.
pub(crate) fn pick(rooms: &[(String, Room)]) -> Option<String> {
    rooms
        .iter()
        .filter(|(_, room)| room.agents > 0)
        .max_by(|(a, ra), (b, rb)| (ra.free, ra.agents).cmp(&(rb.free, rb.agents)).then_with(|| b.cmp(a)))
        .map(|(name, _)| name.clone())
}

/// The peer to hand tasks with a requirement set to: of the peers whose beats show agents
/// for the set's first capability (`rooms`: up, connected, taking work), the one with the
/// most agents that meet the set, as the replica holds them (`meeting`); `None` when none
/// has one.
pub(crate) fn pick_meeting(rooms: &[(String, Room)], meeting: &BTreeMap<String, u32>) -> Option<String> {
    rooms
        .iter()
        .filter(|(name, room)| room.agents > 0 && meeting.contains_key(name))
        .max_by(|(a, _), (b, _)| meeting[a].cmp(&meeting[b]).then_with(|| b.cmp(a)))
        .map(|(name, _)| name.clone())
}

/// Hand-offs at most when the node drains for its stop: 16 of [`AT_ONCE`] tasks.
pub(super) const DRAIN_HAND_OFFS: usize = 16;

impl State {
    /// Moves the tasks no agent here can run to the peers whose agents can; how many moved.
    pub(super) async fn hand_off_unserved(&mut self, now: Now) -> usize {
        let Some(peers) = self.peers.clone() else { return 0 };
        let unserved = self.engine.unserved(AT_ONCE, |want, requires| {
            let capability = requires
                .and_then(|r| r.capabilities.first())
                .map_or(want, String::as_str);
            peers(capability).iter().any(|(_, room)| room.agents > 0)
        });
        if unserved.is_empty() {
            return 0;
        }
        // Requirement sets: which peers' agents meet them, from one scan of the replica.
        let mut sets: Vec<Requirement> = Vec::new();
        for group in &unserved {
            if let Some(r) = group.requires.as_ref().filter(|r| !sets.contains(r)) {
                sets.push(r.clone());
            }
        }
        let meeting = if sets.is_empty() {
            Vec::new()
        } else {
            let (asked, here) = (sets.clone(), self.node.clone());
            match self.store.view(move |v| nodes_meeting(v, &asked, &here)).await {
                Ok(meeting) => meeting,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read which peers' agents meet the waiting tasks' requirements");
                    vec![BTreeMap::new(); sets.len()]
                }
            }
        };
        let mut to: HashMap<String, Option<String>> = HashMap::new();
        // (peer, the node the tasks' ids name) -> tasks: `TASKS_MOVED` names the latter,
        // whose tasks the receiving node adopts. A graph goes to one peer whole.
        let mut moving: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        let mut graphs: Vec<(String, Vec<String>)> = Vec::new();
        for Unserved { want, requires, tasks } in unserved {
            let peer = to.entry(want).or_insert_with_key(|want| match &requires {
                None => pick(&peers(want)),
                Some(r) => {
                    let i = sets.iter().position(|s| s == r)?;
                    let first = r.capabilities.first()?;
                    pick_meeting(&peers(first), &meeting[i])
                }
            });
            let Some(peer) = peer.clone() else { continue };
            graphs.push((peer, tasks));
        }
        if graphs.is_empty() {
            return 0;
        }
        let ids: Vec<String> = graphs.iter().flat_map(|(_, t)| t.iter().cloned()).collect();
        let placed = self
            .store
            .view(move |v| {
                ids.into_iter()
                    .map(|id| Ok((v.get(DIRECTORY, &id)?, placement_in(v, &id)?, id)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await;
        let placed: HashMap<String, (Option<Vec<u8>>, Option<Placement>)> = match placed {
            Ok(found) => found.into_iter().map(|(raw, p, id)| (id, (raw, p))).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "could not read where the tasks to hand off are placed");
                return 0;
            }
        };
        let mut batch = Batch::new();
        let mut handed = Vec::new();
        for (peer, tasks) in graphs {
            if !tasks.iter().all(|t| placed.contains_key(t)) || self.engine.hand_off(&tasks, now).is_none() {
                continue;
            }
            for task in tasks {
                self.work.remove(&task);
                self.uncache(&task);
                let (raw, placement) = &placed[&task];
                let to = Placement {
                    node: peer.clone(),
                    epoch: placement.as_ref().map_or(0, |p| p.epoch) + 1,
                };
                let Ok(bytes) = troupe_runtime::codec::encode(&to) else {
                    continue;
                };
                // Only over the placement read: a move made meanwhile (a failover) wins.
                batch = batch
                    .require(DIRECTORY, task.clone(), raw.clone())
                    .put(DIRECTORY, task.clone(), bytes);
                let home = crate::ids::home(&task).unwrap_or(&self.node).to_owned();
                moving.entry((peer.clone(), home)).or_default().push(task.clone());
                handed.push(task);
            }
        }
        let why = |peer: &str| match self.engine.draining() {
            true => format!("{} is stopping; agents on {peer} serve them", self.node),
            false => format!("no agent on {} serves them; agents on {peer} do", self.node),
        };
        for ((peer, home), tasks) in &moving {
            batch = batch.event(NewEvent::new(
                "TASKS_MOVED",
                Some(peer.clone()),
                json!({ "from": home, "to": peer, "count": tasks.len(),
                        "reason": why(peer) }),
            ));
        }
        self.open.store(self.engine.open(), std::sync::atomic::Ordering::SeqCst);
        if handed.is_empty() {
            return 0;
        }
        match self.store.write(batch).await {
            Ok(_) => {
                tracing::info!(
                    tasks = handed.len(),
                    "handed queued tasks to nodes whose agents serve them"
                );
                handed.len()
            }
            Err(e) => {
                tracing::warn!(error = %e, tasks = handed.len(), "could not hand queued tasks off: they wait here again");
                self.take_back(handed).await;
                0
            }
        }
    }

    /// Queues again here the tasks a hand-off did not move.
    async fn take_back(&mut self, mut tasks: Vec<String>) {
        // A task's id sorts after its dependencies' (ids are made in time order): each is
        // queued after the tasks it waits on.
        tasks.sort();
        let read = self
            .store
            .view(move |v| {
                let mut out = Vec::new();
                for id in tasks {
                    if let (Some(spec), Some(status)) = (v.get(TASKS, &id)?, v.get(TASK_STATUS, &id)?) {
                        out.push((
                            troupe_runtime::codec::decode::<TaskSpec>(&spec)?,
                            troupe_runtime::codec::decode::<TaskStatus>(&status)?,
                        ));
                    }
                }
                Ok(out)
            })
            .await;
        match read {
            Ok(found) => {
                for task in found {
                    let _ = self.myself.cast(SchedulerMsg::Enqueue(Box::new(task)));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not read the tasks a hand-off left here; they run after the next restart")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pick;
    use crate::scheduler::Room;

    fn room(agents: u32, free: u32) -> Room {
        Room {
            agents,
            free,
            best: None,
        }
    }

    #[test]
    fn tasks_go_to_the_peer_with_the_most_free_slots_then_the_most_agents() {
        let rooms = |r: &[(&str, Room)]| r.iter().map(|(n, r)| (n.to_string(), *r)).collect::<Vec<_>>();
        assert_eq!(
            pick(&rooms(&[("b", room(0, 0)), ("c", room(0, 0))])),
            None,
            "nobody serves it"
        );
        assert_eq!(pick(&rooms(&[("b", room(1, 0)), ("c", room(2, 3))])), Some("c".into()));
        assert_eq!(
            pick(&rooms(&[("b", room(3, 0)), ("c", room(1, 0))])),
            Some("b".into()),
            "all busy: most agents"
        );
        assert_eq!(
            pick(&rooms(&[("c", room(1, 1)), ("b", room(1, 1))])),
            Some("b".into()),
            "ties: first name"
        );
    }
}

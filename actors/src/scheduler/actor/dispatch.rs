//! Carrying out the engine's effects: attempts handed to their agents with their payloads
//! (kept in memory up to a budget, else read from the store in one view), transitions added
//! to the message's batch, cancels, agent events and timers. A start that cannot be handed
//! over goes back to the engine.

use std::collections::{HashMap, VecDeque};

use ractor::ActorProcessingErr;
use serde_json::Value;

use super::{SchedulerMsg, State};
use crate::agent::AgentMsg;
use crate::scheduler::engine::{Effect, Now};
use crate::task::{Assignment, TaskSpec};

/// About how much memory a payload takes: its JSON text's length.
fn payload_size(payload: &Value) -> usize {
    match payload {
        Value::Null | Value::Bool(_) | Value::Number(_) => 16,
        Value::String(s) => s.len() + 16,
        other => serde_json::to_vec(other).map_or(1024, |v| v.len()),
    }
}

/// The payloads of these tasks, by id (a task without a spec is left out).
fn payloads_in(
    v: &troupe_runtime::store::View<'_>,
    tasks: &[String],
) -> Result<HashMap<String, Value>, troupe_runtime::store::StoreError> {
    let mut out = HashMap::with_capacity(tasks.len());
    for id in tasks {
        if let Some(bytes) = v.get(crate::tables::TASKS, id)? {
            out.insert(id.clone(), troupe_runtime::codec::decode::<TaskSpec>(&bytes)?.payload);
        }
    }
    Ok(out)
}

impl State {
    pub(super) fn cache(&mut self, task: &str, payload: &Value) {
        let size = payload_size(payload);
        if self.cached_bytes + size <= self.cache_budget {
            self.cached_bytes += size;
            self.cached.insert(task.to_owned(), payload.clone());
        }
    }

    pub(super) fn uncache(&mut self, task: &str) -> Option<Value> {
        let payload = self.cached.remove(task)?;
        self.cached_bytes = self.cached_bytes.saturating_sub(payload_size(&payload));
        Some(payload)
    }

    /// Carries out effects in order. Starts that cannot be handed to their agent (its
    /// mailbox is closed) are given back to the engine, which may answer with more effects.
    pub(super) async fn apply(&mut self, effects: Vec<Effect>, now: Now) -> Result<(), ActorProcessingErr> {
        let mut pending: VecDeque<Effect> = effects.into();
        loop {
            // The payloads of the attempts about to start, read from the store in one view:
            // queued payloads live on disk, not in memory.
            let starting: Vec<String> = pending
                .iter()
                .filter_map(|e| match e {
                    Effect::Start { task, .. } if !self.cached.contains_key(task) => Some(task.clone()),
                    _ => None,
                })
                .collect();
            let mut payloads = if starting.is_empty() {
                HashMap::new()
            } else {
                self.store.view(move |v| payloads_in(v, &starting)).await?
            };
            let mut undelivered: HashMap<String, Vec<String>> = HashMap::new();
            while let Some(effect) = pending.pop_front() {
                match effect {
                    Effect::Start {
                        agent,
                        task,
                        attempt,
                        inputs,
                        transition,
                    } => {
                        if let Some(lost) = undelivered.get_mut(&agent) {
                            lost.push(task);
                            continue;
                        }
                        let timeout_ms = self.work.get(&task).copied().flatten();
                        let payload = match self.uncache(&task) {
                            Some(p) => p,
                            None => payloads.remove(&task).unwrap_or(Value::Null),
                        };
                        // A task with dependencies gets their results beside its payload.
                        let payload = if inputs.is_empty() {
                            payload
                        } else {
                            serde_json::json!({ "payload": payload, "dependencies": inputs })
                        };
                        let assignment = Assignment {
                            task_id: task.clone(),
                            attempt,
                            payload,
                            timeout_ms,
                        };
                        let delivered = self
                            .agents
                            .get(&agent)
                            .is_some_and(|a| a.cast(AgentMsg::Run(assignment)).is_ok());
                        if delivered {
                            self.persist(transition);
                        } else {
                            undelivered.entry(agent).or_default().push(task);
                        }
                    }
                    Effect::Record(transition) => self.persist(transition),
                    Effect::Cancel { agent, task, attempt } => {
                        if let Some(a) = self.agents.get(&agent) {
                            let _ = a.cast(AgentMsg::Cancel { task_id: task, attempt });
                        }
                    }
                    Effect::AgentEvent { agent, kind, data } => {
                        self.pending
                            .push(troupe_runtime::store::Op::Event(troupe_runtime::events::NewEvent::new(
                                kind,
                                Some(agent),
                                data,
                            )));
                    }
                    Effect::Wake(at) => {
                        let delay = at.saturating_duration_since(tokio::time::Instant::now());
                        self.myself.send_after(delay, || SchedulerMsg::Wake);
                    }
                }
            }
            if undelivered.is_empty() {
                self.write_pending();
                return Ok(());
            }
            for (agent, tasks) in undelivered {
                tracing::warn!(%agent, tasks = tasks.len(), "agent unreachable at dispatch; its work goes back");
                self.agents.remove(&agent);
                pending.extend(self.engine.undeliverable(&agent, &tasks, now));
            }
        }
    }
}

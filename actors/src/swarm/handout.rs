//! Work as a conductor hands it out. Each handout of a step (its topology, and the member
//! each of its subtasks goes to) is recorded on the swarm task before anything is submitted,
//! and the subtasks' ids once they are. A conductor taking the task up again after a restart
//! replays the record: the same requests under the same idempotency keys, so it finds the
//! tasks it had made. Built again for the swarm as it is now, a request could name another
//! member (one was lost meanwhile) or another topology (an ADAPTIVE swarm's load changed),
//! and its key would then stand for a different request.

use std::future::Future;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use troupe_runtime::events::NewEvent;
use troupe_runtime::idempotency::MAX_KEY_LEN;
use troupe_runtime::store::Batch;

use super::spec::{queue_capability, Topology};
use super::task::{SwarmTask, SwarmTaskState};
use super::Port;
use crate::error::ApiError;
use crate::tables::SWARM_TASKS;
use crate::task::{GraphTask, SubmitTaskRequest};

/// One step's work as it was handed out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handout {
    /// HIERARCHICAL (to members) or MESH (to the shared queue).
    pub topology: Topology,
    /// The member each subtask goes to, in order (`None`: the swarm's shared queue).
    pub members: Vec<Option<String>>,
    /// The subtasks' ids in the same order, once submitted.
    pub tasks: Vec<String>,
}

impl Handout {
    pub(crate) fn new(topology: Topology, members: Vec<Option<String>>) -> Self {
        Self {
            topology,
            members,
            tasks: Vec::new(),
        }
    }

    /// Its subtasks with their members (once submitted).
    pub(crate) fn subtasks(&self) -> Vec<(String, Option<String>)> {
        self.tasks.iter().cloned().zip(self.members.iter().cloned()).collect()
    }

    /// Its first subtask with its member: the one of a single piece of work.
    pub(crate) fn first(&self) -> (String, Option<String>) {
        self.subtasks().into_iter().next().unwrap_or_default()
    }
}

/// A request for one piece of work: to `member`, or to the swarm's shared queue (asking for
/// `capabilities` as well).
pub(crate) fn request_for(
    swarm: &str,
    capabilities: &[String],
    payload: Value,
    member: Option<&str>,
) -> SubmitTaskRequest {
    let mut req = SubmitTaskRequest::to_capability(queue_capability(swarm), payload);
    match member {
        Some(member) => {
            req.capability = None;
            req.agent_id = Some(member.to_owned());
        }
        None if !capabilities.is_empty() => {
            req.capability = None;
            req.capabilities = std::iter::once(queue_capability(swarm))
                .chain(capabilities.iter().cloned())
                .collect();
        }
        None => {}
    }
    req
}

/// The idempotency key a swarm task's step is submitted under: `swarm-task/<task>/<step>`,
/// or, when that is longer than a key may be (a long node name in the task's id, long plan
/// step keys), `swarm-task/<its SHA-256 in hex>`, as deterministic.
pub(crate) fn key_of(task: &str, step: &str) -> String {
    let key = format!("swarm-task/{task}/{step}");
    if key.len() <= MAX_KEY_LEN {
        return key;
    }
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("swarm-task/{hex}")
}

pub(crate) async fn load(api: &Port, id: &str) -> Result<SwarmTask, ApiError> {
    let bytes = api
        .store
        .get(SWARM_TASKS, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no swarm task {id}")))?;
    Ok(troupe_runtime::codec::decode(&bytes)?)
}

/// Changes the swarm task's record as `change` says (which may add an event), one writer at
/// a time: a conductor's steps record their work side by side.
pub(crate) async fn update(
    api: &Port,
    id: &str,
    change: impl FnOnce(&mut SwarmTask) -> Option<NewEvent>,
) -> Result<SwarmTask, ApiError> {
    let lock = api.locks.task(id);
    let _one_writer = lock.lock().await;
    let mut task = load(api, id).await?;
    let event = change(&mut task);
    let mut batch = Batch::new().put(SWARM_TASKS, task.id.clone(), troupe_runtime::codec::encode(&task)?);
    if task.state != SwarmTaskState::Running {
        batch = super::open::index(batch, &task);
    }
    if let Some(e) = event {
        batch = batch.event(e);
    }
    api.store.write(batch).await?;
    Ok(task)
}

/// The handout of `step`: as recorded, when the step was handed out before; else the one
/// `plan` makes for the swarm as it is now, recorded before anything is submitted.
pub(crate) async fn handout(
    api: &Port,
    id: &str,
    step: &str,
    plan: impl Future<Output = Result<Handout, ApiError>>,
) -> Result<Handout, ApiError> {
    if let Some(recorded) = load(api, id).await?.handouts.get(step) {
        return Ok(recorded.clone());
    }
    let made = plan.await?;
    let recorded = made.clone();
    update(api, id, |t| {
        t.handouts.insert(step.to_owned(), recorded);
        None
    })
    .await?;
    Ok(made)
}

/// Submits the handout's subtasks, each with its payload (one: a task; more: a graph in one
/// commit), unless that was done before, and records their ids. Whether they were submitted
/// now.
pub(crate) async fn submit(
    api: &Port,
    (id, swarm): (&str, &str),
    step: &str,
    handout: &mut Handout,
    capabilities: &[String],
    payloads: Vec<Value>,
) -> Result<bool, ApiError> {
    if !handout.tasks.is_empty() {
        return Ok(false);
    }
    let mut requests: Vec<SubmitTaskRequest> = handout
        .members
        .iter()
        .zip(payloads)
        .map(|(member, payload)| request_for(swarm, capabilities, payload, member.as_deref()))
        .collect();
    let key = key_of(id, step);
    handout.tasks = match requests.len() {
        1 => {
            let request = requests.remove(0);
            vec![api.subtasks.submit(request, key).await?.spec.id]
        }
        _ => {
            let graph = requests
                .into_iter()
                .enumerate()
                .map(|(i, request)| GraphTask {
                    key: format!("{step}-{i}"),
                    request,
                })
                .collect();
            let made = api.subtasks.submit_graph(graph, key).await?;
            made.into_iter().map(|t| t.spec.id).collect()
        }
    };
    let done = handout.clone();
    update(api, id, |t| {
        t.topology = Some(done.topology);
        for sub in &done.tasks {
            if !t.subtasks.contains(sub) {
                t.subtasks.push(sub.clone());
            }
        }
        t.handouts.insert(step.to_owned(), done);
        None
    })
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_subtask_key_is_hashed_within_the_limit_and_stays_the_same() {
        let short = key_of("0190-a@node", "single");
        assert_eq!(short, "swarm-task/0190-a@node/single");
        let task = format!("01a20903-810b-7085-b71e-a58fb03f94a3@{}", "n".repeat(60));
        let step = format!("step/{}/again-3", "k".repeat(200));
        let long = key_of(&task, &step);
        assert!(long.len() <= MAX_KEY_LEN, "{long} is {} characters", long.len());
        assert!(long.starts_with("swarm-task/"), "{long}");
        assert_eq!(long, key_of(&task, &step), "the same key each time");
        assert_ne!(long, key_of(&task, &format!("{step}x")), "another step, another key");
    }
}

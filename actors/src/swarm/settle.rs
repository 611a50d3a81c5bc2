//! Following a subtask to its end: waiting on it and on its member, and giving its work to
//! another member when that member is lost (the work returns to the swarm).

use serde_json::{json, Value};
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::Batch;

use super::handout::{self, Handout};
use super::spec::Topology;
use super::team::team_of;
use super::Port;
use crate::agent::AgentState;
use crate::error::ApiError;
use crate::task::{TaskRecord, TaskState};

/// How a wait for a subtask ended.
pub(crate) enum Settled {
    Done(Box<TaskRecord>),
    /// The member it was given to failed for good or was removed.
    MemberLost(String),
}

/// Whether a member can no longer do what it was given: FAILED (given up on) or gone.
async fn lost(api: &Port, member: &str) -> Result<bool, ApiError> {
    Ok(match api.members.get(member).await? {
        None => true,
        Some(v) => v.status.state == AgentState::Failed,
    })
}

/// Waits until the subtask has ended or, for one given to a member, until that member is
/// lost (a subtask cancelled because its member was lost counts as lost, so a conductor
/// taking the work up again after a restart follows it to where it went).
pub(crate) async fn wait_on(api: &Port, id: &str, member: Option<&str>) -> Result<Settled, ApiError> {
    let watch = &api.watch;
    let task_events = watch.watch(id);
    let member_events = member.map(|m| watch.watch(m));
    loop {
        // Enabled before looking, so an event between the look and the wait still wakes.
        let task_changed = task_events.notify.notified();
        let member_changed = member_events.as_ref().map(|w| w.notify.notified());
        tokio::pin!(task_changed);
        task_changed.as_mut().enable();
        let mut member_changed = member_changed.map(Box::pin);
        if let Some(m) = member_changed.as_mut() {
            m.as_mut().enable();
        }
        let task = api
            .subtasks
            .get(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("subtask {id} is gone")))?;
        let state = task.status.state;
        if let Some(m) = member {
            if !matches!(state, TaskState::Succeeded | TaskState::Failed | TaskState::Dead) && lost(api, m).await? {
                return Ok(Settled::MemberLost(m.to_owned()));
            }
        }
        if state.is_terminal() {
            return Ok(Settled::Done(Box::new(task)));
        }
        match member_changed {
            Some(m) => {
                tokio::select! {
                    _ = task_changed => {}
                    _ = m => {}
                }
            }
            None => task_changed.await,
        }
    }
}

/// A piece of work as the conductor hands it out, so it can hand it out again.
pub(crate) struct Work<'a> {
    pub(crate) swarm: &'a str,
    pub(crate) capabilities: &'a [String],
    pub(crate) payload: Value,
    pub(crate) topology: Topology,
}

/// The most times one piece of work returns to the swarm before the swarm task fails.
const MAX_RETURNS: usize = 10;

/// Waits for a subtask given as `work`. When the member it was given to is lost, it is
/// cancelled and given to another running member: its work returns to the swarm
/// (SWARM_WORK_RETURNED). Each return is a handout of its own (`<step>/again-<n>`), so a
/// conductor that starts again follows the work along the same returns.
pub(crate) async fn settle(
    api: &Port,
    id: &str,
    step: &str,
    first: (String, Option<String>),
    work: &Work<'_>,
) -> Result<TaskRecord, ApiError> {
    let (mut sub, mut member) = first;
    for round in 1..=MAX_RETURNS + 1 {
        let lost_member = match wait_on(api, &sub, member.as_deref()).await? {
            Settled::Done(task) => return Ok(*task),
            Settled::MemberLost(m) => m,
        };
        if round > MAX_RETURNS {
            break;
        }
        let _ = api.subtasks.cancel(&sub).await;
        let again = format!("{step}/again-{round}");
        let mut given = handout::handout(api, id, &again, async {
            let team = team_of(api, work.swarm, work.topology != Topology::Mesh).await?;
            let member = team.pick(work.topology, work.capabilities, round)?;
            Ok(Handout::new(work.topology, vec![member]))
        })
        .await?;
        let payloads = vec![work.payload.clone()];
        if handout::submit(api, (id, work.swarm), &again, &mut given, work.capabilities, payloads).await? {
            let data = json!({ "task": id, "subtask": sub, "lostMember": lost_member,
                "now": given.tasks[0], "member": given.members[0] });
            let returned = NewEvent::new("SWARM_WORK_RETURNED", Some(work.swarm.to_owned()), data);
            api.store.write(Batch::new().event(returned)).await?;
        }
        (sub, member) = given.first();
    }
    Err(ApiError::Unavailable(format!(
        "the work of step {step} returned to the swarm {MAX_RETURNS} times; no member kept it"
    )))
}

pub(crate) fn outcome(task: &TaskRecord) -> Result<Value, String> {
    match task.status.state {
        TaskState::Succeeded => Ok(task.status.result.clone().unwrap_or(Value::Null)),
        s => Err(format!(
            "subtask {} ended {}: {}",
            task.spec.id,
            s.as_str(),
            task.status.error.as_deref().unwrap_or("no error given")
        )),
    }
}

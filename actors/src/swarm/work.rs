//! Swarm tasks: what a client submits to a swarm, and how the coordinator conducts it. Every
//! piece of work is an ordinary task (with retries, dead letters and events), submitted under
//! an idempotency key made of the swarm task's id and the step, so a coordinator that takes a
//! task up again after a restart finds the tasks it had submitted instead of submitting more.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::Batch;

use super::rules::{self, Aggregate, Answer};
use super::spec::{queue_capability, SwarmSpec, SwarmStatus, Topology};
use super::task::{check_plan, PlannedStep, Step, SwarmTask, SwarmTaskMode, SwarmTaskState};
use crate::agent::{AgentState, Owner};
use crate::error::ApiError;
use crate::service::Api;
use crate::tables::{SWARM_STATUS, SWARM_TASKS};
use crate::task::{GraphTask, SubmitTaskRequest, TaskRecord, TaskState};

/// Conducts a swarm task to its end, recording its result.
pub(crate) async fn conduct(api: Api, task_id: String) {
    let outcome = run(&api, &task_id).await;
    let finish = async {
        let mut task = load(&api, &task_id).await?;
        if task.state != SwarmTaskState::Running {
            return Ok::<_, ApiError>(());
        }
        let (kind, data) = match outcome {
            Ok(result) => {
                task.state = SwarmTaskState::Succeeded;
                task.result = Some(result);
                ("SWARM_TASK_SUCCEEDED", json!({ "task": task.id }))
            }
            Err(e) => {
                task.state = SwarmTaskState::Failed;
                task.error = Some(e.to_string());
                ("SWARM_TASK_FAILED", json!({ "task": task.id, "error": e.to_string() }))
            }
        };
        task.finished_at = Some(troupe_runtime::clock::now());
        save(&api, &task, Some(NewEvent::new(kind, Some(task.swarm.clone()), data))).await
    };
    if let Err(e) = finish.await {
        tracing::warn!(task = %task_id, error = %e, "a swarm task's end was not recorded; it is taken up again at the coordinator's next start");
    }
}

pub(crate) async fn load(api: &Api, id: &str) -> Result<SwarmTask, ApiError> {
    let bytes = api
        .store()
        .get(SWARM_TASKS, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no swarm task {id}")))?;
    Ok(troupe_runtime::codec::decode(&bytes)?)
}

pub(crate) async fn save(api: &Api, task: &SwarmTask, event: Option<NewEvent>) -> Result<(), ApiError> {
    let mut batch = Batch::new().put(SWARM_TASKS, task.id.clone(), troupe_runtime::codec::encode(task)?);
    if let Some(e) = event {
        batch = batch.event(e);
    }
    api.store().write(batch).await?;
    Ok(())
}

/// Waits until the swarm task has ended, at most `timeout`; the task as it ended.
pub(crate) async fn wait_end(api: &Api, id: &str, timeout: std::time::Duration) -> Result<SwarmTask, ApiError> {
    let task = load(api, id).await?;
    // Its end is an event about its swarm.
    let watching = api.swarm_watch().watch(api.store(), &task.swarm);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let changed = watching.notify.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let task = load(api, id).await?;
        if task.state != SwarmTaskState::Running {
            return Ok(task);
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return Err(ApiError::Unavailable(format!(
                "swarm task {id} is still running after {} ms; it goes on",
                timeout.as_millis()
            )));
        }
    }
}

/// What a conductor needs of the swarm at one step.
struct Team {
    spec: SwarmSpec,
    /// Running members with their capabilities and free slots.
    running: Vec<(String, Vec<String>, usize)>,
}

/// The swarm as a conductor needs it now. Its running members are read unless the swarm is
/// MESH and `members` is false: mesh work goes to the shared queue without a pick.
async fn team_of(api: &Api, swarm: &str, members: bool) -> Result<Team, ApiError> {
    let spec = super::coordinator::load_spec(api.store(), swarm).await?;
    if !members && spec.topology == Topology::Mesh {
        return Ok(Team {
            spec,
            running: Vec::new(),
        });
    }
    let owner = Owner::Swarm(swarm.to_owned());
    let running = api
        .agents()
        .owned(&owner)
        .await?
        .into_iter()
        .filter(|v| v.status.state == AgentState::Running)
        .map(|v| {
            let free = (v.spec.max_concurrent_tasks as usize).saturating_sub(v.stats.running as usize);
            (v.spec.id, v.spec.capabilities, free)
        })
        .collect();
    Ok(Team { spec, running })
}

impl Team {
    fn capable(&self, caps: &[String]) -> Vec<&str> {
        self.running
            .iter()
            .filter(|(_, have, _)| caps.iter().all(|c| have.contains(c)))
            .map(|(id, _, _)| id.as_str())
            .collect()
    }

    fn free_slots(&self) -> usize {
        self.running.iter().map(|(_, _, f)| f).sum()
    }

    /// A request for one piece of work: to the shared queue (mesh), or to the member
    /// `turn` picks among the capable ones (hierarchical).
    fn request(
        &self,
        topology: Topology,
        caps: &[String],
        payload: Value,
        turn: usize,
    ) -> Result<SubmitTaskRequest, ApiError> {
        let mut req = SubmitTaskRequest::to_capability(queue_capability(&self.spec.id), payload);
        match topology {
            Topology::Hierarchical | Topology::Adaptive => {
                let capable = self.capable(caps);
                if capable.is_empty() {
                    return Err(ApiError::Unavailable(format!(
                        "no running member of swarm {} has the capabilities {caps:?}",
                        self.spec.name
                    )));
                }
                req.capability = None;
                req.agent_id = Some(capable[turn % capable.len()].to_owned());
            }
            Topology::Mesh => {
                if !caps.is_empty() {
                    req.capability = None;
                    req.capabilities = std::iter::once(queue_capability(&self.spec.id))
                        .chain(caps.iter().cloned())
                        .collect();
                }
            }
        }
        Ok(req)
    }
}

/// The topology this task uses: the swarm's, or for an ADAPTIVE swarm the rule's (a switch is
/// recorded on the swarm with its reason).
async fn topology_for(api: &Api, team: &Team, has_dependencies: bool, subtasks: usize) -> Result<Topology, ApiError> {
    if team.spec.topology != Topology::Adaptive {
        return Ok(team.spec.topology);
    }
    let (chosen, reason) = rules::adaptive(has_dependencies, subtasks, team.free_slots());
    super::coordinator::switch(api, &team.spec.id, chosen, &reason).await?;
    Ok(chosen)
}

async fn record_subtasks(api: &Api, id: &str, ids: &[String], topology: Topology) -> Result<(), ApiError> {
    let mut task = load(api, id).await?;
    task.topology = Some(topology);
    for t in ids {
        if !task.subtasks.contains(t) {
            task.subtasks.push(t.clone());
        }
    }
    save(api, &task, None).await
}

/// Submits independent subtasks in one commit (a graph without dependencies); their ids, in
/// order.
async fn submit_all(
    api: &Api,
    id: &str,
    step: &str,
    requests: Vec<SubmitTaskRequest>,
) -> Result<Vec<String>, ApiError> {
    let graph = requests
        .into_iter()
        .enumerate()
        .map(|(i, request)| GraphTask {
            key: format!("{step}-{i}"),
            request,
        })
        .collect();
    let key = format!("swarm-task/{id}/{step}");
    let made = api.tasks().submit_graph(graph, Some(key)).await?;
    Ok(made.into_iter().map(|t| t.spec.id).collect())
}

async fn submit(api: &Api, id: &str, step: &str, req: SubmitTaskRequest) -> Result<String, ApiError> {
    let key = format!("swarm-task/{id}/{step}");
    Ok(api.tasks().submit(req, Some(key)).await?.spec.id)
}

/// How a wait for a subtask ended.
enum Settled {
    Done(Box<TaskRecord>),
    /// The member it was given to failed for good or was removed.
    MemberLost(String),
}

/// Whether a member can no longer do what it was given: FAILED (given up on) or gone.
async fn lost(api: &Api, member: &str) -> Result<bool, ApiError> {
    Ok(match api.agents().get(member).await? {
        None => true,
        Some(v) => v.status.state == AgentState::Failed,
    })
}

/// Waits until the subtask has ended or, for one given to a member, until that member is
/// lost (a subtask cancelled because its member was lost counts as lost, so a conductor
/// taking the work up again after a restart follows it to where it went).
async fn wait_on(api: &Api, id: &str, member: Option<&str>) -> Result<Settled, ApiError> {
    let watch = api.swarm_watch();
    let task_events = watch.watch(api.store(), id);
    let member_events = member.map(|m| watch.watch(api.store(), m));
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
            .tasks()
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
struct Work<'a> {
    swarm: &'a str,
    capabilities: &'a [String],
    payload: Value,
    topology: Topology,
}

/// The most times one piece of work returns to the swarm before the swarm task fails.
const MAX_RETURNS: usize = 10;

/// Waits for a subtask given as `work`. When the member it was given to is lost, it is
/// cancelled and given to another running member: its work returns to the swarm
/// (SWARM_WORK_RETURNED).
async fn settle(
    api: &Api,
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
        let _ = api.tasks().cancel(&sub, None).await;
        let team = team_of(api, work.swarm, work.topology != Topology::Mesh).await?;
        let req = team.request(work.topology, work.capabilities, work.payload.clone(), round)?;
        let again = submit(api, id, &format!("{step}/again-{round}"), req.clone()).await?;
        let data =
            json!({ "task": id, "subtask": sub, "lostMember": lost_member, "now": again, "member": req.agent_id });
        let returned = NewEvent::new("SWARM_WORK_RETURNED", Some(work.swarm.to_owned()), data);
        api.store().write(Batch::new().event(returned)).await?;
        record_subtasks(api, id, std::slice::from_ref(&again), work.topology).await?;
        (sub, member) = (again, req.agent_id);
    }
    Err(ApiError::Unavailable(format!(
        "the work of step {step} returned to the swarm {MAX_RETURNS} times; no member kept it"
    )))
}

fn outcome(task: &TaskRecord) -> Result<Value, String> {
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

/// Hands one piece of work out (as `turn` picks) and waits for its result.
async fn one(api: &Api, id: &str, step: &str, turn: usize, work: Work<'_>) -> Result<Value, ApiError> {
    let team = team_of(api, work.swarm, work.topology != Topology::Mesh).await?;
    let req = team.request(work.topology, work.capabilities, work.payload.clone(), turn)?;
    let member = req.agent_id.clone();
    let sub = submit(api, id, step, req).await?;
    record_subtasks(api, id, std::slice::from_ref(&sub), work.topology).await?;
    outcome(&settle(api, id, step, (sub, member), &work).await?).map_err(ApiError::Conflict)
}

async fn run(api: &Api, id: &str) -> Result<Value, ApiError> {
    let task = load(api, id).await?;
    match task.mode {
        SwarmTaskMode::Single { capabilities, payload } => {
            let team = team_of(api, &task.swarm, false).await?;
            let topology = topology_for(api, &team, false, 1).await?;
            let work = Work {
                swarm: &task.swarm,
                capabilities: &capabilities,
                payload,
                topology,
            };
            one(api, id, "single", 0, work).await
        }
        SwarmTaskMode::ScatterGather {
            k,
            aggregate,
            capabilities,
            payload,
        } => {
            let team = team_of(api, &task.swarm, true).await?;
            let capable = team.capable(&capabilities);
            if capable.len() < k as usize {
                return Err(ApiError::Unavailable(format!(
                    "scatter-gather to {k} members, but {} running members can take it",
                    capable.len()
                )));
            }
            let requests = capable.iter().take(k as usize).map(|member| {
                let mut req = SubmitTaskRequest::to_capability(String::new(), payload.clone());
                req.capability = None;
                req.agent_id = Some((*member).to_owned());
                req
            });
            let subs = submit_all(api, id, "scatter", requests.collect()).await?;
            record_subtasks(api, id, &subs, Topology::Hierarchical).await?;
            let mut answers = Vec::new();
            for (sub, member) in subs.iter().zip(&capable) {
                // A member lost gives no answer: it counts against the others' agreement.
                let answer = match wait_on(api, sub, Some(member)).await? {
                    Settled::Done(done) => Answer {
                        agent: done.status.agent_id.clone().unwrap_or_else(|| (*member).to_owned()),
                        result: outcome(&done),
                    },
                    Settled::MemberLost(m) => Answer {
                        result: Err(format!("member {m} failed before it answered")),
                        agent: m,
                    },
                };
                let first_ok = aggregate == Aggregate::First && answer.result.is_ok();
                answers.push(answer);
                if first_ok {
                    // The others' answers are not needed.
                    for other in &subs[answers.len()..] {
                        let _ = api.tasks().cancel(other, None).await;
                    }
                    break;
                }
            }
            rules::aggregate(aggregate, &answers).map_err(ApiError::Conflict)
        }
        SwarmTaskMode::Pipeline { stages, input } => {
            let mut value = input;
            for (i, stage) in stages.iter().enumerate() {
                let team = team_of(api, &task.swarm, false).await?;
                let topology = topology_for(api, &team, true, 1).await?;
                let work = Work {
                    swarm: &task.swarm,
                    capabilities: &stage.capabilities,
                    payload: value,
                    topology,
                };
                value = one(api, id, &format!("stage-{i}"), i, work).await?;
            }
            Ok(value)
        }
        SwarmTaskMode::MapReduce { items, map, reduce } => {
            let items = items.as_array().cloned().unwrap_or_default();
            let team = team_of(api, &task.swarm, false).await?;
            let topology = topology_for(api, &team, false, items.len()).await?;
            let requests = items
                .iter()
                .enumerate()
                .map(|(i, item)| team.request(topology, &map.capabilities, item.clone(), i))
                .collect::<Result<Vec<_>, _>>()?;
            let members: Vec<Option<String>> = requests.iter().map(|r| r.agent_id.clone()).collect();
            let ids = submit_all(api, id, "map", requests).await?;
            record_subtasks(api, id, &ids, topology).await?;
            let subs: Vec<(String, Option<String>)> = ids.into_iter().zip(members).collect();
            let mut results = Vec::new();
            for (i, (sub, item)) in subs.into_iter().zip(items).enumerate() {
                let work = Work {
                    swarm: &task.swarm,
                    capabilities: &map.capabilities,
                    payload: item,
                    topology,
                };
                let done = settle(api, id, &format!("map-{i}"), sub, &work).await?;
                results.push(outcome(&done).map_err(ApiError::Conflict)?);
            }
            let work = Work {
                swarm: &task.swarm,
                capabilities: &reduce.capabilities,
                payload: json!({ "results": results }),
                topology,
            };
            one(api, id, "reduce", 0, work).await
        }
        SwarmTaskMode::Plan { steps, input } => {
            let steps = if steps.is_empty() {
                ask_planner(api, id, &task.swarm, input).await?
            } else {
                steps
            };
            let team = team_of(api, &task.swarm, false).await?;
            let has_dependencies = steps.iter().any(|s| !s.depends_on.is_empty());
            let topology = topology_for(api, &team, has_dependencies, steps.len()).await?;
            run_plan(api, id, &task.swarm, &steps, topology).await
        }
    }
}

/// Runs a plan: each step is handed out once the steps it depends on have succeeded, with
/// their results (`{"payload": …, "dependencies": {"<task id>": <result>}}`, as a task graph
/// gives them), and followed as `one` follows its work, so a step whose member is lost
/// returns to the swarm. Its result: the result of the step nothing depends on, or each such
/// step's by key.
async fn run_plan(api: &Api, id: &str, swarm: &str, steps: &[Step], topology: Topology) -> Result<Value, ApiError> {
    // Step key -> the task that did it and its result.
    let mut results: HashMap<&str, (String, Value)> = HashMap::new();
    let mut started = BTreeSet::new();
    let mut running = futures::stream::FuturesUnordered::new();
    loop {
        let ready: Vec<(usize, &Step)> = steps
            .iter()
            .enumerate()
            .filter(|(_, s)| !started.contains(s.key.as_str()))
            .filter(|(_, s)| s.depends_on.iter().all(|d| results.contains_key(d.as_str())))
            .collect();
        if !ready.is_empty() {
            let team = team_of(api, swarm, topology != Topology::Mesh).await?;
            for (turn, step) in ready {
                started.insert(step.key.as_str());
                let payload = if step.depends_on.is_empty() {
                    step.payload.clone()
                } else {
                    let inputs: serde_json::Map<String, Value> = step
                        .depends_on
                        .iter()
                        .filter_map(|d| results.get(d.as_str()).cloned())
                        .collect();
                    json!({ "payload": step.payload, "dependencies": inputs })
                };
                let req = team.request(topology, &step.capabilities, payload.clone(), turn)?;
                let member = req.agent_id.clone();
                let name = format!("step/{}", step.key);
                let sub = submit(api, id, &name, req).await?;
                record_subtasks(api, id, std::slice::from_ref(&sub), topology).await?;
                running.push(async move {
                    let work = Work {
                        swarm,
                        capabilities: &step.capabilities,
                        payload,
                        topology,
                    };
                    (step, settle(api, id, &name, (sub, member), &work).await)
                });
            }
        }
        let Some((step, done)) = futures::StreamExt::next(&mut running).await else {
            break;
        };
        let done = done?;
        let value = outcome(&done).map_err(|e| ApiError::Conflict(format!("plan step {:?}: {e}", step.key)))?;
        results.insert(step.key.as_str(), (done.spec.id.clone(), value));
    }
    // The result of the steps nothing depends on: the one, or each by key.
    let needed: BTreeSet<&str> = steps
        .iter()
        .flat_map(|s| s.depends_on.iter().map(String::as_str))
        .collect();
    let mut sinks: Vec<(&str, Value)> = steps
        .iter()
        .filter(|s| !needed.contains(s.key.as_str()))
        .filter_map(|s| Some((s.key.as_str(), results.remove(s.key.as_str())?.1)))
        .collect();
    Ok(match sinks.len() {
        1 => sinks.remove(0).1,
        _ => Value::Object(sinks.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
    })
}

/// Asks a member with the capability `plan` for the steps of `input`.
async fn ask_planner(api: &Api, id: &str, swarm: &str, input: Value) -> Result<Vec<Step>, ApiError> {
    let work = Work {
        swarm,
        capabilities: &["plan".to_owned()],
        payload: input,
        topology: Topology::Hierarchical,
    };
    let plan = one(api, id, "planner", 0, work).await?;
    let steps: Vec<PlannedStep> =
        serde_json::from_value(plan.get("steps").cloned().unwrap_or(Value::Null)).map_err(|e| {
            ApiError::Conflict(format!(
                "the planner's answer is not a plan ({{\"steps\": [...]}}): {e}"
            ))
        })?;
    let steps: Vec<Step> = steps.into_iter().map(Into::into).collect();
    check_plan(&steps)?;
    Ok(steps)
}

/// The swarm's status as last recorded.
pub(crate) async fn status(store: &troupe_runtime::store::Store, swarm: &str) -> Result<SwarmStatus, ApiError> {
    let bytes = store
        .get(SWARM_STATUS, swarm)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no swarm {swarm}")))?;
    Ok(troupe_runtime::codec::decode(&bytes)?)
}

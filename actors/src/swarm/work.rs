//! Swarm tasks: what a client submits to a swarm, and how the coordinator conducts it. Every
//! piece of work is an ordinary task (with retries, dead letters and events), submitted under
//! an idempotency key made of the swarm task's id and the step, and recorded on the swarm
//! task as it is handed out ([`super::handout`]), so a coordinator that takes a task up again
//! after a restart finds the tasks it had submitted instead of submitting more.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};
use troupe_runtime::events::NewEvent;

use super::choices;
use super::handout::{self, load, update, Handout};
use super::rules::{self, Aggregate, Answer};
use super::settle::{outcome, settle, wait_on, Settled, Work};
use super::spec::Topology;
use super::task::{check_plan, PlannedStep, Step, SwarmTask, SwarmTaskMode, SwarmTaskState};
use super::team::{team_of, Team};
use super::Port;
use crate::error::ApiError;

/// Conducts a swarm task to its end, recording its result.
pub(crate) async fn conduct(api: Port, task_id: String) {
    let outcome = run(&api, &task_id).await;
    let finish = update(&api, &task_id, |task| {
        if task.state != SwarmTaskState::Running {
            return None;
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
        Some(NewEvent::new(kind, Some(task.swarm.clone()), data))
    });
    if let Err(e) = finish.await {
        tracing::warn!(task = %task_id, error = %e, "a swarm task's end was not recorded; it is taken up again at the coordinator's next start");
    }
}

/// Waits until the swarm task has ended, at most `timeout`; the task as it ended.
pub(crate) async fn wait_end(api: &Port, id: &str, timeout: std::time::Duration) -> Result<SwarmTask, ApiError> {
    let task = load(api, id).await?;
    // Its end is an event about its swarm.
    let watching = api.watch.watch(&task.swarm);
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

/// The topology this task uses for the work of the steps `of_steps` names: the one recorded
/// when such a step was handed out before (the work goes on as it started); else the swarm's,
/// or for an ADAPTIVE swarm the rule's (a switch is recorded on the swarm with its reason).
async fn topology_for(
    api: &Port,
    team: &Team,
    task: &SwarmTask,
    of_steps: impl Fn(&str) -> bool,
    has_dependencies: bool,
    subtasks: usize,
) -> Result<Topology, ApiError> {
    let recorded = task.handouts.iter().find(|(step, _)| of_steps(step.as_str()));
    let swarm = team.spec.topology;
    let chosen = choices::topology(
        recorded.map(|(_, h)| h.topology),
        swarm,
        has_dependencies,
        subtasks,
        team.free_slots(),
    );
    if let Some(reason) = &chosen.switch {
        super::coordinator::switch(api, &team.spec.id, chosen.topology, reason).await?;
    }
    Ok(chosen.topology)
}

/// Hands one piece of work out (as `turn` picks) and waits for its result.
async fn one(api: &Port, id: &str, step: &str, turn: usize, mut work: Work<'_>) -> Result<Value, ApiError> {
    let mut given = handout::handout(api, id, step, async {
        let team = team_of(api, work.swarm, work.topology != Topology::Mesh).await?;
        let member = team.pick(work.topology, work.capabilities, turn)?;
        Ok(Handout::new(work.topology, vec![member]))
    })
    .await?;
    work.topology = given.topology;
    let payloads = vec![work.payload.clone()];
    handout::submit(api, (id, work.swarm), step, &mut given, work.capabilities, payloads).await?;
    outcome(&settle(api, id, step, given.first(), &work).await?).map_err(ApiError::Conflict)
}

async fn run(api: &Port, id: &str) -> Result<Value, ApiError> {
    let task = load(api, id).await?;
    let swarm = task.swarm.as_str();
    match &task.mode {
        SwarmTaskMode::Single { capabilities, payload } => {
            let team = team_of(api, swarm, false).await?;
            let topology = topology_for(api, &team, &task, |s| s == "single", false, 1).await?;
            let work = Work {
                swarm,
                capabilities,
                payload: payload.clone(),
                topology,
            };
            one(api, id, "single", 0, work).await
        }
        SwarmTaskMode::ScatterGather {
            k,
            aggregate,
            capabilities,
            payload,
        } => scatter_gather(api, &task, *k as usize, *aggregate, capabilities, payload).await,
        SwarmTaskMode::Pipeline { stages, input } => {
            let mut value = input.clone();
            for (i, stage) in stages.iter().enumerate() {
                let step = format!("stage-{i}");
                let team = team_of(api, swarm, false).await?;
                let topology = topology_for(api, &team, &task, |s| s == step, true, 1).await?;
                let work = Work {
                    swarm,
                    capabilities: &stage.capabilities,
                    payload: value,
                    topology,
                };
                value = one(api, id, &step, i, work).await?;
            }
            Ok(value)
        }
        SwarmTaskMode::MapReduce { items, map, reduce } => {
            let items = items.as_array().cloned().unwrap_or_default();
            let team = team_of(api, swarm, false).await?;
            let topology = topology_for(api, &team, &task, |s| s == "map", false, items.len()).await?;
            let mut given = handout::handout(api, id, "map", async {
                let members = (0..items.len())
                    .map(|i| team.pick(topology, &map.capabilities, i))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Handout::new(topology, members))
            })
            .await?;
            handout::submit(api, (id, swarm), "map", &mut given, &map.capabilities, items.clone()).await?;
            let mut results = Vec::new();
            for (i, (first, item)) in given.subtasks().into_iter().zip(items).enumerate() {
                let work = Work {
                    swarm,
                    capabilities: &map.capabilities,
                    payload: item,
                    topology: given.topology,
                };
                let done = settle(api, id, &format!("map-{i}"), first, &work).await?;
                results.push(outcome(&done).map_err(ApiError::Conflict)?);
            }
            let work = Work {
                swarm,
                capabilities: &reduce.capabilities,
                payload: json!({ "results": results }),
                topology: given.topology,
            };
            one(api, id, "reduce", 0, work).await
        }
        SwarmTaskMode::Plan { steps, input } => {
            let steps = if steps.is_empty() {
                ask_planner(api, id, swarm, input.clone()).await?
            } else {
                steps.clone()
            };
            let team = team_of(api, swarm, false).await?;
            let has_dependencies = steps.iter().any(|s| !s.depends_on.is_empty());
            let of_steps = |s: &str| s.starts_with("step/");
            let topology = topology_for(api, &team, &task, of_steps, has_dependencies, steps.len()).await?;
            run_plan(api, id, swarm, &steps, topology).await
        }
    }
}

/// The same payload to `k` distinct members, their answers aggregated.
async fn scatter_gather(
    api: &Port,
    task: &SwarmTask,
    k: usize,
    aggregate: Aggregate,
    capabilities: &[String],
    payload: &Value,
) -> Result<Value, ApiError> {
    let (id, swarm) = (task.id.as_str(), task.swarm.as_str());
    let mut given = handout::handout(api, id, "scatter", async {
        let team = team_of(api, swarm, true).await?;
        let members = choices::scatter_members(&team.capable(capabilities), k)?;
        Ok(Handout::new(Topology::Hierarchical, members))
    })
    .await?;
    let payloads = vec![payload.clone(); given.members.len()];
    handout::submit(api, (id, swarm), "scatter", &mut given, capabilities, payloads).await?;
    let subs = given.subtasks();
    // Every member is waited on at once: answers are taken as they arrive, so a member that
    // hangs delays FIRST only until another has answered.
    let mut waits: futures::stream::FuturesUnordered<_> = subs
        .iter()
        .enumerate()
        .map(|(i, (sub, member))| async move {
            let member = member.as_deref().unwrap_or_default();
            // A member lost gives no answer: it counts against the others' agreement.
            let answer = match wait_on(api, sub, Some(member)).await? {
                Settled::Done(done) => Answer {
                    agent: done.status.agent_id.clone().unwrap_or_else(|| member.to_owned()),
                    result: outcome(&done),
                },
                Settled::MemberLost(m) => Answer {
                    result: Err(format!("member {m} failed before it answered")),
                    agent: m,
                },
            };
            Ok::<_, ApiError>((i, answer))
        })
        .collect();
    let mut arrived: Vec<Option<Answer>> = vec![None; subs.len()];
    while let Some(next) = futures::StreamExt::next(&mut waits).await {
        let (i, answer) = next?;
        let first_ok = aggregate == Aggregate::First && answer.result.is_ok();
        arrived[i] = Some(answer);
        if first_ok {
            // The others' answers are not needed.
            for ((other, _), _) in subs.iter().zip(&arrived).filter(|(_, a)| a.is_none()) {
                let _ = api.subtasks.cancel(other).await;
            }
            break;
        }
    }
    drop(waits);
    // In the members' order, whatever order they arrived in.
    let answers: Vec<Answer> = arrived.into_iter().flatten().collect();
    rules::aggregate(aggregate, &answers).map_err(ApiError::Conflict)
}

/// Runs a plan: each step is handed out once the steps it depends on have succeeded, with
/// their results (`{"payload": …, "dependencies": {"<task id>": <result>}}`, as a task graph
/// gives them), and followed as `one` follows its work, so a step whose member is lost
/// returns to the swarm. Its result: the result of the step nothing depends on, or each such
/// step's by key.
async fn run_plan(api: &Port, id: &str, swarm: &str, steps: &[Step], topology: Topology) -> Result<Value, ApiError> {
    // Step key -> the task that did it and its result.
    let mut results: HashMap<&str, (String, Value)> = HashMap::new();
    let mut started = BTreeSet::new();
    let mut running = futures::stream::FuturesUnordered::new();
    loop {
        let ready = choices::ready_steps(steps, &started, &results);
        if !ready.is_empty() {
            let team = team_of(api, swarm, topology != Topology::Mesh).await?;
            for (turn, step) in ready {
                started.insert(step.key.as_str());
                let payload = choices::step_input(step, &results);
                let name = format!("step/{}", step.key);
                let mut given = handout::handout(api, id, &name, async {
                    let member = team.pick(topology, &step.capabilities, turn)?;
                    Ok(Handout::new(topology, vec![member]))
                })
                .await?;
                let payloads = vec![payload.clone()];
                handout::submit(api, (id, swarm), &name, &mut given, &step.capabilities, payloads).await?;
                let topology = given.topology;
                running.push(async move {
                    let work = Work {
                        swarm,
                        capabilities: &step.capabilities,
                        payload,
                        topology,
                    };
                    (step, settle(api, id, &name, given.first(), &work).await)
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
    Ok(choices::plan_result(steps, results))
}

/// Asks a member with the capability `plan` for the steps of `input`.
async fn ask_planner(api: &Port, id: &str, swarm: &str, input: Value) -> Result<Vec<Step>, ApiError> {
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

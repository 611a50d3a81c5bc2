//! Reading what a lost or leaving node holds for the plan of its moves (made in the entry
//! that declares it, see `plan.rs`), and each node following those moves.

use super::plan::{Agent, Host, Inventory, Survivor, Swarm, Task};
use super::*;

/// Where a lost node's entities go (see [`super::plan`]).
pub(super) type Plan = super::plan::Plan<AgentSpec, SwarmSpec, HostSpec>;

/// Plans the moves of the lost node `lost`'s entities to `survivors` from what the view
/// holds of them (see [`super::plan`]).
pub(super) fn plan_moves(v: &View<'_>, lost: &str, survivors: &[String]) -> Result<Plan, StoreError> {
    Ok(super::plan::plan(inventory(v, lost, survivors)?))
}

/// What the view holds of the lost node `lost`: its agents (its own and its swarms'
/// members), swarms, hosts with the VMs on them and open tasks, and how many agents and
/// hosts each survivor holds already.
fn inventory(
    v: &View<'_>,
    lost: &str,
    survivors: &[String],
) -> Result<Inventory<AgentSpec, SwarmSpec, HostSpec>, StoreError> {
    let mut agents = Vec::new();
    let mut load: BTreeMap<&str, usize> = survivors.iter().map(|s| (s.as_str(), 0)).collect();
    v.scan(AGENTS, None, |id, bytes| {
        let Some(placement) = placement_in(v, id)? else {
            return Ok(true);
        };
        if placement.node == lost {
            let spec: AgentSpec = troupe_runtime::codec::decode(bytes)?;
            agents.push(Agent {
                id: spec.id.clone(),
                epoch: placement.epoch,
                pinned: spec.placement.pinned,
                wants: spec.placement.node_labels.clone(),
                swarm: match &spec.owner {
                    Owner::Node => None,
                    Owner::Swarm(swarm) => Some(swarm.clone()),
                },
                spec,
            });
        } else if let Some(n) = load.get_mut(placement.node.as_str()) {
            *n += 1;
        }
        Ok(true)
    })?;
    let mut swarms = Vec::new();
    v.scan(SWARMS, None, |id, bytes| {
        if let Some(placement) = placement_in(v, id)?.filter(|p| p.node == lost) {
            let spec: SwarmSpec = troupe_runtime::codec::decode(bytes)?;
            swarms.push(Swarm {
                id: spec.id.clone(),
                epoch: placement.epoch,
                parent: spec.lead.as_ref().map(|l| l.swarm.clone()),
                spec,
            });
        }
        Ok(true)
    })?;
    // Where a host is driven is its placement: a host moved once is no longer on the node
    // its record names.
    let mut drives: BTreeMap<&str, usize> = survivors.iter().map(|s| (s.as_str(), 0)).collect();
    let mut lost_hosts = Vec::new();
    v.scan(HOSTS, None, |id, bytes| {
        let Some(at) = placement_in(v, id)? else {
            return Ok(true);
        };
        match drives.get_mut(at.node.as_str()) {
            Some(n) => *n += 1,
            None if at.node == lost => lost_hosts.push((troupe_runtime::codec::decode::<HostSpec>(bytes)?, at.epoch)),
            None => {}
        }
        Ok(true)
    })?;
    let mut on_host: HashMap<String, Vec<String>> = HashMap::new();
    if !lost_hosts.is_empty() {
        v.scan(VM_STATUS, None, |id, bytes| {
            if let Some(host) = troupe_runtime::codec::decode::<VmStatus>(bytes)?.host {
                on_host.entry(host).or_default().push(id.to_owned());
            }
            Ok(true)
        })?;
    }
    let hosts = lost_hosts
        .into_iter()
        .map(|(spec, epoch)| Host {
            epoch,
            vms: on_host.remove(&spec.id).unwrap_or_default(),
            spec,
        })
        .collect();
    let mut open = Vec::new();
    v.scan(OPEN_TASKS, None, |id, _| {
        if held_in(v, id, lost)? {
            open.push(id.to_owned());
        }
        Ok(true)
    })?;
    let mut tasks = Vec::new();
    for id in open {
        let (Some(spec), Some(status)) = (v.get(TASKS, &id)?, v.get(TASK_STATUS, &id)?) else {
            continue;
        };
        let spec: TaskSpec = troupe_runtime::codec::decode(&spec)?;
        let status: TaskStatus = troupe_runtime::codec::decode(&status)?;
        let epoch = placement_in(v, &id)?.map_or(0, |p| p.epoch);
        tasks.push(Task {
            id,
            epoch,
            target: spec.target_agent,
            agent: status.agent_id,
        });
    }
    let survivors = survivors
        .iter()
        .map(|s| {
            Ok(Survivor {
                name: s.clone(),
                labels: crate::cluster::replicated::labels_in(v, s)?,
                agents: load.get(s.as_str()).copied().unwrap_or_default(),
                hosts: drives.get(s.as_str()).copied().unwrap_or_default(),
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Inventory {
        epoch: epoch_in(v, lost)?,
        agents,
        swarms,
        hosts,
        tasks,
        survivors,
    })
}

/// Follows the moves the cluster commits: routes by them, starts the agents moved to this
/// node and hands its scheduler the tasks moved here. Runs for the node's lifetime.
pub(crate) async fn follow_moves(store: Store, cluster: Cluster, rehome: super::Rehome) {
    let me = cluster.name();
    // The directory this node routes by follows the state machine (see
    // `cluster::directory`); this follows only the moves that start work here. A snapshot's
    // moves come without events: the lease keeper starts the node's work again from its
    // tables then.
    let mut live = store.live();
    loop {
        let event = match live.recv().await {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "fell behind the event log: work moved here meanwhile starts when the node's work starts again"
                );
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        match event.kind.as_str() {
            "AGENT_MOVED" if event.data["to"] == me.as_str() => {
                let Some(id) = event.subject.clone() else { continue };
                let agents = rehome.agents.clone();
                // Each start may take the agent's own start timeout: none waits for another.
                tokio::spawn(async move {
                    match agents.adopt(&id).await {
                        Ok(true) => tracing::info!(agent = %id, "started an agent moved to this node"),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(agent = %id, error = %e, "could not start an agent moved to this node")
                        }
                    }
                });
            }
            "SWARM_MOVED" if event.data["to"] == me.as_str() => {
                let Some(id) = event.subject.clone() else { continue };
                let port = rehome.swarms.clone();
                tokio::spawn(async move {
                    match port.take_over(&id).await {
                        Ok(()) => tracing::info!(swarm = %id, "started a swarm moved to this node"),
                        Err(e) => tracing::warn!(swarm = %id, error = %e, "could not start a swarm moved to this node"),
                    }
                });
            }
            "HOST_MOVED" if event.data["to"] == me.as_str() => {
                let Some(id) = event.subject.clone() else { continue };
                let (fleet, intensity) = (rehome.fleet.clone(), rehome.host_intensity);
                tokio::spawn(async move {
                    match crate::host::take_over(&fleet, &id, intensity).await {
                        Ok(()) => tracing::info!(host = %id, "driving a host moved to this node"),
                        Err(e) => tracing::warn!(host = %id, error = %e, "could not drive a host moved to this node"),
                    }
                });
            }
            // Tasks move alone too (a node hands the tasks none of its agents serve to one
            // whose agents do).
            "TASKS_MOVED" if event.data["to"] == me.as_str() => {
                let Some(from) = event.data["from"].as_str() else {
                    continue;
                };
                // A scheduler not running reads what it holds when it starts.
                if let Some(scheduler) = rehome.scheduler.get() {
                    let _ = scheduler.cast(crate::scheduler::SchedulerMsg::Adopt(from.to_owned()));
                }
            }
            _ => {}
        }
    }
}

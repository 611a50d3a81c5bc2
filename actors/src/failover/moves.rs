//! Reading what a lost or leaving node holds for the plan of its moves (made in the entry
//! that declares it, see `plan.rs`), and each node following those moves.

use super::plan::{Agent, Host, Inventory, Survivor, Swarm, Task};
use super::*;
use crate::cluster::directory::Arrival;

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

/// What arrived here is, as the tables say: each is started by its own room.
#[derive(Debug, Default, PartialEq)]
struct Started {
    /// Agents the node runs for itself (a swarm's members start with their swarm).
    agents: Vec<String>,
    /// Every agent that arrived, members included: the messages that waited for each on
    /// its old node are delivered here.
    mailboxes: Vec<String>,
    /// Swarms whose parent did not arrive with them (a sub-team starts with its swarm).
    swarms: Vec<String>,
    hosts: Vec<String>,
    /// Open tasks: the scheduler takes each it does not know yet.
    tasks: Vec<String>,
}

/// Sorts what arrived by what the view holds of it. A VM arrives with its host; an id
/// none of these tables holds (a record deleted since) is left.
fn started(v: &View<'_>, arrived: &[Arrival]) -> Result<Started, StoreError> {
    let mut out = Started::default();
    let swarms: Vec<(String, SwarmSpec)> = arrived
        .iter()
        .filter_map(|a| v.get(SWARMS, &a.id).transpose().map(|b| b.map(|b| (a.id.clone(), b))))
        .map(|r| r.and_then(|(id, b)| Ok((id, troupe_runtime::codec::decode::<SwarmSpec>(&b)?))))
        .collect::<Result<_, StoreError>>()?;
    for (id, spec) in &swarms {
        let parent_arrived = spec
            .lead
            .as_ref()
            .is_some_and(|l| swarms.iter().any(|(s, _)| *s == l.swarm));
        if !parent_arrived {
            out.swarms.push(id.clone());
        }
    }
    for a in arrived {
        if let Some(bytes) = v.get(AGENTS, &a.id)? {
            let spec: AgentSpec = troupe_runtime::codec::decode(&bytes)?;
            if matches!(spec.owner, Owner::Node) {
                out.agents.push(a.id.clone());
            }
            out.mailboxes.push(a.id.clone());
        } else if v.get(HOSTS, &a.id)?.is_some() {
            out.hosts.push(a.id.clone());
        } else if v.get(OPEN_TASKS, &a.id)?.is_some() {
            out.tasks.push(a.id.clone());
        }
    }
    Ok(out)
}

/// Follows the moves the cluster commits to this node: starts the agents, swarms and host
/// drivers moved here and hands its scheduler the tasks moved here. What moved is what the
/// directory's projection says arrived (see [`crate::cluster::directory::Arrival`]), from
/// each write as it is applied and from a snapshot as it is installed (whose moves come with
/// no event), so a node that caught up from a snapshot starts what moved to it meanwhile
/// without starting its own work again. Runs for the node's lifetime.
pub(crate) async fn follow_moves(store: Store, cluster: Cluster, rehome: super::Rehome) {
    let arrivals = cluster.directory().arrivals();
    let mut arrivals = arrivals.lock().await;
    while let Some(arrived) = arrivals.recv().await {
        let read = {
            let arrived = arrived.clone();
            store.view(move |v| started(v, &arrived)).await
        };
        let start = match read {
            Ok(start) => start,
            Err(e) => {
                // What it could not read starts when the node's work starts again.
                tracing::error!(error = %e, moved = arrived.len(), "could not read what moved to this node");
                continue;
            }
        };
        start_arrived(start, &rehome);
    }
}

/// Starts what moved here, each start on its own: one may take the agent's own start
/// timeout, and none waits for another.
fn start_arrived(start: Started, rehome: &super::Rehome) {
    for id in start.agents {
        let agents = rehome.agents.clone();
        tokio::spawn(async move {
            match agents.adopt(&id).await {
                Ok(true) => tracing::info!(agent = %id, "started an agent moved to this node"),
                Ok(false) => {}
                Err(e) => tracing::warn!(agent = %id, error = %e, "could not start an agent moved to this node"),
            }
        });
    }
    // The messages that waited on the old node: each waits here for its agent to run
    // (within its own time), as after a restart.
    for id in start.mailboxes {
        let mailboxes = rehome.mailboxes.clone();
        tokio::spawn(async move {
            match mailboxes.restore_agent(&id).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(agent = %id, messages = n, "delivering the messages that waited for an agent moved here")
                }
                Err(e) => tracing::warn!(agent = %id, error = %e, "could not read the mailbox of an agent moved here"),
            }
        });
    }
    for id in start.swarms {
        let port = rehome.swarms.clone();
        tokio::spawn(async move {
            match port.take_over(&id).await {
                Ok(()) => tracing::info!(swarm = %id, "started a swarm moved to this node"),
                Err(e) => tracing::warn!(swarm = %id, error = %e, "could not start a swarm moved to this node"),
            }
        });
    }
    for id in start.hosts {
        let (fleet, intensity) = (rehome.fleet.clone(), rehome.host_intensity);
        tokio::spawn(async move {
            match crate::host::take_over(&fleet, &id, intensity).await {
                Ok(()) => tracing::info!(host = %id, "driving a host moved to this node"),
                Err(e) => tracing::warn!(host = %id, error = %e, "could not drive a host moved to this node"),
            }
        });
    }
    // A scheduler not running reads what it holds when it starts.
    if let (false, Some(scheduler)) = (start.tasks.is_empty(), rehome.scheduler.get()) {
        let _ = scheduler.cast(crate::scheduler::SchedulerMsg::Adopt(start.tasks));
    }
}

#[cfg(test)]
mod tests {
    use troupe_runtime::store::{Batch, Store};

    use super::*;
    use crate::swarm::spec::Lead;

    fn arrived(ids: &[&str]) -> Vec<Arrival> {
        ids.iter()
            .map(|id| Arrival {
                id: (*id).to_owned(),
                from: "lost".into(),
            })
            .collect()
    }

    #[tokio::test]
    async fn what_arrived_is_started_by_its_own_room_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
        let team = SwarmSpec {
            lead: Some(Lead {
                swarm: "top@lost".into(),
                agent: "lead@lost".into(),
            }),
            ..SwarmSpec::example("team@lost")
        };
        let alone_team = SwarmSpec {
            lead: Some(Lead {
                swarm: "stayed@lost".into(),
                agent: "x@lost".into(),
            }),
            ..SwarmSpec::example("orphan@lost")
        };
        fn codec<T: serde::Serialize>(v: &T) -> Vec<u8> {
            troupe_runtime::codec::encode(v).unwrap()
        }
        store
            .write(
                Batch::new()
                    .put(AGENTS, "own@lost", codec(&AgentSpec::example("own@lost", Owner::Node)))
                    .put(
                        AGENTS,
                        "member@lost",
                        codec(&AgentSpec::example("member@lost", Owner::Swarm("top@lost".into()))),
                    )
                    .put(SWARMS, "top@lost", codec(&SwarmSpec::example("top@lost")))
                    .put(SWARMS, "team@lost", codec(&team))
                    .put(SWARMS, "orphan@lost", codec(&alone_team))
                    .put(HOSTS, "host@lost", vec![1])
                    .put(OPEN_TASKS, "t1@lost", vec![])
                    .put(OPEN_TASKS, "t2@lost", vec![]),
            )
            .await
            .unwrap();
        let ids = [
            "own@lost",
            "member@lost",
            "top@lost",
            "team@lost",
            "orphan@lost",
            "host@lost",
            "vm@lost",
            "t1@lost",
            "t2@lost",
            "gone@lost",
        ];
        let start = store.view(move |v| started(v, &arrived(&ids))).await.unwrap();
        assert_eq!(
            start,
            Started {
                // A member starts with its swarm; its messages are delivered all the same.
                agents: vec!["own@lost".into()],
                mailboxes: vec!["own@lost".into(), "member@lost".into()],
                // A team starts with its swarm when that arrived too.
                swarms: vec!["top@lost".into(), "orphan@lost".into()],
                hosts: vec!["host@lost".into()],
                // The scheduler is told the open tasks, all in one message.
                tasks: vec!["t1@lost".into(), "t2@lost".into()],
            }
        );
    }
}

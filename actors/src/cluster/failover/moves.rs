//! Where a lost or leaving node's entities go (planned in the entry that declares it), and
//! each node following those moves.

use super::*;

/// Where a lost node's entities go.
pub(super) struct Plan {
    /// The lost node's fencing epoch now.
    pub(super) epoch: u64,
    pub(super) agents: Vec<(AgentSpec, Placement)>,
    /// Each top-level swarm with where it goes, and what goes with it: its teams (nested
    /// swarms) and the members of all of them.
    pub(super) swarms: Vec<SwarmMove>,
    /// The agents that stay with the lost node, and why (pinned, or no member fits).
    pub(super) stranded: Vec<(String, String)>,
    /// Each host with where it goes, and the VMs on it.
    pub(super) hosts: Vec<(HostSpec, Placement, Vec<String>)>,
    pub(super) tasks: Vec<(String, Placement)>,
}

/// A swarm subtree moving to one node.
pub(super) struct SwarmMove {
    pub(super) top: String,
    pub(super) to: String,
    pub(super) swarms: Vec<(SwarmSpec, Placement)>,
    pub(super) members: Vec<(AgentSpec, Placement)>,
}

/// Places every agent the lost node `lost` ran for itself on the survivor that holds the
/// fewest agents then, each of its top-level swarms (with its teams and all their members)
/// likewise, weighed by its members, and each of its open tasks on the node its agent went
/// to (else on the survivor that took the most); each host (with its VMs) to the survivor
/// driving the fewest. With no survivor nothing moves: the
/// entities wait for their node (or for one that joins).
pub(super) fn plan_moves(v: &View<'_>, lost: &str, survivors: &[String]) -> Result<Plan, StoreError> {
    let epoch = epoch_in(v, lost)?;
    let mut plan = Plan {
        epoch,
        agents: Vec::new(),
        swarms: Vec::new(),
        stranded: Vec::new(),
        hosts: Vec::new(),
        tasks: Vec::new(),
    };
    if survivors.is_empty() {
        return Ok(plan);
    }
    let mut load: BTreeMap<&str, usize> = survivors.iter().map(|s| (s.as_str(), 0)).collect();
    let mut lost_agents = Vec::new();
    // A swarm's members, by swarm.
    let mut members: HashMap<String, Vec<(AgentSpec, u64)>> = HashMap::new();
    v.scan(AGENTS, None, |id, bytes| {
        let Some(placement) = placement_in(v, id)? else {
            return Ok(true);
        };
        if placement.node == lost {
            let spec: AgentSpec = troupe_runtime::codec::decode(bytes)?;
            match &spec.owner {
                Owner::Node => lost_agents.push((spec, placement.epoch)),
                Owner::Swarm(swarm) => members.entry(swarm.clone()).or_default().push((spec, placement.epoch)),
            }
        } else if let Some(n) = load.get_mut(placement.node.as_str()) {
            *n += 1;
        }
        Ok(true)
    })?;
    let mut lost_swarms: Vec<(SwarmSpec, u64)> = Vec::new();
    v.scan(SWARMS, None, |id, bytes| {
        if let Some(placement) = placement_in(v, id)?.filter(|p| p.node == lost) {
            lost_swarms.push((troupe_runtime::codec::decode(bytes)?, placement.epoch));
        }
        Ok(true)
    })?;
    let mut moved_to: HashMap<String, String> = HashMap::new();
    let mut taken: BTreeMap<String, usize> = BTreeMap::new();
    // Each survivor's labels, for agents that ask for some.
    let labels: HashMap<&str, BTreeMap<String, String>> = survivors
        .iter()
        .map(|s| Ok((s.as_str(), crate::cluster::replicated::labels_in(v, s)?)))
        .collect::<Result<_, StoreError>>()?;
    // The least loaded of the survivors `fits` allows, counted with `weight` more.
    let mut least_loaded = |load: &mut BTreeMap<&str, usize>, weight: usize, fits: &dyn Fn(&str) -> bool| {
        let to = load
            .iter()
            .filter(|(name, _)| fits(name))
            .min_by_key(|(name, n)| (**n, **name))
            .map(|(name, _)| (*name).to_owned())?;
        if let Some(n) = load.get_mut(to.as_str()) {
            *n += weight;
        }
        *taken.entry(to.clone()).or_default() += weight;
        Some(to)
    };
    for (spec, epoch) in lost_agents {
        let wanted = &spec.placement.node_labels;
        let fits = |name: &str| {
            labels
                .get(name)
                .is_some_and(|l| wanted.iter().all(|(k, v)| l.get(k) == Some(v)))
        };
        let to = match spec.placement.pinned {
            true => None,
            false => least_loaded(&mut load, 1, &fits),
        };
        let Some(to) = to else {
            let why = match spec.placement.pinned {
                true => "it is pinned to its node".to_owned(),
                false => format!(
                    "no member that is UP has the node labels {}",
                    wanted
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            };
            plan.stranded.push((spec.id.clone(), why));
            continue;
        };
        moved_to.insert(spec.id.clone(), to.clone());
        let placement = Placement {
            node: to,
            epoch: epoch + 1,
        };
        plan.agents.push((spec, placement));
    }
    // A swarm moves whole: the top-level swarm with its teams, and every member of them.
    let mut teams: HashMap<String, Vec<String>> = HashMap::new();
    for (spec, _) in &lost_swarms {
        if let Some(lead) = &spec.lead {
            teams.entry(lead.swarm.clone()).or_default().push(spec.id.clone());
        }
    }
    let mut by_id: HashMap<String, (SwarmSpec, u64)> =
        lost_swarms.into_iter().map(|(s, e)| (s.id.clone(), (s, e))).collect();
    let mut tops: Vec<String> = by_id
        .values()
        .filter(|(s, _)| s.lead.as_ref().is_none_or(|l| !by_id.contains_key(&l.swarm)))
        .map(|(s, _)| s.id.clone())
        .collect();
    tops.sort();
    for top in tops {
        let mut subtree = vec![top.clone()];
        let mut i = 0;
        while i < subtree.len() {
            subtree.extend(teams.get(&subtree[i]).cloned().unwrap_or_default());
            i += 1;
        }
        let weight: usize = subtree.iter().map(|s| members.get(s).map_or(0, Vec::len)).sum();
        let Some(to) = least_loaded(&mut load, weight.max(1), &|_| true) else {
            continue;
        };
        let mut moving = SwarmMove {
            top: top.clone(),
            to: to.clone(),
            swarms: Vec::new(),
            members: Vec::new(),
        };
        for id in subtree {
            if let Some((spec, epoch)) = by_id.remove(&id) {
                let placement = Placement {
                    node: to.clone(),
                    epoch: epoch + 1,
                };
                moving.swarms.push((spec, placement));
            }
            for (spec, epoch) in members.remove(&id).unwrap_or_default() {
                moved_to.insert(spec.id.clone(), to.clone());
                let placement = Placement {
                    node: to.clone(),
                    epoch: epoch + 1,
                };
                moving.members.push((spec, placement));
            }
        }
        plan.swarms.push(moving);
    }
    // Each host to the survivor driving the fewest, with the VMs on it.
    let mut drives: BTreeMap<&str, usize> = survivors.iter().map(|s| (s.as_str(), 0)).collect();
    let mut lost_hosts = Vec::new();
    // Where a host is driven is its placement: a host moved once is no longer on the node
    // its record names.
    v.scan(HOSTS, None, |id, bytes| {
        let Some(at) = placement_in(v, id)? else {
            return Ok(true);
        };
        match drives.get_mut(at.node.as_str()) {
            Some(n) => *n += 1,
            None if at.node == lost => lost_hosts.push(troupe_runtime::codec::decode::<HostSpec>(bytes)?),
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
    for spec in lost_hosts {
        let to = drives
            .iter()
            .min_by_key(|(name, n)| (**n, **name))
            .map(|(name, _)| (*name).to_owned())
            .unwrap_or_else(|| survivors[0].clone());
        if let Some(n) = drives.get_mut(to.as_str()) {
            *n += 1;
        }
        let epoch = placement_in(v, &spec.id)?.map_or(0, |p| p.epoch) + 1;
        let vms = on_host.remove(&spec.id).unwrap_or_default();
        plan.hosts.push((spec, Placement { node: to, epoch }, vms));
    }
    let heir = taken
        .iter()
        .max_by_key(|(name, n)| (**n, std::cmp::Reverse((*name).clone())))
        .map(|(name, _)| name.clone())
        .unwrap_or_else(|| survivors[0].clone());
    let mut open = Vec::new();
    v.scan(OPEN_TASKS, None, |id, _| {
        if held_in(v, id, lost)? {
            open.push(id.to_owned());
        }
        Ok(true)
    })?;
    for id in open {
        let (Some(spec), Some(status)) = (v.get(TASKS, &id)?, v.get(TASK_STATUS, &id)?) else {
            continue;
        };
        let spec: TaskSpec = troupe_runtime::codec::decode(&spec)?;
        let status: TaskStatus = troupe_runtime::codec::decode(&status)?;
        // A task aimed at an agent that stays stays with it.
        if spec
            .target_agent
            .as_ref()
            .is_some_and(|a| plan.stranded.iter().any(|(id, _)| id == a))
        {
            continue;
        }
        let agent = spec.target_agent.as_ref().or(status.agent_id.as_ref());
        let to = agent
            .and_then(|a| moved_to.get(a))
            .cloned()
            .unwrap_or_else(|| heir.clone());
        let epoch = placement_in(v, &id)?.map_or(0, |p| p.epoch) + 1;
        plan.tasks.push((id, Placement { node: to, epoch }));
    }
    Ok(plan)
}

/// Follows the moves the cluster commits: routes by them, starts the agents moved to this
/// node and hands its scheduler the tasks moved here. Runs for the node's lifetime.
pub(crate) async fn follow_moves(store: Store, cluster: Cluster, api: crate::service::Api) {
    let me = cluster.name();
    let mut live = store.live();
    let mut replacements = store.replacements();
    replacements.borrow_and_update();
    // Subscribed first: a move applied since the node read the directory at start is not
    // missed.
    if let Err(e) = cluster.directory().reload(&store).await {
        tracing::error!(error = %e, "could not read the directory");
    }
    loop {
        let received = tokio::select! {
            received = live.recv() => received,
            replaced = replacements.changed() => {
                if replaced.is_err() {
                    return;
                }
                // A snapshot's moves come without events. The moves to this node are taken
                // up by the lease keeper, which starts the node's work again from its tables.
                tracing::info!("a snapshot was installed: reading the directory again");
                if let Err(e) = cluster.directory().reload(&store).await {
                    tracing::error!(error = %e, "could not read the directory");
                }
                continue;
            }
        };
        let event = match received {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "fell behind the event log: reading the directory again");
                if let Err(e) = cluster.directory().reload(&store).await {
                    tracing::error!(error = %e, "could not read the directory");
                }
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        match event.kind.as_str() {
            "MEMBER_DOWN" | "MEMBER_LEFT" => {
                if let Err(e) = cluster.directory().reload(&store).await {
                    tracing::error!(error = %e, "could not read the directory");
                }
            }
            "AGENT_MOVED" if event.data["to"] == me.as_str() => {
                let Some(id) = event.subject.clone() else { continue };
                let api = api.clone();
                // Each start may take the agent's own start timeout: none waits for another.
                tokio::spawn(async move {
                    match api.agents().adopt(&id).await {
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
                let port = api.swarms().port();
                tokio::spawn(async move {
                    match port.take_over(&id).await {
                        Ok(()) => tracing::info!(swarm = %id, "started a swarm moved to this node"),
                        Err(e) => tracing::warn!(swarm = %id, error = %e, "could not start a swarm moved to this node"),
                    }
                });
            }
            "HOST_MOVED" if event.data["to"] == me.as_str() => {
                let Some(id) = event.subject.clone() else { continue };
                let hosts = api.hosts().clone();
                tokio::spawn(async move {
                    match crate::host::take_over(&hosts.fleet, &id, hosts.intensity).await {
                        Ok(()) => tracing::info!(host = %id, "driving a host moved to this node"),
                        Err(e) => tracing::warn!(host = %id, error = %e, "could not drive a host moved to this node"),
                    }
                });
            }
            // Tasks move alone too (a node hands the tasks none of its agents serve to one
            // whose agents do): every node routes by the directory that moved them.
            "TASKS_MOVED" if event.data["to"] != me.as_str() => {
                if let Err(e) = cluster.directory().reload(&store).await {
                    tracing::error!(error = %e, "could not read the directory");
                }
            }
            "TASKS_MOVED" => {
                if let Err(e) = cluster.directory().reload(&store).await {
                    tracing::error!(error = %e, "could not read the directory");
                }
                let Some(from) = event.data["from"].as_str() else {
                    continue;
                };
                // A scheduler not running reads what it holds when it starts.
                if let Some(scheduler) = api.slots.scheduler.get() {
                    let _ = scheduler.cast(crate::scheduler::SchedulerMsg::Adopt(from.to_owned()));
                }
            }
            _ => {}
        }
    }
}

//! Where a lost or leaving node's entities go, decided as pure code over what the store
//! holds of them (`moves.rs` reads it, the judge writes the outcome in the entry that
//! declares the node): each of its own agents to the survivor holding the fewest (where its
//! node labels fit; a pinned one stays), each top-level swarm whole with its teams and all
//! their members, each host with its VMs to the survivor driving the fewest, and each open
//! task to where its agent went, else to the survivor that took the most. Every placement
//! is on a survivor, one epoch on. With no survivor nothing moves: the entities wait for
//! their node (or for one that joins).

use std::collections::{BTreeMap, HashMap};

use crate::cluster::directory::Placement;

/// One of the lost node's agents as the plan weighs it; `spec` goes through untouched.
#[derive(Debug, Clone)]
pub(super) struct Agent<T> {
    pub(super) id: String,
    pub(super) epoch: u64,
    pub(super) pinned: bool,
    /// The node labels it asks for.
    pub(super) wants: BTreeMap<String, String>,
    /// The swarm it is a member of; `None` for an agent the node runs for itself.
    pub(super) swarm: Option<String>,
    pub(super) spec: T,
}

/// One of the lost node's swarms; `parent` is the swarm it is a team of.
#[derive(Debug, Clone)]
pub(super) struct Swarm<T> {
    pub(super) id: String,
    pub(super) epoch: u64,
    pub(super) parent: Option<String>,
    pub(super) spec: T,
}

/// One of the hosts the lost node drove, with the VMs on it.
#[derive(Debug, Clone)]
pub(super) struct Host<T> {
    pub(super) epoch: u64,
    pub(super) vms: Vec<String>,
    pub(super) spec: T,
}

/// One of the lost node's open tasks: the agent it is aimed at, and the one running it.
#[derive(Debug, Clone)]
pub(super) struct Task {
    pub(super) id: String,
    pub(super) epoch: u64,
    pub(super) target: Option<String>,
    pub(super) agent: Option<String>,
}

/// A member that takes over: its labels, and how many agents and hosts it holds already.
#[derive(Debug, Clone)]
pub(super) struct Survivor {
    pub(super) name: String,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) agents: usize,
    pub(super) hosts: usize,
}

/// What the store holds of a lost node, and who survives it.
#[derive(Debug, Clone)]
pub(super) struct Inventory<A, S, H> {
    /// The lost node's fencing epoch now.
    pub(super) epoch: u64,
    pub(super) agents: Vec<Agent<A>>,
    pub(super) swarms: Vec<Swarm<S>>,
    pub(super) hosts: Vec<Host<H>>,
    pub(super) tasks: Vec<Task>,
    pub(super) survivors: Vec<Survivor>,
}

/// Where a lost node's entities go.
#[derive(Debug)]
pub(super) struct Plan<A, S, H> {
    /// The lost node's fencing epoch now.
    pub(super) epoch: u64,
    pub(super) agents: Vec<(A, Placement)>,
    /// Each top-level swarm with where it goes, and what goes with it.
    pub(super) swarms: Vec<SwarmMove<S, A>>,
    /// The agents that stay with the lost node, and why (pinned, or no member fits).
    pub(super) stranded: Vec<(String, String)>,
    /// Each host with where it goes, and the VMs on it.
    pub(super) hosts: Vec<(H, Placement, Vec<String>)>,
    pub(super) tasks: Vec<(String, Placement)>,
}

/// A swarm subtree moving to one node: its swarms (the top one first) and the members of
/// all of them.
#[derive(Debug)]
pub(super) struct SwarmMove<S, A> {
    pub(super) top: String,
    pub(super) to: String,
    pub(super) swarms: Vec<(S, Placement)>,
    pub(super) members: Vec<(A, Placement)>,
}

/// Plans the moves of a lost node's entities (see the module's comment).
pub(super) fn plan<A, S, H>(inventory: Inventory<A, S, H>) -> Plan<A, S, H> {
    let Inventory {
        epoch,
        agents,
        swarms,
        hosts,
        tasks,
        survivors,
    } = inventory;
    let mut plan = Plan {
        epoch,
        agents: Vec::new(),
        swarms: Vec::new(),
        stranded: Vec::new(),
        hosts: Vec::new(),
        tasks: Vec::new(),
    };
    if survivors.is_empty() {
        return plan;
    }
    let mut load: BTreeMap<String, usize> = survivors.iter().map(|s| (s.name.clone(), s.agents)).collect();
    let labels: HashMap<&str, &BTreeMap<String, String>> =
        survivors.iter().map(|s| (s.name.as_str(), &s.labels)).collect();
    let mut taken: BTreeMap<String, usize> = BTreeMap::new();
    // The least loaded of the survivors `fits` allows, counted with `weight` more.
    let mut least_loaded = |load: &mut BTreeMap<String, usize>, weight: usize, fits: &dyn Fn(&str) -> bool| {
        let to = load
            .iter()
            .filter(|(name, _)| fits(name))
            .min_by_key(|(name, n)| (**n, name.as_str()))
            .map(|(name, _)| name.clone())?;
        if let Some(n) = load.get_mut(&to) {
            *n += weight;
        }
        *taken.entry(to.clone()).or_default() += weight;
        Some(to)
    };
    let mut moved_to: HashMap<String, String> = HashMap::new();
    let mut members: HashMap<String, Vec<Agent<A>>> = HashMap::new();
    for agent in agents {
        if let Some(swarm) = agent.swarm.clone() {
            members.entry(swarm).or_default().push(agent);
            continue;
        }
        let fits = |name: &str| {
            labels
                .get(name)
                .is_some_and(|l| agent.wants.iter().all(|(k, v)| l.get(k) == Some(v)))
        };
        let to = match agent.pinned {
            true => None,
            false => least_loaded(&mut load, 1, &fits),
        };
        let Some(to) = to else {
            let why = match agent.pinned {
                true => "it is pinned to its node".to_owned(),
                false => format!(
                    "no member that is UP has the node labels {}",
                    agent
                        .wants
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            };
            plan.stranded.push((agent.id, why));
            continue;
        };
        moved_to.insert(agent.id.clone(), to.clone());
        let placement = Placement {
            node: to,
            epoch: agent.epoch + 1,
        };
        plan.agents.push((agent.spec, placement));
    }
    // A swarm moves whole: the top-level swarm with its teams, and every member of them.
    let mut teams: HashMap<String, Vec<String>> = HashMap::new();
    for swarm in &swarms {
        if let Some(parent) = &swarm.parent {
            teams.entry(parent.clone()).or_default().push(swarm.id.clone());
        }
    }
    let mut by_id: HashMap<String, Swarm<S>> = swarms.into_iter().map(|s| (s.id.clone(), s)).collect();
    let mut tops: Vec<String> = by_id
        .values()
        .filter(|s| s.parent.as_ref().is_none_or(|p| !by_id.contains_key(p)))
        .map(|s| s.id.clone())
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
            if let Some(swarm) = by_id.remove(&id) {
                let placement = Placement {
                    node: to.clone(),
                    epoch: swarm.epoch + 1,
                };
                moving.swarms.push((swarm.spec, placement));
            }
            for member in members.remove(&id).unwrap_or_default() {
                moved_to.insert(member.id.clone(), to.clone());
                let placement = Placement {
                    node: to.clone(),
                    epoch: member.epoch + 1,
                };
                moving.members.push((member.spec, placement));
            }
        }
        plan.swarms.push(moving);
    }
    // Members of a swarm the lost node did not hold stay with their node.
    for (_, left) in members {
        for member in left {
            plan.stranded
                .push((member.id, "its swarm is not on the lost node".to_owned()));
        }
    }
    // Each host to the survivor driving the fewest, with the VMs on it.
    let mut drives: BTreeMap<String, usize> = survivors.iter().map(|s| (s.name.clone(), s.hosts)).collect();
    for host in hosts {
        let Some(to) = drives
            .iter()
            .min_by_key(|(name, n)| (**n, name.as_str()))
            .map(|(name, _)| name.clone())
        else {
            continue;
        };
        if let Some(n) = drives.get_mut(&to) {
            *n += 1;
        }
        let placement = Placement {
            node: to,
            epoch: host.epoch + 1,
        };
        plan.hosts.push((host.spec, placement, host.vms));
    }
    // Tasks follow their agent; the others go to the survivor that took the most.
    let heir = taken
        .iter()
        .max_by_key(|(name, n)| (**n, std::cmp::Reverse((*name).clone())))
        .map(|(name, _)| name.clone())
        .unwrap_or_else(|| survivors[0].name.clone());
    for task in tasks {
        // A task aimed at an agent that stays stays with it.
        if task
            .target
            .as_ref()
            .is_some_and(|a| plan.stranded.iter().any(|(id, _)| id == a))
        {
            continue;
        }
        let agent = task.target.as_ref().or(task.agent.as_ref());
        let to = agent
            .and_then(|a| moved_to.get(a))
            .cloned()
            .unwrap_or_else(|| heir.clone());
        let placement = Placement {
            node: to,
            epoch: task.epoch + 1,
        };
        plan.tasks.push((task.id, placement));
    }
    plan
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    type Ids = Inventory<String, String, String>;

    const LOST: &str = "lost";

    fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
        proptest::collection::btree_map("zone", prop_oneof!["a", "b"].prop_map(String::from), 0..2)
    }

    /// A lost node with agents (some pinned, some asking for labels, some members of its
    /// swarms, nested up to three deep), hosts with VMs, open tasks aimed at or run by its
    /// agents or at none, and zero to three survivors.
    fn inventory() -> impl Strategy<Value = Ids> {
        let survivors = proptest::collection::vec((labels(), 0usize..5, 0usize..3), 0..4);
        let agents = proptest::collection::vec(
            (any::<bool>(), labels(), proptest::option::of(0usize..4), 0u64..3),
            0..8,
        );
        let swarms = proptest::collection::vec((proptest::option::of(0usize..4), 0u64..3), 0..4);
        let hosts = proptest::collection::vec((0usize..3, 0u64..3), 0..4);
        let tasks = proptest::collection::vec(
            (
                proptest::option::of(0usize..10),
                proptest::option::of(0usize..10),
                0u64..3,
            ),
            0..8,
        );
        (survivors, agents, swarms, hosts, tasks).prop_map(|(survivors, agents, swarms, hosts, tasks)| {
            let swarm_ids: Vec<String> = (0..swarms.len()).map(|i| format!("s{i}")).collect();
            let swarms: Vec<Swarm<String>> = swarms
                .into_iter()
                .enumerate()
                .map(|(i, (parent, epoch))| Swarm {
                    id: swarm_ids[i].clone(),
                    epoch,
                    // A team's parent comes before it: no cycles, as the records have none.
                    parent: parent.filter(|p| *p < i).map(|p| swarm_ids[p].clone()),
                    spec: swarm_ids[i].clone(),
                })
                .collect();
            let agents: Vec<Agent<String>> = agents
                .into_iter()
                .enumerate()
                .map(|(i, (pinned, wants, swarm, epoch))| Agent {
                    id: format!("a{i}"),
                    epoch,
                    pinned,
                    wants,
                    swarm: swarm.and_then(|s| swarm_ids.get(s).cloned()),
                    spec: format!("a{i}"),
                })
                .collect();
            let hosts = hosts
                .into_iter()
                .enumerate()
                .map(|(i, (vms, epoch))| Host {
                    epoch,
                    vms: (0..vms).map(|v| format!("h{i}-vm{v}")).collect(),
                    spec: format!("h{i}"),
                })
                .collect();
            let tasks = tasks
                .into_iter()
                .enumerate()
                .map(|(i, (target, agent, epoch))| Task {
                    id: format!("t{i}"),
                    epoch,
                    target: target.map(|a| format!("a{a}")),
                    agent: agent.map(|a| format!("a{a}")),
                })
                .collect();
            let survivors = survivors
                .into_iter()
                .enumerate()
                .map(|(i, (labels, agents, hosts))| Survivor {
                    name: format!("n{i}"),
                    labels,
                    agents,
                    hosts,
                })
                .collect();
            Inventory {
                epoch: 1,
                agents,
                swarms,
                hosts,
                tasks,
                survivors,
            }
        })
    }

    proptest! {
        #[test]
        fn every_entity_of_a_lost_node_gets_one_home_on_a_survivor_or_stays_for_a_stated_reason(inv in inventory()) {
            let survivors: BTreeMap<String, BTreeMap<String, String>> =
                inv.survivors.iter().map(|s| (s.name.clone(), s.labels.clone())).collect();
            let agents: BTreeMap<String, Agent<String>> = inv.agents.iter().map(|a| (a.id.clone(), a.clone())).collect();
            let swarms: BTreeMap<String, Swarm<String>> = inv.swarms.iter().map(|s| (s.id.clone(), s.clone())).collect();
            let hosts = inv.hosts.clone();
            let tasks = inv.tasks.clone();
            let plan = plan(inv);

            // Every placement is on a survivor, one epoch on; never on the lost node.
            let mut homes: BTreeMap<String, String> = BTreeMap::new();
            let mut place = |id: &str, p: &Placement, was: u64| {
                prop_assert!(survivors.contains_key(&p.node) && p.node != LOST, "{id} to {}", p.node);
                prop_assert_eq!(p.epoch, was + 1);
                // Never two live copies: one home each.
                prop_assert!(homes.insert(id.to_owned(), p.node.clone()).is_none(), "{} placed twice", id);
                Ok(())
            };
            for (id, p) in &plan.agents {
                place(id, p, agents[id].epoch)?;
            }
            for moving in &plan.swarms {
                // A swarm moves whole: its teams and every member go where it goes.
                for (id, p) in &moving.swarms {
                    prop_assert_eq!(&p.node, &moving.to);
                    place(id, p, swarms[id].epoch)?;
                }
                for (id, p) in &moving.members {
                    prop_assert_eq!(&p.node, &moving.to);
                    let member = &agents[id];
                    prop_assert!(moving.swarms.iter().any(|(s, _)| Some(s) == member.swarm.as_ref()));
                    place(id, p, member.epoch)?;
                }
            }
            for (id, p, vms) in &plan.hosts {
                let host = hosts.iter().find(|h| &h.spec == id).unwrap();
                prop_assert_eq!(vms, &host.vms);
                place(id, p, host.epoch)?;
            }
            let stranded: BTreeSet<&String> = plan.stranded.iter().map(|(id, _)| id).collect();
            if survivors.is_empty() {
                // Nothing moves without a survivor: it all waits for its node.
                prop_assert!(homes.is_empty() && plan.tasks.is_empty() && stranded.is_empty());
                return Ok(());
            }
            for agent in agents.values() {
                let home = homes.get(&agent.id);
                match &agent.swarm {
                    // A member goes with its swarm.
                    Some(_) => prop_assert!(home.is_some() || stranded.contains(&agent.id), "{} lost", agent.id),
                    // Pinned agents stay; the others move where their labels fit, or stay
                    // for that reason.
                    None if agent.pinned => prop_assert!(home.is_none() && stranded.contains(&agent.id)),
                    None => match home {
                        Some(node) => prop_assert!(agent.wants.iter().all(|(k, v)| survivors[node].get(k) == Some(v))),
                        None => {
                            prop_assert!(stranded.contains(&agent.id));
                            prop_assert!(!survivors.values().any(|l| agent.wants.iter().all(|(k, v)| l.get(k) == Some(v))));
                        }
                    },
                }
            }
            for swarm in swarms.keys() {
                prop_assert!(homes.contains_key(swarm), "swarm {} left behind", swarm);
            }
            for host in &hosts {
                prop_assert!(homes.contains_key(&host.spec), "host {} left behind", host.spec);
            }
            // Each open task gets one home, where its agent went, unless its agent stays.
            let tasks_placed: BTreeMap<&String, &Placement> = plan.tasks.iter().map(|(id, p)| (id, p)).collect();
            prop_assert_eq!(tasks_placed.len(), plan.tasks.len());
            for task in &tasks {
                let stays = task.target.as_ref().is_some_and(|a| stranded.contains(a));
                match tasks_placed.get(&task.id) {
                    None => prop_assert!(stays, "task {} left behind", task.id),
                    Some(p) => {
                        prop_assert!(!stays);
                        prop_assert!(survivors.contains_key(&p.node));
                        prop_assert_eq!(p.epoch, task.epoch + 1);
                        if let Some(went) = task.target.as_ref().or(task.agent.as_ref()).and_then(|a| homes.get(a)) {
                            prop_assert_eq!(&p.node, went);
                        }
                    }
                }
            }
        }
    }
}

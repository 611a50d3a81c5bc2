//! Selectors over the supervision tree: the tree flattened into candidates (each child with
//! the supervisors above it), narrowed by ids, kinds, labels, node and subtree, less the
//! exclusions and what is protected, then picked by mode from a seeded shuffle so that the
//! same seed picks the same targets again.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use troupe_runtime::supervision::SupervisorInfo;

use crate::error::ApiError;

/// How many of the matching children a selector takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SelectMode {
    One,
    All,
    /// `value` of them.
    Fixed,
    /// `value` percent of them, rounded up.
    Percent,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Selector {
    pub ids: Vec<String>,
    /// AGENT, SWARM, HOST, SERVICE, SUPERVISOR...: a child's kind, or the start of it
    /// (SWARM takes SWARM_COORDINATOR).
    pub kinds: Vec<String>,
    pub labels: Vec<(String, String)>,
    pub nodes: Vec<String>,
    /// Only children below this supervisor (its name or its id as a child).
    pub under: Option<String>,
    pub mode: SelectMode,
    pub value: Option<u32>,
    pub exclude: Vec<String>,
}

impl Selector {
    /// These ids, on `node` (this one when `None`), below `under` when given: one target.
    pub fn one(ids: Vec<String>, under: Option<String>, node: Option<String>) -> Self {
        Self {
            ids,
            kinds: Vec::new(),
            labels: Vec::new(),
            nodes: node.into_iter().collect(),
            under,
            mode: SelectMode::One,
            value: None,
            exclude: Vec::new(),
        }
    }
}

/// A child of the tree as a selector sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: String,
    pub kind: String,
    /// The supervisor that owns it.
    pub owner: String,
    pub state: String,
    /// The supervisors above it, by name and by child id, from the root down.
    pub path: Vec<String>,
}

/// Children nobody may hit: the gateway answering the call (and with it the way to revert).
pub const PROTECTED: [&str; 1] = ["gateway"];

/// Every child of the tree, depth first, each with the supervisors above it.
pub fn flatten(tree: &SupervisorInfo) -> Vec<Candidate> {
    fn walk(info: &SupervisorInfo, path: &mut Vec<String>, out: &mut Vec<Candidate>) {
        path.push(info.name.clone());
        for child in &info.children {
            out.push(Candidate {
                id: child.id.clone(),
                kind: child.kind.clone(),
                owner: child.owner.clone(),
                state: child.state.clone(),
                path: path.clone(),
            });
            if let Some(sub) = &child.supervisor {
                path.push(child.id.clone());
                walk(sub, path, out);
                path.pop();
            }
        }
        path.pop();
    }
    let mut out = Vec::new();
    walk(tree, &mut Vec::new(), &mut out);
    out
}

/// The candidates the selector's filters keep (labels are checked by the caller, who can
/// read them), in tree order.
pub fn narrow(all: &[Candidate], selector: &Selector) -> Vec<Candidate> {
    all.iter()
        .filter(|c| !PROTECTED.contains(&c.id.as_str()))
        .filter(|c| selector.ids.is_empty() || selector.ids.contains(&c.id))
        .filter(|c| {
            selector.kinds.is_empty()
                || selector
                    .kinds
                    .iter()
                    .any(|k| c.kind == *k || c.kind.starts_with(&format!("{k}_")))
        })
        .filter(|c| selector.under.as_ref().is_none_or(|u| c.path.contains(u)))
        .filter(|c| !selector.exclude.contains(&c.id))
        .cloned()
        .collect()
}

/// The members of the cluster named by the selector (`nodes`; `default` when it names none),
/// less the exclusions, as candidates of kind NODE. A node selector takes no ids, labels or
/// subtree: those pick children of a tree.
pub fn narrow_nodes(members: &[String], selector: &Selector, default: &[String]) -> Result<Vec<Candidate>, ApiError> {
    if !selector.ids.is_empty()
        || !selector.labels.is_empty()
        || selector.under.is_some()
        || selector.kinds.iter().any(|k| k != "NODE")
    {
        return Err(ApiError::invalid(
            "this action hits nodes: select them with `nodes` (ids, labels, kinds and under pick children of a tree)",
        ));
    }
    let named = if selector.nodes.is_empty() {
        default
    } else {
        &selector.nodes
    };
    if let Some(unknown) = named.iter().find(|n| !members.contains(n)) {
        return Err(ApiError::invalid(format!(
            "{unknown} is not a member of the cluster; members: {}",
            members.join(", ")
        )));
    }
    Ok(named
        .iter()
        .filter(|n| !selector.exclude.contains(n))
        .map(|n| Candidate {
            id: n.clone(),
            kind: "NODE".into(),
            owner: String::new(),
            state: "UP".into(),
            path: Vec::new(),
        })
        .collect())
}

/// Takes the selector's share of `matching`, in the order a shuffle seeded by `seed` gives.
pub fn pick(mut matching: Vec<Candidate>, selector: &Selector, seed: u64) -> Result<Vec<Candidate>, ApiError> {
    let n = matching.len();
    let take = match selector.mode {
        SelectMode::One => 1,
        SelectMode::All => n,
        SelectMode::Fixed => selector
            .value
            .ok_or_else(|| ApiError::invalid("mode FIXED needs a value: how many targets"))?
            as usize,
        SelectMode::Percent => {
            let p = selector
                .value
                .filter(|p| (1..=100).contains(p))
                .ok_or_else(|| ApiError::invalid("mode PERCENT needs a value from 1 to 100"))?;
            (n * p as usize).div_ceil(100)
        }
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    matching.shuffle(&mut rng);
    matching.truncate(take.min(n));
    Ok(matching)
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe_runtime::supervision::{ChildInfo, Strategy};

    fn child(id: &str, kind: &str, owner: &str, sub: Option<SupervisorInfo>) -> ChildInfo {
        ChildInfo {
            id: id.into(),
            kind: kind.into(),
            state: "RUNNING".into(),
            restarts: 0,
            owner: owner.into(),
            intensity: None,
            supervisor: sub,
        }
    }

    fn tree() -> SupervisorInfo {
        let agents = SupervisorInfo {
            name: "agents".into(),
            strategy: Strategy::OneForOne,
            intensity: None,
            children: (0..10)
                .map(|i| child(&format!("a{i}"), "AGENT", "agents", None))
                .collect(),
        };
        SupervisorInfo {
            name: "root".into(),
            strategy: Strategy::RestForOne,
            intensity: None,
            children: vec![
                child("gateway", "SERVICE", "root", None),
                child("scheduler", "SERVICE", "root", None),
                child("agents", "SUPERVISOR", "root", Some(agents)),
            ],
        }
    }

    fn selector(mode: SelectMode, value: Option<u32>) -> Selector {
        Selector {
            ids: vec![],
            kinds: vec!["AGENT".into()],
            labels: vec![],
            nodes: vec![],
            under: Some("agents".into()),
            mode,
            value,
            exclude: vec!["a3".into()],
        }
    }

    #[test]
    fn the_tree_flattens_with_each_childs_supervisors_and_the_gateway_is_protected() {
        let all = flatten(&tree());
        assert_eq!(all.len(), 13);
        let a0 = all.iter().find(|c| c.id == "a0").unwrap();
        assert_eq!(a0.path, ["root", "agents", "agents"]);
        let mut any = selector(SelectMode::All, None);
        any.kinds.clear();
        any.under = None;
        assert!(!narrow(&all, &any).iter().any(|c| c.id == "gateway"));
    }

    #[test]
    fn modes_take_their_share_less_the_exclusions_and_a_seed_replays_the_pick() {
        let all = flatten(&tree());
        let matching = narrow(&all, &selector(SelectMode::All, None));
        assert_eq!(matching.len(), 9, "ten agents less a3");
        assert_eq!(
            pick(matching.clone(), &selector(SelectMode::All, None), 1)
                .unwrap()
                .len(),
            9
        );
        assert_eq!(
            pick(matching.clone(), &selector(SelectMode::Fixed, Some(4)), 1)
                .unwrap()
                .len(),
            4
        );
        assert_eq!(
            pick(matching.clone(), &selector(SelectMode::Percent, Some(50)), 1)
                .unwrap()
                .len(),
            5
        );
        let one = pick(matching.clone(), &selector(SelectMode::One, None), 7).unwrap();
        assert_eq!(
            one,
            pick(matching.clone(), &selector(SelectMode::One, None), 7).unwrap()
        );
        let picks: std::collections::BTreeSet<String> = (0..20)
            .map(|seed| {
                pick(matching.clone(), &selector(SelectMode::One, None), seed).unwrap()[0]
                    .id
                    .clone()
            })
            .collect();
        assert!(picks.len() > 1, "different seeds pick differently");
        assert!(pick(matching, &selector(SelectMode::Fixed, None), 1).is_err());
    }

    #[test]
    fn a_node_selector_takes_members_by_name_or_the_default_and_refuses_tree_filters() {
        let members: Vec<String> = ["alpha", "beta", "gamma"].map(String::from).to_vec();
        let mut s = selector(SelectMode::All, None);
        s.kinds.clear();
        s.under = None;
        s.exclude = vec!["beta".into()];
        let default = ["alpha".to_owned()];
        let ids = |c: Vec<Candidate>| c.into_iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(narrow_nodes(&members, &s, &default).unwrap()), ["alpha"]);
        s.nodes = vec!["beta".into(), "gamma".into()];
        assert_eq!(ids(narrow_nodes(&members, &s, &default).unwrap()), ["gamma"]);
        s.nodes = vec!["delta".into()];
        assert!(narrow_nodes(&members, &s, &default).is_err());
        s.nodes.clear();
        s.under = Some("agents".into());
        assert!(narrow_nodes(&members, &s, &default).is_err());
    }
}

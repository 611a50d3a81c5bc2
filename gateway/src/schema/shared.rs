//! GraphQL types more than one domain's schema uses: labels (agents, hosts, VMs, broadcast)
//! and message/task priority.

use std::collections::BTreeMap;

use async_graphql::{Enum, InputObject, SimpleObject};
use troupe_actors::task::Priority as P;

#[derive(SimpleObject)]
pub struct Label {
    pub key: String,
    pub value: String,
}

#[derive(InputObject)]
pub struct LabelInput {
    pub key: String,
    pub value: String,
}

/// The labels of a map, in key order.
pub fn labels(map: &BTreeMap<String, String>) -> Vec<Label> {
    map.iter()
        .map(|(k, v)| Label {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

/// Label inputs as pairs (none when absent).
pub fn pairs(v: Option<Vec<LabelInput>>) -> Vec<(String, String)> {
    v.unwrap_or_default().into_iter().map(|l| (l.key, l.value)).collect()
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Priority {
    Critical,
    High,
    Normal,
    Low,
}

impl From<P> for Priority {
    fn from(p: P) -> Self {
        match p {
            P::Critical => Self::Critical,
            P::High => Self::High,
            P::Normal => Self::Normal,
            P::Low => Self::Low,
        }
    }
}

impl From<Priority> for P {
    fn from(p: Priority) -> Self {
        match p {
            Priority::Critical => P::Critical,
            Priority::High => P::High,
            Priority::Normal => P::Normal,
            Priority::Low => P::Low,
        }
    }
}

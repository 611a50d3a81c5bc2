//! The order of a task graph (`submitTasks`): each task after the tasks of the graph it
//! depends on. A plain function of the graph, so its rules (unique keys, no cycles) are
//! tested without a node.

use std::collections::HashMap;

use crate::error::ApiError;
use crate::task::{GraphTask, MAX_GRAPH};

/// Why a graph cannot be ordered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderGraphError {
    #[error("a graph has 1 to {MAX_GRAPH} tasks")]
    Size,
    #[error("each task of a graph needs a key of 1 to 128 characters")]
    Key,
    #[error("key {0:?} is used twice")]
    Duplicate(String),
    #[error("the graph has a cycle through {0:?} and {1:?}")]
    Cycle(String, String),
}

impl From<OrderGraphError> for ApiError {
    fn from(e: OrderGraphError) -> Self {
        ApiError::invalid(e.to_string())
    }
}

/// The graph's tasks (by index) in an order where each comes after its dependencies within
/// the graph. A `dependsOn` entry that is not a key of the graph names a task outside it and
/// does not constrain the order.
pub fn order(graph: &[GraphTask]) -> Result<Vec<usize>, OrderGraphError> {
    if graph.is_empty() || graph.len() > MAX_GRAPH {
        return Err(OrderGraphError::Size);
    }
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, t) in graph.iter().enumerate() {
        if t.key.trim().is_empty() || t.key.chars().count() > 128 {
            return Err(OrderGraphError::Key);
        }
        if index.insert(t.key.as_str(), i).is_some() {
            return Err(OrderGraphError::Duplicate(t.key.clone()));
        }
    }
    // 0 = not seen, 1 = on the current path, 2 = done. An explicit stack: graphs may be deep.
    let mut mark = vec![0u8; graph.len()];
    let mut order = Vec::with_capacity(graph.len());
    for start in 0..graph.len() {
        let mut stack = vec![(start, 0usize)];
        while let Some((i, next)) = stack.pop() {
            if next == 0 {
                if mark[i] == 2 {
                    continue;
                }
                mark[i] = 1;
            }
            let deps = &graph[i].request.depends_on;
            match deps[next..].iter().position(|d| index.contains_key(d.as_str())) {
                Some(offset) => {
                    let at = next + offset;
                    let j = index[deps[at].as_str()];
                    stack.push((i, at + 1));
                    match mark[j] {
                        1 => return Err(OrderGraphError::Cycle(graph[i].key.clone(), graph[j].key.clone())),
                        0 => stack.push((j, 0)),
                        _ => {}
                    }
                }
                None => {
                    mark[i] = 2;
                    order.push(i);
                }
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::task::SubmitTaskRequest;

    fn task(key: &str, deps: &[&str]) -> GraphTask {
        let mut request = SubmitTaskRequest::to_capability("echo", json!(null));
        request.depends_on = deps.iter().map(|d| d.to_string()).collect();
        GraphTask {
            key: key.into(),
            request,
        }
    }

    fn keys(graph: &[GraphTask]) -> Vec<&str> {
        order(graph)
            .unwrap()
            .into_iter()
            .map(|i| graph[i].key.as_str())
            .collect()
    }

    #[test]
    fn each_task_comes_after_its_dependencies_in_the_graph() {
        let graph = [
            task("report", &["sum", "count"]),
            task("sum", &["load"]),
            task("count", &["load"]),
            task("load", &[]),
        ];
        assert_eq!(keys(&graph), ["load", "sum", "count", "report"]);
    }

    #[test]
    fn dependencies_outside_the_graph_do_not_order_it() {
        let graph = [task("b", &["a", "t-1@node"]), task("a", &["t-2@node"])];
        assert_eq!(keys(&graph), ["a", "b"]);
    }

    #[test]
    fn a_deep_chain_is_ordered_without_recursion() {
        let graph: Vec<GraphTask> = (0..MAX_GRAPH)
            .map(|i| match i {
                0 => task("k0", &[]),
                i => task(&format!("k{i}"), &[&format!("k{}", i - 1)]),
            })
            .rev()
            .collect();
        let order = order(&graph).unwrap();
        assert_eq!(order.first().map(|&i| graph[i].key.as_str()), Some("k0"));
        assert_eq!(order.len(), MAX_GRAPH);
    }

    #[test]
    fn cycles_repeated_keys_and_bad_sizes_are_refused() {
        let cycle = [task("a", &["c"]), task("b", &["a"]), task("c", &["b"])];
        assert!(matches!(order(&cycle), Err(OrderGraphError::Cycle(..))));
        assert_eq!(
            order(&[task("self", &["self"])]),
            Err(OrderGraphError::Cycle("self".into(), "self".into()))
        );
        assert_eq!(
            order(&[task("a", &[]), task("a", &[])]),
            Err(OrderGraphError::Duplicate("a".into()))
        );
        assert_eq!(order(&[task(" ", &[])]), Err(OrderGraphError::Key));
        assert_eq!(order(&[task(&"k".repeat(129), &[])]), Err(OrderGraphError::Key));
        assert_eq!(order(&[]), Err(OrderGraphError::Size));
        let too_many: Vec<GraphTask> = (0..=MAX_GRAPH).map(|i| task(&i.to_string(), &[])).collect();
        assert_eq!(order(&too_many), Err(OrderGraphError::Size));
        let err: ApiError = OrderGraphError::Duplicate("a".into()).into();
        assert_eq!(err.to_string(), "key \"a\" is used twice");
    }
}

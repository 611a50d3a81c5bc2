//! What an answer carries beside its data, in its `extensions`: the warnings a resolver
//! raised (a task queued for a capability no agent of the cluster has), and for a mutation
//! the commit index it is in (`commitIndex`), which a read on another node may name
//! (`extensions.minCommitIndex` in the request) to be served only once that node has
//! applied it.

use std::sync::Mutex;

use async_graphql::parser::types::OperationType;
use async_graphql::{Name, Request, Response, Value};
use troupe_actors::Api;

/// The warnings of one request, filled by its resolvers.
#[derive(Debug, Default)]
pub struct Notes(Mutex<Vec<serde_json::Value>>);

impl Notes {
    /// Adds a warning: a stable `code` and a message for people.
    pub fn warn(&self, code: &str, message: String) {
        let warning = serde_json::json!({ "code": code, "message": message });
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(warning);
    }

    fn take(&self) -> Vec<serde_json::Value> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The commit index a request asks to read after (`extensions.minCommitIndex`): `Err` for
/// one that is not a non-negative integer.
pub fn min_commit_index(request: &Request) -> Result<Option<u64>, String> {
    match request.extensions.get("minCommitIndex") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("extensions.minCommitIndex must be a non-negative integer, not {n}")),
        Some(other) => Err(format!(
            "extensions.minCommitIndex must be a non-negative integer, not {other}"
        )),
    }
}

/// Whether the operation the request runs is a mutation.
pub fn is_mutation(request: &mut Request) -> bool {
    operation_type(request) == Some(OperationType::Mutation)
}

/// Whether the operation the request runs is a subscription.
pub fn is_subscription(request: &mut Request) -> bool {
    operation_type(request) == Some(OperationType::Subscription)
}

/// The kind of the operation the request runs: the one its `operationName` names, else the
/// document's only one, named or not (none for a document that does not parse, or whose
/// operation is not told). A named operation sent without `operationName`, as a
/// dashboard's `subscription Events(…)`, was taken for none.
fn operation_type(request: &mut Request) -> Option<OperationType> {
    use async_graphql::parser::types::DocumentOperations;
    let name = request.operation_name.clone();
    let document = request.parsed_query().ok()?;
    match (&document.operations, name.as_deref()) {
        (DocumentOperations::Single(op), _) => Some(op.node.ty),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(&Name::new(name)).map(|op| op.node.ty),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next().map(|op| op.node.ty),
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// Adds the request's warnings to the answer (and `WORK_STOPPED` while this node's work
/// waits for a lease), and for a mutation the commit index that
/// holds its entry: the one this node has applied, or the one the peer that carried it out
/// had applied when it answered (`peer_applied`), whichever is higher.
pub fn finish(mut response: Response, notes: &Notes, mutation: bool, api: &Api, peer_applied: u64) -> Response {
    let mut warnings = notes.take();
    // A node cut off from its majority still answers from its replica, where its own
    // agents read RUNNING: the answer says they are not (WORK_STOPPED).
    if let Some(why) = api.work_stopped() {
        warnings.push(serde_json::json!({ "code": "WORK_STOPPED", "message": why }));
    }
    if !warnings.is_empty() {
        if let Ok(value) = Value::from_json(serde_json::Value::Array(warnings)) {
            response.extensions.insert("warnings".into(), value);
        }
    }
    if mutation {
        response
            .extensions
            .insert("commitIndex".into(), Value::from(api.applied_index().max(peer_applied)));
    }
    response
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::types::OperationType;
    use async_graphql::Request;

    use super::operation_type;

    #[test]
    fn the_operation_is_the_one_named_or_the_documents_only_one() {
        let kind = |query: &str, name: Option<&str>| {
            let mut request = Request::new(query);
            if let Some(name) = name {
                request = request.operation_name(name);
            }
            operation_type(&mut request)
        };
        assert_eq!(kind("{ a }", None), Some(OperationType::Query));
        // Named, and sent without `operationName` (the dashboard's subscriptions).
        assert_eq!(
            kind("subscription Events { events { seq } }", None),
            Some(OperationType::Subscription)
        );
        assert_eq!(kind("mutation Create { a }", None), Some(OperationType::Mutation));
        let two = "mutation M { a } query Q { b }";
        assert_eq!(kind(two, None), None);
        assert_eq!(kind(two, Some("M")), Some(OperationType::Mutation));
        assert_eq!(kind(two, Some("R")), None);
    }
}

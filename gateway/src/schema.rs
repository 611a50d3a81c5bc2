//! The GraphQL schema over [`troupe_actors::Api`]: each domain's queries, mutations and
//! subscriptions together in its own file, merged into the three roots.
//!
//! Limits: a query may nest at most [`MAX_DEPTH`] fields (introspection excepted, so the
//! standard introspection query of GraphiQL, codegen and Postman works), hold at most
//! [`MAX_SELECTIONS`] selections once its fragments are inlined, and cost at most
//! [`MAX_COMPLEXITY`], where a list field costs its page size times its selection.

mod agents;
mod alerts;
mod approvals;
mod depth;
mod events;
mod experiments;
mod hosts;
mod messages;
mod node;
pub mod notes;
mod page;
mod scalars;
mod shared;
mod swarms;
mod tasks;
mod tokens;
mod updates;
mod vms;

use async_graphql::{MergedObject, MergedSubscription, Schema, SchemaBuilder};
use troupe_actors::Api;

pub use scalars::Int64;

#[derive(MergedObject, Default)]
pub struct Query(
    node::NodeQuery,
    agents::AgentsQuery,
    tasks::TasksQuery,
    events::EventsQuery,
    tokens::TokensQuery,
    hosts::HostsQuery,
    vms::VmsQuery,
    messages::MessagesQuery,
    swarms::SwarmsQuery,
    experiments::ExperimentsQuery,
    approvals::ApprovalsQuery,
    alerts::AlertsQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    agents::AgentsMutation,
    tasks::TasksMutation,
    tokens::TokensMutation,
    hosts::HostsMutation,
    vms::VmsMutation,
    messages::MessagesMutation,
    swarms::SwarmsMutation,
    node::NodeMutation,
    experiments::ExperimentsMutation,
    approvals::ApprovalsMutation,
    alerts::AlertsMutation,
);

#[derive(MergedSubscription, Default)]
pub struct Subscription(
    events::EventsSubscription,
    tasks::TasksSubscription,
    agents::AgentsSubscription,
    hosts::HostsSubscription,
    vms::VmsSubscription,
    messages::MessagesSubscription,
    swarms::SwarmsSubscription,
    experiments::ExperimentsSubscription,
    approvals::ApprovalsSubscription,
);

pub type TroupeSchema = Schema<Query, Mutation, Subscription>;

/// Deepest query accepted, not counting introspection fields.
pub const MAX_DEPTH: usize = 12;
/// Most selections (fields, fragment spreads, inline fragments) a document may hold once its
/// fragments are inlined, definitions included. Validation and execution walk that many, so
/// it is checked first, in one pass over the document as written. Each field costs at least
/// 1 in complexity, so an ordinary query under the complexity limit is well under this one
/// (the standard introspection query holds about 500).
pub const MAX_SELECTIONS: usize = 20_000;
/// Largest complexity accepted: fields weighted, lists multiplied by their page size.
pub const MAX_COMPLEXITY: usize = 10_000;

fn builder() -> SchemaBuilder<Query, Mutation, Subscription> {
    Schema::build(Query::default(), Mutation::default(), Subscription::default()).limit_complexity(MAX_COMPLEXITY)
}

/// Checks what the schema cannot check by itself before a request runs (its syntax, its
/// depth and its inlined size); a refusal carries the code `INVALID_INPUT`.
pub fn prepare(request: &mut async_graphql::Request) -> Result<(), async_graphql::ServerError> {
    depth::check(request, MAX_DEPTH, MAX_SELECTIONS).map_err(|mut error| {
        invalid_input(&mut error);
        error
    })
}

/// Gives an error that refused the request as a whole, or an argument's value (a scalar
/// that does not parse, an argument out of its range, a variable not given), the code
/// `INVALID_INPUT`, unless it already has a code.
fn invalid_input(error: &mut async_graphql::ServerError) {
    let coded = error.extensions.as_ref().is_some_and(|e| e.get("code").is_some());
    let bad_argument = error.message.starts_with("Failed to parse \"")
        || (error.message.starts_with("Variable ") && error.message.ends_with(" is not defined."));
    if !coded && (error.path.is_empty() || bad_argument) {
        error
            .extensions
            .get_or_insert_with(Default::default)
            .set("code", "INVALID_INPUT");
    }
}

/// Gives every error that refused the request as a whole (parse, validation, complexity:
/// they carry no path) the code `INVALID_INPUT`, so clients can rely on `extensions.code`.
pub fn finish(mut response: async_graphql::Response) -> async_graphql::Response {
    response.errors.iter_mut().for_each(invalid_input);
    response
}

/// Answers one query or mutation (checked by [`prepare`]) as every transport does: HTTP,
/// and a WebSocket's `subscribe` of an operation that is not a subscription. It is served
/// once this node has applied the commit index it names (`extensions.minCommitIndex`), and
/// its answer carries the warnings its resolvers raised and, for a mutation, its commit
/// index (see [`notes`]). Over the socket the answers carried none of these.
pub async fn answer(schema: &TroupeSchema, api: &Api, mut request: async_graphql::Request) -> async_graphql::Response {
    if let Err(refused) = read_after(api, &request).await {
        return async_graphql::Response::from_errors(vec![refused]);
    }
    let mutation = notes::is_mutation(&mut request);
    let notes = std::sync::Arc::new(notes::Notes::default());
    let execute = schema.execute(request.data(notes.clone()));
    let (response, peer_applied) = troupe_actors::cluster::remote::noting_peer_commits(execute).await;
    notes::finish(finish(response), &notes, mutation, api, peer_applied)
}

/// Waits until this node has applied the commit index the request names, if it names one:
/// a client that wrote through another node reads its write here (bounded, see
/// `Api::read_after`).
pub async fn read_after(api: &Api, request: &async_graphql::Request) -> Result<(), async_graphql::ServerError> {
    match notes::min_commit_index(request) {
        Ok(None) => Ok(()),
        Ok(Some(index)) => api
            .read_after(index)
            .await
            .map_err(|e| crate::error::refusal(e.code(), e.to_string())),
        Err(message) => Err(crate::error::refusal("INVALID_INPUT", message)),
    }
}

pub fn build(api: Api, history: std::sync::Arc<crate::history::History>) -> TroupeSchema {
    builder().data(api).data(history).finish()
}

/// The schema with no node behind it: enough to parse, validate and introspect (tests).
#[cfg(test)]
pub(crate) fn build_detached() -> TroupeSchema {
    builder().finish()
}

/// The schema in SDL, as committed in `gateway/schema.graphql`.
pub fn sdl() -> String {
    builder().finish().sdl()
}

#[cfg(test)]
mod examples;
#[cfg(test)]
mod tests;

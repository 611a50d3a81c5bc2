//! The GraphQL schema: queries, mutations and subscriptions over [`troupe_actors::Api`].

mod inputs;
mod mutation;
mod query;
mod subscription;
mod types;

use async_graphql::Schema;
use troupe_actors::Api;

pub use mutation::Mutation;
pub use query::Query;
pub use subscription::Subscription;

pub type TroupeSchema = Schema<Query, Mutation, Subscription>;

/// Deepest query accepted, and the largest complexity (fields weighted by page sizes).
pub const MAX_DEPTH: usize = 12;
pub const MAX_COMPLEXITY: usize = 5_000;

pub fn build(api: Api) -> TroupeSchema {
    Schema::build(Query, Mutation, Subscription)
        .data(api)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

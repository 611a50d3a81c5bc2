//! What the cluster-wide lists share: page sizes, and the extra fields of their connections.

use async_graphql::{Context, Object};
use troupe_actors::service::TaskFilter;
use troupe_actors::Api;

use super::Int64;
use crate::error::{coded, OrGql};

pub const DEFAULT_PAGE: i32 = 50;
pub const MAX_PAGE: i32 = 500;

/// The page size a list asked for, capped: a page asked larger says so in the answer's
/// `extensions.warnings` (`PAGE_CAPPED`), where it came back shorter without a word.
pub fn page_size(ctx: &Context<'_>, first: Option<i32>, default: i32, max: i32) -> async_graphql::Result<usize> {
    match first.unwrap_or(default) {
        n if n < 0 => Err(coded("INVALID_INPUT", "first must not be negative")),
        n if n > max => {
            if let Ok(notes) = ctx.data::<std::sync::Arc<super::notes::Notes>>() {
                notes.warn(
                    "PAGE_CAPPED",
                    format!("{n} asked, at most {max} a page: {max} at most come back; ask for the next page after the last"),
                );
            }
            Ok(max as usize)
        }
        n => Ok(n as usize),
    }
}

/// What a list costs: its page size times its selection.
pub fn cost(first: Option<i32>, default: i32, max: i32, child_complexity: usize) -> usize {
    let n = first.unwrap_or(default).clamp(0, max) as usize;
    1 + n.max(1) * child_complexity
}

/// What a connection's `totalCount` counts.
pub enum Count {
    Agents(troupe_actors::agent::AgentFilter),
    Tasks(TaskFilter),
}

/// The extra fields of a cluster-wide connection.
pub struct Extra {
    pub count: Count,
    /// Peers whose items are missing from the page.
    pub missing: Vec<String>,
}

#[Object]
impl Extra {
    /// How many there are in the cluster. Nodes that could not be counted are named in
    /// `errors` (code UNAVAILABLE, `extensions.missingNodes`).
    async fn total_count(&self, ctx: &Context<'_>) -> async_graphql::Result<Int64> {
        let api = ctx.data::<Api>()?;
        let counted = match &self.count {
            Count::Agents(filter) => api.agents().count(filter.clone()).await.gql()?,
            Count::Tasks(filter) => api.tasks().count(filter.clone()).await.gql()?,
        };
        crate::error::partial(ctx, "totalCount", &counted.missing);
        Ok(counted.total.into())
    }

    /// Nodes whose items could not be included in this page (down, disconnected or too
    /// slow); empty when the page is whole.
    async fn missing_nodes(&self) -> &[String] {
        &self.missing
    }
}

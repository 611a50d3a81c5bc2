//! The one place Troupe's errors become GraphQL errors: a safe message and a stable
//! `extensions.code`. Internal causes go to the log, not to the client.

use async_graphql::{Context, ErrorExtensionValues, ErrorExtensions, ServerError};
use troupe_actors::ApiError;

pub fn coded(code: &'static str, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message.into()).extend_with(|_, e| e.set("code", code))
}

pub fn api(e: ApiError) -> async_graphql::Error {
    match &e {
        ApiError::Internal(cause) => {
            tracing::error!(%cause, "internal error answering a request");
            coded(e.code(), "internal error; see the node's log")
        }
        ApiError::Backpressure(message, retry_after_ms) => {
            let retry_after_ms = *retry_after_ms;
            async_graphql::Error::new(message.clone()).extend_with(move |_, ext| {
                ext.set("code", "BACKPRESSURE");
                ext.set("retryAfterMs", retry_after_ms);
            })
        }
        _ => coded(e.code(), e.to_string()),
    }
}

pub trait OrGql<T> {
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T> OrGql<T> for Result<T, ApiError> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(api)
    }
}

/// Reports, beside the data, that some peers' parts of a cluster-wide answer are missing:
/// an error with code UNAVAILABLE and `extensions.missingNodes`, so a partial answer is
/// never mistaken for a whole one.
pub fn partial(ctx: &Context<'_>, what: &str, missing: &[String]) {
    if missing.is_empty() {
        return;
    }
    let mut error = ServerError::new(
        format!(
            "{what} is missing the part of node(s) {} (down, disconnected or too slow)",
            missing.join(", ")
        ),
        Some(ctx.item.pos),
    );
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", "UNAVAILABLE");
    extensions.set("missingNodes", missing.to_vec());
    error.extensions = Some(extensions);
    ctx.add_error(error);
}

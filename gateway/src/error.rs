//! The one place Troupe's errors become GraphQL errors: a safe message and a stable
//! `extensions.code`. Internal causes go to the log, not to the client.

use async_graphql::ErrorExtensions;
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

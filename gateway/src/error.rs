//! The one place Troupe's errors become GraphQL errors: a safe message and a stable
//! `extensions.code`. Internal causes go to the log, not to the client.

use async_graphql::{Context, ErrorExtensionValues, ErrorExtensions, ParseRequestError, ServerError};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
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

/// An error that refuses a request as a whole, before it runs (it has no path).
pub fn refusal(code: &str, message: impl Into<String>) -> ServerError {
    let mut error = ServerError::new(message.into(), None);
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", code);
    error.extensions = Some(extensions);
    error
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

/// An HTTP answer that carries one GraphQL error, for a request refused before it became a
/// GraphQL operation.
pub fn http(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    (status, Json(body)).into_response()
}

/// A body over `body_limit_bytes`: 413, as a GraphQL error.
pub fn too_large() -> Response {
    http(
        StatusCode::PAYLOAD_TOO_LARGE,
        "INVALID_INPUT",
        "the request body is larger than the node's body_limit_bytes",
    )
}

/// Gives the plain-text 413 the body limit answers with (when the Content-Length alone is
/// over it) the same GraphQL error as a body found too large while it is read.
pub async fn coded_too_large<B>(response: axum::http::Response<B>) -> Response
where
    axum::http::Response<B>: IntoResponse,
{
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !json {
        return too_large();
    }
    response.into_response()
}

/// A request that could not be read as GraphQL (not JSON, not a GraphQL request, too
/// large): a GraphQL error with a code and a plain message, not the debug text of the
/// parse error.
pub struct Unreadable(ParseRequestError);

impl From<ParseRequestError> for Unreadable {
    fn from(e: ParseRequestError) -> Self {
        Self(e)
    }
}

impl IntoResponse for Unreadable {
    fn into_response(self) -> Response {
        // The body limit cuts a body without a Content-Length while it is read; the error
        // reaches here as text.
        let over_limit = match &self.0 {
            ParseRequestError::PayloadTooLarge => true,
            ParseRequestError::Io(e) => e.to_string().contains("length limit exceeded"),
            _ => false,
        };
        if over_limit {
            return too_large();
        }
        http(StatusCode::BAD_REQUEST, "INVALID_INPUT", &self.0.to_string())
    }
}

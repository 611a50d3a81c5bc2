//! Errors of the node's API, split as the gateway reports them: what the caller got wrong
//! (not found, invalid, conflict) apart from what the node could not do (unavailable,
//! internal). Serializable, because a peer node may be the one that answers.

use serde::{Deserialize, Serialize};
use troupe_runtime::auth::TokenError;
use troupe_runtime::idempotency::IdempotencyError;
use troupe_runtime::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// Too much work is waiting: try again after the hint (milliseconds).
    #[error("{0}")]
    Backpressure(String, u64),
    /// The node does not allow this (a disabled facility).
    #[error("{0}")]
    Forbidden(String),
    /// No host can take a VM; the message names why each host was rejected.
    #[error("{0}")]
    NoValidHost(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidInput(msg.into())
    }

    /// The stable code clients see in `extensions.code`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::InvalidInput(_) => "INVALID_INPUT",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::Unavailable(_) => "UNAVAILABLE",
            ApiError::NoValidHost(_) => "NO_VALID_HOST",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::Backpressure(..) => "BACKPRESSURE",
            ApiError::Internal(_) => "INTERNAL",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            // The caller's cursor is not one this log can continue from: its request is at fault.
            e if e.is_bad_cursor() => ApiError::InvalidInput(e.to_string()),
            StoreError::Rejected(_) => ApiError::InvalidInput(e.to_string()),
            StoreError::Failed(_)
            | StoreError::Stale(_)
            | StoreError::Closed
            | StoreError::Unavailable(_)
            | StoreError::NotLeader { .. }
            | StoreError::Left
            | StoreError::Alone => ApiError::Unavailable(e.to_string()),
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<IdempotencyError> for ApiError {
    fn from(e: IdempotencyError) -> Self {
        match e {
            IdempotencyError::Mismatch(_) => ApiError::Conflict(e.to_string()),
            IdempotencyError::BadKey => ApiError::InvalidInput(e.to_string()),
            IdempotencyError::Store(s) => s.into(),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::NotFound(_) => ApiError::NotFound(e.to_string()),
            TokenError::Invalid(_) => ApiError::InvalidInput(e.to_string()),
            TokenError::Store(s) => s.into(),
            TokenError::Io { .. } => ApiError::Internal(e.to_string()),
        }
    }
}

impl<T> From<ractor::MessagingErr<T>> for ApiError {
    fn from(e: ractor::MessagingErr<T>) -> Self {
        ApiError::Unavailable(format!("actor unreachable: {e}"))
    }
}

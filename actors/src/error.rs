//! Errors of the node's API, split as the gateway reports them: what the caller got wrong
//! (not found, invalid, conflict) apart from what the node could not do (unavailable,
//! internal). Serializable, because a peer node may be the one that answers.

use serde::{Deserialize, Serialize};
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
            ApiError::Internal(_) => "INTERNAL",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            // The caller's cursor is older than the log: its request, not the node, is at fault.
            StoreError::Compacted { .. } => ApiError::InvalidInput(e.to_string()),
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

impl<T> From<ractor::MessagingErr<T>> for ApiError {
    fn from(e: ractor::MessagingErr<T>) -> Self {
        ApiError::Unavailable(format!("actor unreachable: {e}"))
    }
}

//! Who is calling: the bearer token resolves to a [`Role`]; field guards check it.

use async_graphql::{Context, Guard};
use axum::http::HeaderMap;
use troupe_actors::Api;
use troupe_runtime::auth::{Check, Role};

use crate::error::coded;

/// The caller, put in each request's data once the token checked out.
#[derive(Debug, Clone)]
pub struct Caller {
    pub role: Role,
    /// The token's id, so a long-lived connection can notice its revocation.
    pub token: String,
}

/// Why a request was refused before it ran.
#[derive(Debug)]
pub enum Refusal {
    Missing,
    Invalid,
    /// Known, but revoked or expired.
    Refused(&'static str),
    Unavailable(String),
    /// This node left the cluster: its replica no longer follows the log.
    Left,
}

impl Refusal {
    pub fn message(&self) -> String {
        match self {
            Refusal::Missing => "missing bearer token: send Authorization: Bearer <token>".into(),
            Refusal::Invalid => "invalid token".into(),
            Refusal::Refused(why) => format!("the token {why}"),
            Refusal::Unavailable(e) => format!("cannot check the token now: {e}"),
            Refusal::Left => "this node left the cluster (leaveCluster, forgetMember): it serves no request, for its \
                              replica no longer follows the cluster's; ask another member"
                .into(),
        }
    }

    /// 503 when the node cannot take the request now, 401 when the caller is not known.
    pub fn status(&self) -> axum::http::StatusCode {
        match self {
            Refusal::Unavailable(_) | Refusal::Left => axum::http::StatusCode::SERVICE_UNAVAILABLE,
            _ => axum::http::StatusCode::UNAUTHORIZED,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Missing | Refusal::Invalid | Refusal::Refused(_) => "UNAUTHENTICATED",
            Refusal::Unavailable(_) | Refusal::Left => "UNAVAILABLE",
        }
    }
}

/// Resolves an `Authorization` value (`Bearer <token>`) to the caller.
pub async fn resolve(api: &Api, authorization: Option<&str>) -> Result<Caller, Refusal> {
    if api.has_left() {
        return Err(Refusal::Left);
    }
    let value = authorization.ok_or(Refusal::Missing)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(Refusal::Invalid)?;
    match api.authenticate(token).await {
        Ok(Check::Valid { id, role }) => Ok(Caller { role, token: id }),
        Ok(Check::Unknown) => Err(Refusal::Invalid),
        Ok(Check::Refused(why)) => Err(Refusal::Refused(why)),
        Err(e) => Err(Refusal::Unavailable(e.to_string())),
    }
}

pub fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

pub async fn from_headers(api: &Api, headers: &HeaderMap) -> Result<Caller, Refusal> {
    resolve(api, authorization(headers)).await
}

/// Requires at least `0` for a field.
pub struct RoleGuard(pub Role);

impl Guard for RoleGuard {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        match ctx.data_opt::<Caller>() {
            Some(caller) if caller.role >= self.0 => Ok(()),
            Some(caller) => Err(coded(
                "FORBIDDEN",
                format!(
                    "the {} role cannot do this; it needs {}",
                    caller.role.as_str(),
                    self.0.as_str()
                ),
            )),
            None => Err(coded("UNAUTHENTICATED", "missing bearer token")),
        }
    }
}

//! Who is calling: the bearer token resolves to a [`Role`]; field guards check it.

use async_graphql::{Context, Guard};
use axum::http::HeaderMap;
use troupe_actors::Api;
use troupe_runtime::auth::Role;

use crate::error::coded;

/// The caller's role, put in each request's data once the token checked out.
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub Role);

/// Why a request was refused before it ran.
#[derive(Debug)]
pub enum Refusal {
    Missing,
    Invalid,
    Unavailable(String),
}

impl Refusal {
    pub fn message(&self) -> String {
        match self {
            Refusal::Missing => "missing bearer token: send Authorization: Bearer <token>".into(),
            Refusal::Invalid => "invalid token".into(),
            Refusal::Unavailable(e) => format!("cannot check the token now: {e}"),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Missing | Refusal::Invalid => "UNAUTHENTICATED",
            Refusal::Unavailable(_) => "UNAVAILABLE",
        }
    }
}

/// Resolves an `Authorization` value (`Bearer <token>`) to the caller's role.
pub async fn resolve(api: &Api, authorization: Option<&str>) -> Result<Caller, Refusal> {
    let value = authorization.ok_or(Refusal::Missing)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(Refusal::Invalid)?;
    match api.authenticate(token).await {
        Ok(Some(role)) => Ok(Caller(role)),
        Ok(None) => Err(Refusal::Invalid),
        Err(e) => Err(Refusal::Unavailable(e.to_string())),
    }
}

pub async fn from_headers(api: &Api, headers: &HeaderMap) -> Result<Caller, Refusal> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    resolve(api, value).await
}

/// Requires at least `0` for a field.
pub struct RoleGuard(pub Role);

impl Guard for RoleGuard {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        match ctx.data_opt::<Caller>() {
            Some(Caller(role)) if *role >= self.0 => Ok(()),
            Some(Caller(role)) => Err(coded(
                "FORBIDDEN",
                format!(
                    "the {} role cannot do this; it needs {}",
                    role.as_str(),
                    self.0.as_str()
                ),
            )),
            None => Err(coded("UNAUTHENTICATED", "missing bearer token")),
        }
    }
}

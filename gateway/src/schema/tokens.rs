//! Tokens in GraphQL, for admins: `tokens`, `createToken`, `revokeToken`. The secret is shown
//! once, by `createToken`; nothing else ever returns it.

use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use troupe_actors::Api;
use troupe_runtime::auth::{Role as R, TokenInfo};

use super::Int64;
use crate::auth::RoleGuard;
use crate::error::OrGql;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Role {
    /// Queries and subscriptions.
    Viewer,
    /// Also agent and task mutations.
    Operator,
    /// Also token management.
    Admin,
}

impl From<Role> for R {
    fn from(r: Role) -> Self {
        match r {
            Role::Viewer => R::Viewer,
            Role::Operator => R::Operator,
            Role::Admin => R::Admin,
        }
    }
}

impl From<R> for Role {
    fn from(r: R) -> Self {
        match r {
            R::Viewer => Role::Viewer,
            R::Operator => Role::Operator,
            R::Admin => Role::Admin,
        }
    }
}

/// The caller of a request.
#[derive(SimpleObject)]
pub struct Me {
    pub role: Role,
    /// The id of the token it presented.
    pub token: ID,
    /// The node that answers.
    pub node: String,
}

#[derive(SimpleObject)]
pub struct Token {
    pub id: ID,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it was last used (recorded at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<TokenInfo> for Token {
    fn from(t: TokenInfo) -> Self {
        Self {
            id: ID(t.id),
            name: t.name,
            role: t.role.into(),
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
            last_used_at: t.last_used_at,
        }
    }
}

#[derive(SimpleObject)]
pub struct CreatedToken {
    /// The bearer token. Shown this once: only its hash is kept. Null when this answer
    /// replays an earlier createToken with the same idempotencyKey.
    pub secret: Option<String>,
    pub token: Token,
}

#[derive(InputObject)]
pub struct CreateTokenInput {
    pub role: Role,
    /// A name to recognise it by (1-128 characters).
    pub name: String,
    /// Seconds until it stops working; never when omitted.
    pub expires_in_seconds: Option<Int64>,
}

#[derive(Default)]
pub struct TokensQuery;

#[Object]
impl TokensQuery {
    /// Who is asking: the caller's role and token, and the node answering (what a client
    /// such as the dashboard shows and offers follows the role).
    #[graphql(guard = "RoleGuard(R::Viewer)")]
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Me> {
        let caller = ctx.data::<crate::auth::Caller>()?;
        Ok(Me {
            role: caller.role.into(),
            token: ID(caller.token.clone()),
            node: ctx.data::<Api>()?.node_name().to_owned(),
        })
    }

    /// Every token of the cluster, oldest first, without secrets.
    #[graphql(guard = "RoleGuard(R::Admin)")]
    async fn tokens(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Token>> {
        Ok(ctx
            .data::<Api>()?
            .tokens()
            .list()
            .into_iter()
            .map(Token::from)
            .collect())
    }
}

#[derive(Default)]
pub struct TokensMutation;

#[Object]
impl TokensMutation {
    /// Creates a token; it works on every node of the cluster.
    #[graphql(guard = "RoleGuard(R::Admin)")]
    async fn create_token(
        &self,
        ctx: &Context<'_>,
        input: CreateTokenInput,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<CreatedToken> {
        let expires_in = match input.expires_in_seconds {
            Some(s) => Some(
                chrono::TimeDelta::try_seconds(s.0)
                    .ok_or_else(|| crate::error::coded("INVALID_INPUT", "expiresInSeconds is too large"))?,
            ),
            None => None,
        };
        let (secret, info) = ctx
            .data::<Api>()?
            .create_token(input.role.into(), &input.name, expires_in, idempotency_key.as_deref())
            .await
            .gql()?;
        Ok(CreatedToken {
            secret,
            token: info.into(),
        })
    }

    /// Revokes a token on every node: requests with it fail from now on, and WebSocket
    /// connections opened with it are closed.
    #[graphql(guard = "RoleGuard(R::Admin)")]
    async fn revoke_token(
        &self,
        ctx: &Context<'_>,
        id: ID,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Token> {
        let api = ctx.data::<Api>()?;
        let info = api.revoke_token(&id, idempotency_key.as_deref()).await.gql()?;
        Ok(info.into())
    }
}

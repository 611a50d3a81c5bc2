//! Token management for admins, with idempotency keys like every mutation. A token's secret
//! is shown once: a replayed createToken answers the same token without it.

use chrono::TimeDelta;
use serde::Serialize;
use troupe_runtime::auth::{Role, TokenInfo};

use super::context::{keep, split};
use super::node::REVOKED_WITHIN;
use super::Api;
use crate::cluster::remote::Peer;
use crate::error::ApiError;

#[derive(Serialize)]
struct CreateRequest<'a> {
    role: Role,
    name: &'a str,
    expires_in_seconds: Option<i64>,
}

impl Api {
    /// Creates a token; the secret is `None` when the key replays an earlier creation.
    pub async fn create_token(
        &self,
        role: Role,
        name: &str,
        expires_in: Option<TimeDelta>,
        key: Option<&str>,
    ) -> Result<(Option<String>, TokenInfo), ApiError> {
        let request = CreateRequest {
            role,
            name,
            expires_in_seconds: expires_in.map(|d| d.num_seconds()),
        };
        let guard = match split(self.ctx.claim("createToken", key, &request).await?) {
            Ok(guard) => guard,
            Err(id) => {
                let info = self.ctx.tokens.list().into_iter().find(|t| t.id == id);
                return info
                    .map(|info| (None, info))
                    .ok_or_else(|| ApiError::NotFound(format!("no token {id}")));
            }
        };
        let (secret, info) = self.ctx.tokens.create(role, name, expires_in).await?;
        keep(&self.ctx.store, guard, &info.id).await?;
        Ok((Some(secret), info))
    }

    /// Revokes a token; from the next check on it no longer works.
    pub async fn revoke_token(&self, id: &str, key: Option<&str>) -> Result<TokenInfo, ApiError> {
        let guard = match split(self.ctx.claim("revokeToken", key, &id).await?) {
            Ok(guard) => guard,
            Err(id) => {
                let info = self.ctx.tokens.list().into_iter().find(|t| t.id == id);
                return info.ok_or_else(|| ApiError::NotFound(format!("no token {id}")));
            }
        };
        let (info, seq) = self.ctx.tokens.revoke(id).await?;
        keep(&self.ctx.store, guard, id).await?;
        if let Some(seq) = seq {
            self.revoked_everywhere(&info, seq).await;
        }
        Ok(info)
    }

    /// Waits until every member heard from lately (`UP`) has applied the revocation and
    /// refuses the token, each for at most [`REVOKED_WITHIN`]: the answer then means the
    /// token works nowhere. A member that does not confirm is named in a warning; it applies
    /// the revocation with the log once it is reached.
    async fn revoked_everywhere(&self, info: &TokenInfo, seq: u64) {
        let service = self.node_service();
        let asked = self.ctx.cluster.up_peers().into_iter().map(|peer| {
            let service = &service;
            async move {
                let answer = Peer(service, peer.clone()).revoked(seq).await;
                (peer, answer)
            }
        });
        for (peer, answer) in futures::future::join_all(asked).await {
            match answer {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(token = %info.id, node = %peer, within = ?REVOKED_WITHIN, "a member did not apply a token's revocation in time; it will once it catches up")
                }
                Err(e) => {
                    tracing::warn!(token = %info.id, node = %peer, error = %e, "a member could not confirm a token's revocation; it will apply it once it catches up")
                }
            }
        }
    }
}

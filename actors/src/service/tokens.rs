//! Token management for admins, with idempotency keys like every mutation. A token's secret
//! is shown once: a replayed createToken answers the same token without it.

use chrono::TimeDelta;
use serde::Serialize;
use serde_json::json;
use troupe_runtime::auth::{Role, TokenInfo};
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::Batch;

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
    /// token works nowhere. A member that does not confirm (not asked because it is not
    /// `UP`, or silent, or late) is named in a warning and in a
    /// `TOKEN_REVOCATION_UNCONFIRMED` event: it applies the revocation with the log once it
    /// is reached, and until then it alone may still accept the token.
    async fn revoked_everywhere(&self, info: &TokenInfo, seq: u64) {
        let service = self.node_service();
        let up = self.ctx.cluster.up_peers();
        let asked = up.iter().map(|peer| {
            let service = &service;
            async move {
                let answer = Peer(service, peer.clone()).revoked(seq).await;
                (peer.clone(), answer)
            }
        });
        let mut unconfirmed = Vec::new();
        for (peer, answer) in futures::future::join_all(asked).await {
            match answer {
                Ok(true) => continue,
                Ok(false) => {
                    tracing::warn!(token = %info.id, node = %peer, within = ?REVOKED_WITHIN, "a member did not apply a token's revocation in time; it will once it catches up")
                }
                Err(e) => {
                    tracing::warn!(token = %info.id, node = %peer, error = %e, "a member could not confirm a token's revocation; it will apply it once it catches up")
                }
            }
            unconfirmed.push(peer);
        }
        let me = self.ctx.node_name.as_str();
        for member in self.ctx.store.status().members {
            if member.name != me && !up.contains(&member.name) {
                tracing::warn!(token = %info.id, node = %member.name, "a member not heard from lately was not asked to confirm a token's revocation; it will apply it once it catches up");
                unconfirmed.push(member.name);
            }
        }
        if unconfirmed.is_empty() {
            return;
        }
        unconfirmed.sort();
        let event = NewEvent::new(
            "TOKEN_REVOCATION_UNCONFIRMED",
            Some(info.id.clone()),
            json!({ "name": info.name, "nodes": unconfirmed }),
        );
        if let Err(e) = self.ctx.store.write(Batch::new().event(event)).await {
            tracing::warn!(token = %info.id, error = %e, "could not record which members did not confirm a token's revocation");
        }
    }
}

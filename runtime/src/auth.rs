//! API tokens: random secrets of which the store keeps only a SHA-256 hash, each with a
//! role, a name, an optional expiry, and the time it was last used.
//!
//! [`Tokens`] keeps every record in memory (there are few), so checking a token costs no
//! disk read, and a revocation or an expiry takes effect at the very next check.
//! `troupe token create` never opens the store (a node may hold it, and a member's store
//! belongs to its cluster): it drops the hash into `tokens.pending/`, which the node imports
//! at start and whenever it meets a token it does not know.

pub(crate) mod files;
mod key;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

pub use files::{create_offline, write_private, write_private_async, ADMIN_TOKEN_FILE};

use crate::store::{Batch, Store, StoreError, Table};

pub const TOKENS: Table = Table::new("tokens");

/// A token's last use is written at most this often.
const LAST_USED_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// What a token may do. Ordered: a higher role can do all a lower one can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Queries and subscriptions.
    Viewer,
    /// Also agent and task mutations.
    Operator,
    /// Also token management.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// A token as the store keeps it and as admins see it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// The member whose `admin.token` this is: revoked when that member leaves the cluster
    /// (or is forgotten). None for every other token, and for admin tokens made before
    /// members were recorded.
    #[serde(default)]
    pub node: Option<String>,
}

impl TokenInfo {
    fn new(name: String, role: Role, expires_at: Option<DateTime<Utc>>) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            name,
            role,
            created_at: crate::clock::now(),
            expires_at,
            revoked_at: None,
            last_used_at: None,
            node: None,
        }
    }

    /// Why the token no longer works, if it does not.
    pub fn refused(&self, now: DateTime<Utc>) -> Option<&'static str> {
        if self.revoked_at.is_some() {
            Some("was revoked")
        } else if self.expires_at.is_some_and(|e| e <= now) {
            Some("has expired")
        } else {
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("no token {0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

/// What checking a bearer token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Valid {
        id: String,
        role: Role,
    },
    Unknown,
    /// Known but revoked or expired.
    Refused(&'static str),
}

pub fn hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `token` has the shape [`generate`] gives.
fn looks_minted(token: &str) -> bool {
    token
        .strip_prefix("trp_")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("trp_{hex}")
}

/// The node's tokens: the store's records, cached.
#[derive(Clone)]
pub struct Tokens {
    store: Store,
    data_dir: PathBuf,
    by_hash: Arc<RwLock<HashMap<String, TokenInfo>>>,
    key: key::Key,
    /// When this node last wrote each token's use (the cache shows it once applied): a
    /// token used in a burst is written once a minute, not at each check.
    noted: Arc<std::sync::Mutex<HashMap<String, DateTime<Utc>>>>,
    /// Bumped at every revocation, so long-lived connections re-check their token.
    revocations: Arc<watch::Sender<u64>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").finish_non_exhaustive()
    }
}

impl Tokens {
    /// Loads every token, after importing those `troupe token create` left while the store
    /// was locked.
    pub async fn load(store: Store, data_dir: &Path) -> Result<Self, TokenError> {
        let tokens = Self {
            store,
            data_dir: data_dir.to_path_buf(),
            by_hash: Arc::default(),
            key: key::Key::default(),
            noted: Arc::default(),
            revocations: Arc::new(watch::channel(0).0),
        };
        tokens
            .store
            .project(Arc::new(Cache {
                by_hash: tokens.by_hash.clone(),
                revocations: tokens.revocations.clone(),
            }))
            .await?;
        files::import_pending(&tokens.store, data_dir).await?;
        // A cluster made by an earlier release has no key yet: without one, every token of
        // the minted shape would be worth a read at the leader.
        if let Err(e) = tokens.key.ensure(&tokens.store).await {
            tracing::warn!(error = %e, "the cluster's token key could not be written yet");
        }
        Ok(tokens)
    }

    fn get(&self, hash: &str) -> Option<TokenInfo> {
        self.by_hash
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)
            .cloned()
    }

    /// Checks a bearer token. Notes its use (written at most once a minute per token).
    pub async fn check(&self, token: &str) -> Result<Check, TokenError> {
        let hash = hash(token);
        let info = match self.get(&hash) {
            Some(info) => info,
            None => {
                // Made on another node a moment ago, its event not applied here yet: before
                // a token the cluster's key vouches for is refused, this node catches up with
                // what the cluster committed (a linearizable read). Anything else is refused
                // at once, so junk tokens, of Troupe's shape or not, cost the leader nothing.
                if self.worth_a_read(token).await? {
                    self.store.linearize().await?;
                }
                if let Some(bytes) = self.store.get(TOKENS, &hash).await? {
                    // The cache holds it too once the write is applied here.
                    return self.checked(hash, crate::codec::decode(&bytes)?);
                }
                if files::import_pending(&self.store, &self.data_dir).await? == 0 {
                    return Ok(Check::Unknown);
                }
                // Imported: the cache followed the write.
                match self.get(&hash) {
                    Some(info) => info,
                    None => return Ok(Check::Unknown),
                }
            }
        };
        self.checked(hash, info)
    }

    /// Whether an unknown token may have been minted elsewhere a moment ago: it is of the
    /// minted shape and the cluster's key vouches for it (or the key is not applied here yet).
    async fn worth_a_read(&self, token: &str) -> Result<bool, TokenError> {
        if !looks_minted(token) {
            return Ok(false);
        }
        Ok(match self.key.known(&self.store).await? {
            Some(key) => key::vouched(&key, token),
            None => true,
        })
    }

    /// The verdict on a known token, noting its use.
    fn checked(&self, hash: String, info: TokenInfo) -> Result<Check, TokenError> {
        let now = crate::clock::now();
        if let Some(why) = info.refused(now) {
            return Ok(Check::Refused(why));
        }
        let noted = {
            let mut noted = self.noted.lock().unwrap_or_else(|p| p.into_inner());
            let last = info.last_used_at.max(noted.get(&hash).copied());
            let due = last.is_none_or(|t| now - t >= LAST_USED_EVERY);
            if due {
                noted.insert(hash.clone(), now);
            }
            due
        };
        if noted {
            let read = crate::codec::encode(&info)?;
            let mut used = info.clone();
            used.last_used_at = Some(now);
            let bytes = crate::codec::encode(&used)?;
            // Only over the record this check read: a revocation committed meanwhile (on any
            // node) must not be overwritten by the token's last use, which would make it work
            // again. Losing a last-use time (to that, or a crash) is harmless; the write is
            // not awaited.
            let _ = self.store.submit(
                Batch::new()
                    .require(TOKENS, hash.clone(), Some(read))
                    .put(TOKENS, hash, bytes),
            );
        }
        Ok(Check::Valid {
            id: info.id,
            role: info.role,
        })
    }

    /// Whether the token with this id still works (for connections that checked it earlier).
    pub fn still_valid(&self, id: &str) -> bool {
        let now = crate::clock::now();
        self.by_hash
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|t| t.id == id && t.refused(now).is_none())
    }

    /// The expiry of the token with this id, if it has one.
    pub fn expiry(&self, id: &str) -> Option<DateTime<Utc>> {
        self.by_hash
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .find(|t| t.id == id)
            .and_then(|t| t.expires_at)
    }

    /// Changes at every revocation.
    pub fn revocations(&self) -> watch::Receiver<u64> {
        self.revocations.subscribe()
    }

    /// Creates a token; returns the secret (shown once, never stored) and its record.
    pub async fn create(
        &self,
        role: Role,
        name: &str,
        expires_in: Option<chrono::TimeDelta>,
    ) -> Result<(String, TokenInfo), TokenError> {
        let name = validate_name(name)?;
        if expires_in.is_some_and(|d| d <= chrono::TimeDelta::zero()) {
            return Err(TokenError::Invalid("expiresInSeconds must be positive".into()));
        }
        let expires_at = match expires_in {
            Some(d) => Some(
                crate::clock::now()
                    .checked_add_signed(d)
                    .ok_or_else(|| TokenError::Invalid("expiresInSeconds is too large".into()))?,
            ),
            None => None,
        };
        let secret = key::mint(&self.key.ensure(&self.store).await?);
        let info = TokenInfo::new(name, role, expires_at);
        self.record(hash(&secret), &info, TOKEN_CREATED).await?;
        Ok((secret, info))
    }

    /// Writes a token's record with its event `kind` and caches it; the event's sequence
    /// number.
    async fn record(&self, hash: String, info: &TokenInfo, kind: &str) -> Result<Option<u64>, TokenError> {
        let seqs = self
            .store
            .write(
                Batch::new()
                    .put(TOKENS, hash.clone(), crate::codec::encode(info)?)
                    .event(token_event(kind, info)),
            )
            .await?;
        // The cache followed the write as it was applied.
        Ok(seqs.first().copied())
    }

    /// Waits, for at most `within`, until this node has applied the event `seq` (a
    /// revocation made on another node) and its cache holds what it changed; whether it has.
    /// Connections that used a token it revoked are then ended here.
    pub async fn caught_up(&self, seq: u64, within: std::time::Duration) -> Result<bool, TokenError> {
        // The cache follows each write as it is applied (see `Cache`): once the event is
        // applied here, the cache holds the revocation and this node's connections were told.
        self.store.reached(seq, within).await.map_err(TokenError::from)
    }

    /// Revokes a token; the sequence number of its `TOKEN_REVOKED` event (none when it was
    /// revoked already), which [`Tokens::caught_up`] waits for on the other nodes.
    pub async fn revoke(&self, id: &str) -> Result<(TokenInfo, Option<u64>), TokenError> {
        let found = self
            .by_hash
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(_, t)| t.id == id)
            .map(|(h, t)| (h.clone(), t.clone()));
        let (hash, mut info) = found.ok_or_else(|| TokenError::NotFound(id.to_owned()))?;
        if info.revoked_at.is_some() {
            return Ok((info, None));
        }
        info.revoked_at = Some(crate::clock::now());
        let seq = self.record(hash, &info, TOKEN_REVOKED).await?;
        self.revocations.send_modify(|n| *n += 1);
        Ok((info, seq))
    }

    /// Every token, oldest first.
    pub fn list(&self) -> Vec<TokenInfo> {
        let mut all: Vec<TokenInfo> = self
            .by_hash
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Makes sure the admin token in `<data_dir>/admin.token` works, creating it on first
    /// start, as the admin token of the member `node` (revoked when it leaves). Returns the
    /// file's path.
    pub async fn ensure_admin_token(&self, node: &str) -> Result<PathBuf, TokenError> {
        let path = self.data_dir.join(ADMIN_TOKEN_FILE);
        let existing = files::read_trimmed(&path).await;
        if let Some(existing) = existing.filter(|t| !t.is_empty()) {
            let hash = hash(&existing);
            if self.get(&hash).is_none() {
                // The file outlived its store (a wiped database): keep the operator's token.
                let mut info = TokenInfo::new("admin".into(), Role::Admin, None);
                info.node = Some(node.to_owned());
                self.store
                    .write(Batch::new().put(TOKENS, hash, crate::codec::encode(&info)?))
                    .await?;
            }
            return Ok(path);
        }
        let secret = key::mint(&self.key.ensure(&self.store).await?);
        let mut info = TokenInfo::new("admin".into(), Role::Admin, None);
        info.node = Some(node.to_owned());
        self.record(hash(&secret), &info, TOKEN_CREATED).await?;
        files::write_private_async(path.clone(), secret).await?;
        Ok(path)
    }
}

/// Adds to `batch` the revocation of the admin tokens of the member `node`, each over the
/// record `v` holds (a change made meanwhile wins) with its `TOKEN_REVOKED` event: a member
/// that left the cluster takes its admin token with it.
pub fn revoke_admin_of(
    v: &crate::store::View<'_>,
    mut batch: Batch,
    node: &str,
) -> Result<Batch, crate::store::StoreError> {
    let now = crate::clock::now();
    let mut revoked = Vec::new();
    v.scan(TOKENS, None, |hash, bytes| {
        let info: TokenInfo = crate::codec::decode(bytes)?;
        if info.node.as_deref() == Some(node) && info.revoked_at.is_none() {
            revoked.push((hash.to_owned(), bytes.to_vec(), info));
        }
        Ok(true)
    })?;
    for (hash, read, mut info) in revoked {
        info.revoked_at = Some(now);
        batch = batch
            .require(TOKENS, hash.clone(), Some(read))
            .put(TOKENS, hash, crate::codec::encode(&info)?)
            .event(token_event(TOKEN_REVOKED, &info));
    }
    Ok(batch)
}

/// A token was made; its record reaches every node's cache with this event.
pub const TOKEN_CREATED: &str = "TOKEN_CREATED";
/// A token was revoked; every node ends the connections that used it.
pub const TOKEN_REVOKED: &str = "TOKEN_REVOKED";

/// The tokens as read from the store, with what the cache knows that a read made a moment
/// earlier may not: tokens are never deleted, a revocation is never undone, and the latest
/// use wins.
/// The token cache as the state machine keeps it (see [`crate::store::Projection`]): every
/// token record, by hash. A token created or revoked on any node reaches it as the write is
/// applied here; a revocation (or a snapshot, whose changes come without events) ends this
/// node's connections that used a token now refused, as it does on the node that revoked it.
struct Cache {
    by_hash: Arc<RwLock<HashMap<String, TokenInfo>>>,
    revocations: Arc<watch::Sender<u64>>,
}

impl crate::store::Projection for Cache {
    fn name(&self) -> &'static str {
        "tokens"
    }

    fn tables(&self) -> &'static [Table] {
        &[TOKENS]
    }

    fn rebuild(&self, view: &crate::store::View<'_>) -> Result<(), StoreError> {
        let mut read = HashMap::new();
        view.scan(TOKENS, None, |hash, bytes| {
            read.insert(hash.to_owned(), crate::codec::decode::<TokenInfo>(bytes)?);
            Ok(true)
        })?;
        *self.by_hash.write().unwrap_or_else(|p| p.into_inner()) = read;
        self.revocations.send_modify(|n| *n += 1);
        Ok(())
    }

    fn apply(&self, change: &crate::store::Change<'_>) -> Result<(), StoreError> {
        let mut revoked = false;
        {
            let mut cached = self.by_hash.write().unwrap_or_else(|p| p.into_inner());
            for hash in change.keys_of(TOKENS) {
                match change.view()?.get(TOKENS, hash)? {
                    Some(bytes) => {
                        let token: TokenInfo = crate::codec::decode(&bytes)?;
                        revoked |=
                            token.revoked_at.is_some() && cached.get(hash).is_none_or(|t| t.revoked_at.is_none());
                        cached.insert(hash.to_owned(), token);
                    }
                    None => {
                        revoked = true;
                        cached.remove(hash);
                    }
                }
            }
        }
        if revoked {
            self.revocations.send_modify(|n| *n += 1);
        }
        Ok(())
    }
}

/// The event of a token's change: its id, name and role, never its secret or hash.
fn token_event(kind: &str, info: &TokenInfo) -> crate::events::NewEvent {
    crate::events::NewEvent::new(
        kind,
        Some(info.id.clone()),
        serde_json::json!({ "name": info.name, "role": info.role.as_str() }),
    )
}

fn validate_name(name: &str) -> Result<String, TokenError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 128 {
        return Err(TokenError::Invalid("a token name must be 1-128 characters".into()));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests;

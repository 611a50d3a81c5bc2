//! API tokens: random secrets of which the store keeps only a SHA-256 hash, each with a role.
//!
//! `troupe token create` writes straight into the store when no node has it open; while a
//! node runs (redb lets one process write), it drops the hash into `tokens.pending/`, which
//! the node imports at start and whenever it meets a token it does not know.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{Batch, Store, StoreError, Table};

/// What a token may do. Ordered: a higher role can do all a lower one can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Queries and subscriptions.
    Viewer,
    /// Also agent and task mutations.
    Operator,
    /// Everything.
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

#[derive(Debug, Serialize, Deserialize)]
struct TokenRecord {
    role: Role,
    created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

const PENDING_DIR: &str = "tokens.pending";
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

pub fn hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("trp_{hex}")
}

fn record(role: Role) -> Result<Vec<u8>, StoreError> {
    crate::codec::encode(&TokenRecord {
        role,
        created_at: crate::clock::now(),
    })
}

/// The role of `token`, if the store knows it.
pub async fn lookup(store: &Store, token: &str) -> Result<Option<Role>, StoreError> {
    match store.get(Table::Tokens, &hash(token)).await? {
        Some(bytes) => Ok(Some(crate::codec::decode::<TokenRecord>(&bytes)?.role)),
        None => Ok(None),
    }
}

/// Creates a token in a running node's store.
pub async fn create(store: &Store, role: Role) -> Result<String, StoreError> {
    let token = generate();
    store
        .write(Batch::new().put(Table::Tokens, hash(&token), record(role)?))
        .await?;
    Ok(token)
}

/// Creates a token for the node whose data dir is `data_dir`, running or not.
pub async fn create_offline(data_dir: &Path, role: Role) -> Result<String, TokenError> {
    std::fs::create_dir_all(data_dir).map_err(|source| TokenError::Io {
        path: data_dir.to_path_buf(),
        source,
    })?;
    match Store::open(&data_dir.join("troupe.redb")) {
        Ok(store) => Ok(create(&store, role).await?),
        Err(StoreError::Locked) => {
            let token = generate();
            let dir = data_dir.join(PENDING_DIR);
            let path = dir.join(hash(&token));
            std::fs::create_dir_all(&dir)
                .and_then(|_| write_private(&path, role.as_str()))
                .map_err(|source| TokenError::Io { path, source })?;
            Ok(token)
        }
        Err(e) => Err(e.into()),
    }
}

/// Moves hashes left by `troupe token create` into the store; returns how many.
pub async fn import_pending(store: &Store, data_dir: &Path) -> Result<usize, TokenError> {
    let dir = data_dir.join(PENDING_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(0);
    };
    let mut batch = Batch::new();
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let role = std::fs::read_to_string(&path).ok().and_then(|s| Role::parse(&s));
        match role {
            Some(role) if name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit()) => {
                batch = batch.put(Table::Tokens, name, record(role)?);
                files.push(path);
            }
            _ => tracing::warn!(path = %path.display(), "ignoring malformed pending token"),
        }
    }
    if files.is_empty() {
        return Ok(0);
    }
    store.write(batch).await?;
    for f in &files {
        let _ = std::fs::remove_file(f);
    }
    Ok(files.len())
}

/// Makes sure the admin token in `<data_dir>/admin.token` works, creating it on first start.
/// Returns the file's path.
pub async fn ensure_admin_token(store: &Store, data_dir: &Path) -> Result<PathBuf, TokenError> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim();
        if !existing.is_empty() {
            if lookup(store, existing).await?.is_none() {
                // The file outlived its store (a wiped database): keep the operator's token.
                store
                    .write(Batch::new().put(Table::Tokens, hash(existing), record(Role::Admin)?))
                    .await?;
            }
            return Ok(path);
        }
    }
    let token = create(store, Role::Admin).await?;
    write_private(&path, &token).map_err(|source| TokenError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Writes a file only its owner can read.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_resolve_to_their_role_and_unknown_ones_to_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let t = create(&store, Role::Operator).await.unwrap();
        assert_eq!(lookup(&store, &t).await.unwrap(), Some(Role::Operator));
        assert_eq!(lookup(&store, "trp_nope").await.unwrap(), None);
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
    }

    #[tokio::test]
    async fn admin_token_is_created_once_and_only_its_hash_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let path = ensure_admin_token(&store, dir.path()).await.unwrap();
        let token = std::fs::read_to_string(&path).unwrap().trim().to_owned();
        ensure_admin_token(&store, dir.path()).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), token);
        assert_eq!(lookup(&store, &token).await.unwrap(), Some(Role::Admin));
        assert!(store.get(Table::Tokens, &token).await.unwrap().is_none());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[tokio::test]
    async fn tokens_created_while_the_store_is_locked_are_imported() {
        let dir = tempfile::tempdir().unwrap();
        let pending = dir.path().join(PENDING_DIR);
        std::fs::create_dir_all(&pending).unwrap();
        let token = generate();
        write_private(&pending.join(hash(&token)), "viewer").unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        assert_eq!(import_pending(&store, dir.path()).await.unwrap(), 1);
        assert_eq!(lookup(&store, &token).await.unwrap(), Some(Role::Viewer));
        assert!(std::fs::read_dir(&pending).unwrap().next().is_none());
    }
}

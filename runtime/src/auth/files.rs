//! The files tokens live in besides the store: the admin token, tokens created while a node
//! held the store, and owner-only writes. Every blocking file call runs off the async threads.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{hash, Role, TokenError, TokenInfo, TOKENS};
use crate::store::{Batch, Store};

const PENDING_DIR: &str = "tokens.pending";
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Creates a token for the node whose data dir is `data_dir`, running or not: its record
/// goes into `tokens.pending/`, which the node imports at start and whenever it meets a token
/// it does not know. The store is never opened here: opened by this command, a fresh data
/// dir's store would be made under another name than the node's, and a stopped member's
/// store would start its Raft core alone, raising its term and waiting for a majority.
pub async fn create_offline(data_dir: &Path, role: Role, name: &str) -> Result<String, TokenError> {
    private_dir(data_dir).map_err(|source| TokenError::Io {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let name = super::validate_name(name)?;
    let token = super::generate();
    let info = TokenInfo::new(name, role, None);
    let dir = data_dir.join(PENDING_DIR);
    let path = dir.join(hash(&token));
    let record = crate::codec::encode(&info)?;
    private_dir(&dir)
        .and_then(|_| write_private_bytes(&path, &record))
        .map_err(|source| TokenError::Io { path, source })?;
    Ok(token)
}

/// Makes `dir` (and what is missing above it) readable by its owner only, as the whole
/// data dir is.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Moves records left by `troupe token create` into the store; returns how many.
pub(super) async fn import_pending(store: &Store, data_dir: &Path) -> Result<usize, TokenError> {
    let dir = data_dir.join(PENDING_DIR);
    let found = tokio::task::spawn_blocking(move || read_pending(&dir))
        .await
        .map_err(|e| TokenError::Invalid(format!("reading pending tokens failed: {e}")))?;
    if found.is_empty() {
        return Ok(0);
    }
    let mut batch = Batch::new();
    for (hash, info, _) in &found {
        batch = batch.put(TOKENS, hash.clone(), crate::codec::encode(info)?);
    }
    store.write(batch).await?;
    let files: Vec<PathBuf> = found.into_iter().map(|(_, _, path)| path).collect();
    let count = files.len();
    let _ = tokio::task::spawn_blocking(move || {
        for f in &files {
            let _ = std::fs::remove_file(f);
        }
    })
    .await;
    Ok(count)
}

/// The well-formed pending records: (hash, record, file).
fn read_pending(dir: &Path) -> Vec<(String, TokenInfo, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let info = std::fs::read(&path).ok().and_then(|b| decode_pending(&b));
        match info {
            Some(info) if name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit()) => {
                out.push((name, info, path))
            }
            _ => tracing::warn!(path = %path.display(), "ignoring malformed pending token"),
        }
    }
    out
}

/// A pending record, or the bare role name older CLIs wrote.
fn decode_pending(bytes: &[u8]) -> Option<TokenInfo> {
    if let Ok(info) = crate::codec::decode::<TokenInfo>(bytes) {
        return Some(info);
    }
    let role = Role::parse(std::str::from_utf8(bytes).ok()?)?;
    Some(TokenInfo::new("cli".into(), role, None))
}

pub(super) async fn read_trimmed(path: &Path) -> Option<String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned()))
        .await
        .ok()
        .flatten()
}

/// [`write_private`] off the async threads.
pub async fn write_private_async(path: PathBuf, contents: String) -> Result<(), TokenError> {
    let target = path.clone();
    tokio::task::spawn_blocking(move || write_private(&target, &contents))
        .await
        .map_err(|e| TokenError::Invalid(format!("writing {} failed: {e}", path.display())))?
        .map_err(|source| TokenError::Io { path, source })
}

/// Writes a text file only its owner can read (a line, then fsync, then an atomic rename).
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    write_private_bytes(path, format!("{contents}\n").as_bytes())
}

/// Writes a file only its owner can read: its bytes, then fsync, then an atomic rename from
/// `<path>.tmp` (a crash leaves the whole file or none).
pub(crate) fn write_private_bytes(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

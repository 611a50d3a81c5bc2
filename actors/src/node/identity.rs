//! What a node is, read or made at its start: its private data dir, the store's format, its
//! stable id, its cluster cookie, and the facts it keeps under its own name in the replicated
//! `meta` table.

use std::path::Path;

use troupe_runtime::auth::{self, TOKENS};
use troupe_runtime::config::Config;
use troupe_runtime::store::{Batch, Store, StoreError, META};

use super::StartNodeError;
use crate::tables::{AGENTS, TASKS};

/// The layout of the store this release writes.
const FORMAT: &str = "4";

/// The data dir holds the cookie, the tokens' hashes and every payload: its owner only.
pub(super) fn private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// Refuses a store written by an older release (its records would not decode), and marks a
/// new one with this release's format.
pub(super) async fn check_format(store: &Store, data_dir: &Path) -> Result<(), StartNodeError> {
    let (format, used) = store
        .view(|v| {
            let records = v.len(AGENTS)? + v.len(TASKS)? + v.len(TOKENS)?;
            Ok((v.get(META, "format")?, records > 0 || v.last_seq()? > 0))
        })
        .await?;
    match format {
        Some(f) if f == FORMAT.as_bytes() => Ok(()),
        Some(f) => Err(StartNodeError::Format {
            path: data_dir.to_path_buf(),
            message: format!(
                "written in store format {}, this release reads format {FORMAT}",
                String::from_utf8_lossy(&f)
            ),
        }),
        None if used => Err(StartNodeError::Format {
            path: data_dir.to_path_buf(),
            message: "written by an older Troupe release (store format 1); start this release with an empty data dir"
                .into(),
        }),
        None => Ok(store
            .write(Batch::new().put(META, "format", FORMAT.as_bytes().to_vec()))
            .await
            .map(|_| ())?),
    }
}

/// The node's own key in the replicated `meta` table: every member keeps its facts there
/// under its name (a store of a single node from an earlier release kept them unnamed).
pub(super) fn own_key(what: &str, node: &str) -> String {
    format!("{what}@{node}")
}

/// Reads a fact of this node from `meta`: its named key, else the unnamed one an earlier
/// release wrote when this node was its store's only member.
pub(super) async fn own_fact(store: &Store, what: &str, node: &str) -> Result<Option<Vec<u8>>, StoreError> {
    if let Some(bytes) = store.get(META, &own_key(what, node)).await? {
        return Ok(Some(bytes));
    }
    let alone = store.status().members.len() <= 1;
    if alone {
        return store.get(META, what).await;
    }
    Ok(None)
}

/// The node's stable id, made on first start.
pub(super) async fn node_id(store: &Store, node: &str) -> Result<String, StoreError> {
    if let Some(bytes) = own_fact(store, "node_id", node).await? {
        return Ok(String::from_utf8_lossy(&bytes).into_owned());
    }
    let id = uuid::Uuid::now_v7().to_string();
    store
        .write(Batch::new().put(META, own_key("node_id", node), id.as_bytes().to_vec()))
        .await?;
    Ok(id)
}

/// The cluster cookie: from the cookie file, else `TROUPE_COOKIE`, else one kept in the data dir.
pub(super) fn resolve_cookie(config: &Config) -> Result<String, StartNodeError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| StartNodeError::Cookie(format!("{}: {e}", path.display())))
    };
    if let Some(path) = &config.cookie_file {
        return read(path);
    }
    if let Ok(cookie) = std::env::var("TROUPE_COOKIE") {
        if !cookie.trim().is_empty() {
            return Ok(cookie.trim().to_owned());
        }
    }
    let path = config.data_dir.join("cookie");
    if path.exists() {
        return read(&path);
    }
    let cookie = uuid::Uuid::new_v4().simple().to_string();
    auth::write_private(&path, &cookie).map_err(|e| StartNodeError::Cookie(e.to_string()))?;
    Ok(cookie)
}

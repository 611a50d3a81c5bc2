//! The store's database files: opened (or created) readable by their owner only, with the
//! page cache they are given, a repair of one left open said in the log as it goes.

use std::path::Path;
use std::sync::Arc;

use redb::Database;

use super::StoreError;

/// The page cache a store's tables get unless told otherwise (`store_cache_mb`): redb's own
/// default is 1 GiB per database, which a node filled under load (RSS 727–827 MB on each of
/// three nodes after a load run).
pub const DEFAULT_CACHE_BYTES: usize = 128 << 20;

/// Opens (or creates) the database file at `path`, readable by its owner only, with
/// `cache_bytes` of page cache. A file its last process left open is repaired as it opens
/// (every page read and checked: seconds for a file of hundreds of megabytes), which the
/// node says as it begins and as it goes, where the start was silent meanwhile.
pub(crate) fn create(path: &Path, cache_bytes: usize) -> Result<Arc<Database>, StoreError> {
    let shown = path.display().to_string();
    let repair = move |session: &mut redb::RepairSession| match session.progress() {
        0.0 => tracing::warn!(
            file = %shown,
            "the store's file was not closed when its process ended (it was killed or crashed): repairing it, which reads every page"
        ),
        done => tracing::info!(file = %shown, done = format!("{:.0} %", done * 100.0), "repairing the store's file"),
    };
    let db = match Database::builder()
        .set_cache_size(cache_bytes)
        .set_repair_callback(repair)
        .create(path)
    {
        Ok(db) => Arc::new(db),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::Locked),
        Err(e) => return Err(StoreError::db(e)),
    };
    restrict(path)?;
    Ok(db)
}

/// The database file holds every secret's hash and every payload: its owner only.
fn restrict(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| StoreError::Database(format!("cannot restrict {}: {e}", path.display())))
}

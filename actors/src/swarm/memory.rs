//! A swarm's memory: a key-value namespace per swarm in the store, with versions for
//! compare-and-set, an optional time to live, and a size bound. Each change is an event on
//! the swarm. Writers of one swarm take its memory's lock ([`super::Locks::memory`]), so a
//! compare-and-set is atomic. What a request may do to it is in `access.rs`.

mod access;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{Batch, Store, StoreError};

use crate::agent::protocol::MemoryOp;
use crate::error::ApiError;
use crate::tables::{SWARMS, SWARM_MEMORY};

/// One key's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    #[serde(with = "troupe_runtime::codec::json_text")]
    pub value: Value,
    /// 1 when first set, one more at each set.
    pub version: u64,
    pub expires_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl Entry {
    fn live(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }

    fn size(&self) -> u64 {
        (self.key.len() + self.value.to_string().len()) as u64
    }
}

/// A write to a key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Write {
    Set {
        #[serde(with = "troupe_runtime::codec::json_text")]
        value: Value,
        ttl_ms: Option<u64>,
    },
    Delete,
}

/// What an agent asks of its swarm's memory.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Get {
        key: String,
    },
    List {
        prefix: String,
    },
    Write {
        key: String,
        write: Write,
        expect: Option<u64>,
    },
}

/// A process agent's `memory` line (its wire shape is the agent protocol's).
impl From<MemoryOp> for Op {
    fn from(line: MemoryOp) -> Op {
        match line {
            MemoryOp::Get { key } => Op::Get { key },
            MemoryOp::List { prefix } => Op::List { prefix },
            MemoryOp::Set {
                key,
                value,
                ttl_ms,
                expect_version,
            } => Op::Write {
                key,
                write: Write::Set { value, ttl_ms },
                expect: expect_version,
            },
            MemoryOp::Delete { key, expect_version } => Op::Write {
                key,
                write: Write::Delete,
                expect: expect_version,
            },
        }
    }
}

impl Entry {
    /// As agents and clients see it.
    pub fn to_json(&self) -> Value {
        json!({ "key": self.key, "value": self.value, "version": self.version, "expiresAt": self.expires_at })
    }
}

fn row(swarm: &str, key: &str) -> String {
    format!("{swarm}/{key}")
}

/// The longest time to live a key may have: ten years. Longer is refused (INVALID_INPUT)
/// rather than clamped, so a client never believes a key lives longer than it will.
pub const MAX_TTL_MS: u64 = 10 * 365 * 24 * 60 * 60 * 1000;

/// When a key set now with `ttl_ms` expires.
fn expiry(now: DateTime<Utc>, ttl_ms: u64) -> Result<DateTime<Utc>, ApiError> {
    let refused = || ApiError::invalid(format!("ttlMs must be at most {MAX_TTL_MS} (ten years), not {ttl_ms}"));
    if ttl_ms > MAX_TTL_MS {
        return Err(refused());
    }
    let ttl = chrono::TimeDelta::try_milliseconds(ttl_ms as i64).ok_or_else(refused)?;
    now.checked_add_signed(ttl).ok_or_else(refused)
}

pub fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > 256 || key.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "a memory key must be 1-256 characters without control characters",
        ));
    }
    Ok(())
}

/// The key's live entry, read in one view with the swarm's record: NOT_FOUND for no such
/// swarm.
pub async fn get(store: &Store, swarm: &str, key: &str) -> Result<Option<Entry>, ApiError> {
    let row = row(swarm, key);
    // Two keys: read here, not on a blocking thread.
    let (swarm_exists, bytes) =
        store.view_now(|v| Ok((v.get(SWARMS, swarm)?.is_some(), v.get(SWARM_MEMORY, &row)?)))?;
    if !swarm_exists {
        return Err(ApiError::NotFound(format!("no swarm {swarm}")));
    }
    live(bytes)
}

/// A stored entry, unless it expired.
fn live(bytes: Option<Vec<u8>>) -> Result<Option<Entry>, ApiError> {
    let entry: Option<Entry> = bytes.map(|b| troupe_runtime::codec::decode(&b)).transpose()?;
    let now = troupe_runtime::clock::now();
    Ok(entry.filter(|e| e.live(now)))
}

/// The entries whose keys start with `prefix` that `keep` picks, in key order, at most
/// `first`.
async fn scan(
    store: &Store,
    swarm: &str,
    prefix: &str,
    first: usize,
    keep: impl Fn(&Entry) -> bool + Send + 'static,
) -> Result<Vec<Entry>, ApiError> {
    let start = row(swarm, prefix);
    Ok(store
        .view(move |v| {
            let mut out = Vec::new();
            v.scan_prefix(SWARM_MEMORY, &start, |_, bytes| {
                let e: Entry = troupe_runtime::codec::decode(bytes)?;
                if keep(&e) {
                    out.push(e);
                }
                Ok(out.len() < first)
            })?;
            Ok(out)
        })
        .await?)
}

/// The live entries whose keys start with `prefix`, in key order, at most `first`.
pub async fn list(store: &Store, swarm: &str, prefix: &str, first: usize) -> Result<Vec<Entry>, ApiError> {
    let now = troupe_runtime::clock::now();
    scan(store, swarm, prefix, first, move |e| e.live(now)).await
}

/// Bytes the swarm's live entries hold, leaving out `except`.
async fn used(store: &Store, swarm: &str, except: &str) -> Result<u64, ApiError> {
    let all = list(store, swarm, "", usize::MAX).await?;
    Ok(all.iter().filter(|e| e.key != except).map(Entry::size).sum())
}

/// Applies a write to a key, if its live version is `expect` (when given; 0 means the key
/// must not exist). Answers the entry as it is now (`None` once deleted). Hold the swarm's
/// lock.
///
/// The write is conditioned on the key's row as it was read, checked where the log entry is
/// applied: a node that read a stale replica (restarted, not yet caught up) must not set a
/// version the log already holds. When the row changed meanwhile, the write is decided again
/// on what the cluster committed.
pub async fn write(
    store: &Store,
    swarm: &str,
    key: &str,
    write: Write,
    expect: Option<u64>,
    limit: u64,
) -> Result<Option<Entry>, ApiError> {
    check_key(key)?;
    let mut tries = 0;
    loop {
        let read = store.get(SWARM_MEMORY, &row(swarm, key)).await?;
        let (batch, outcome) = decide(store, swarm, key, &write, expect, limit, read).await?;
        match store.write(batch).await {
            Ok(_) => return Ok(outcome),
            Err(StoreError::Stale(_)) if tries < STALE_TRIES => {
                tries += 1;
                store.linearize().await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// How many times a write whose row changed after it was read is decided again.
const STALE_TRIES: usize = 3;

/// The batch that applies `write` to the key whose row was `read` (its stored bytes), on the
/// condition that the row still holds them; and the entry it leaves.
async fn decide(
    store: &Store,
    swarm: &str,
    key: &str,
    write: &Write,
    expect: Option<u64>,
    limit: u64,
    read: Option<Vec<u8>>,
) -> Result<(Batch, Option<Entry>), ApiError> {
    let now = troupe_runtime::clock::now();
    let current = read
        .as_deref()
        .map(troupe_runtime::codec::decode::<Entry>)
        .transpose()?
        .filter(|e| e.live(now));
    let version = current.as_ref().map_or(0, |e| e.version);
    if let Some(expected) = expect {
        if expected != version {
            return Err(ApiError::Conflict(format!(
                "memory key {key:?} is at version {version}, not {expected}"
            )));
        }
    }
    let batch = Batch::new().require(SWARM_MEMORY, row(swarm, key), read);
    match write {
        Write::Set { value, ttl_ms } => {
            let entry = Entry {
                key: key.to_owned(),
                value: value.clone(),
                version: version + 1,
                expires_at: ttl_ms.map(|ms| expiry(now, ms)).transpose()?,
                updated_at: now,
            };
            let total = used(store, swarm, key).await? + entry.size();
            if total > limit {
                return Err(ApiError::invalid(format!(
                    "the swarm's memory would hold {total} bytes, above its limit of {limit}"
                )));
            }
            let data = json!({ "key": key, "version": entry.version, "expiresAt": entry.expires_at });
            let batch = batch
                .put(SWARM_MEMORY, row(swarm, key), troupe_runtime::codec::encode(&entry)?)
                .event(NewEvent::new("SWARM_MEMORY_SET", Some(swarm.to_owned()), data));
            Ok((batch, Some(entry)))
        }
        Write::Delete => {
            if current.is_none() {
                return Err(ApiError::NotFound(format!("no memory key {key:?}")));
            }
            let data = json!({ "key": key, "version": version });
            let batch = batch.delete(SWARM_MEMORY, row(swarm, key)).event(NewEvent::new(
                "SWARM_MEMORY_DELETED",
                Some(swarm.to_owned()),
                data,
            ));
            Ok((batch, None))
        }
    }
}

/// Removes the swarm's expired entries, each an event; how many.
pub async fn sweep(store: &Store, swarm: &str) -> Result<usize, ApiError> {
    let now = troupe_runtime::clock::now();
    let expired = scan(store, swarm, "", usize::MAX, move |e| !e.live(now)).await?;
    if expired.is_empty() {
        return Ok(0);
    }
    let mut batch = Batch::new();
    for e in &expired {
        batch = batch.delete(SWARM_MEMORY, row(swarm, &e.key)).event(NewEvent::new(
            "SWARM_MEMORY_EXPIRED",
            Some(swarm.to_owned()),
            json!({ "key": e.key, "version": e.version }),
        ));
    }
    store.write(batch).await?;
    Ok(expired.len())
}

/// Adds the deletion of all the swarm's memory to `batch`.
pub async fn delete_all(store: &Store, swarm: &str, mut batch: Batch) -> Result<Batch, ApiError> {
    for e in scan(store, swarm, "", usize::MAX, |_| true).await? {
        batch = batch.delete(SWARM_MEMORY, row(swarm, &e.key));
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Makes the store hold swarm `s`'s record.
    async fn with_swarm(store: &Store) {
        store
            .write(Batch::new().put(SWARMS, "s", b"spec".to_vec()))
            .await
            .expect("the swarm's record");
    }

    #[tokio::test]
    async fn a_time_to_live_beyond_ten_years_is_refused_not_a_panic() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(&dir.path().join("store.redb")).expect("a store");
        with_swarm(&store).await;
        for ttl in [u64::MAX, i64::MAX as u64, MAX_TTL_MS + 1] {
            let set = Write::Set {
                value: json!(1),
                ttl_ms: Some(ttl),
            };
            let refused = write(&store, "s", "k", set, None, 1 << 20).await;
            assert!(matches!(refused, Err(ApiError::InvalidInput(_))), "{ttl}: {refused:?}");
        }
        assert_eq!(get(&store, "s", "k").await.expect("a read"), None, "nothing written");
        let set = Write::Set {
            value: json!(1),
            ttl_ms: Some(MAX_TTL_MS),
        };
        let entry = write(&store, "s", "k", set, None, 1 << 20).await.expect("ten years");
        assert!(entry.and_then(|e| e.expires_at).is_some());
    }

    #[tokio::test]
    async fn a_swarms_key_is_read_with_its_swarm_and_no_swarm_is_not_found() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(&dir.path().join("store.redb")).expect("a store");
        let set = Write::Set {
            value: json!(7),
            ttl_ms: None,
        };
        write(&store, "s", "k", set, None, 1 << 20).await.expect("set");
        let missing = get(&store, "s", "k").await;
        assert!(matches!(missing, Err(ApiError::NotFound(_))), "{missing:?}");
        with_swarm(&store).await;
        let entry = get(&store, "s", "k").await.expect("a read").expect("an entry");
        assert_eq!((entry.version, entry.value), (1, json!(7)));
        assert_eq!(get(&store, "s", "other").await.expect("a read"), None);
    }

    /// A `memory` line as the swarm takes it.
    fn from_line(line: &Value) -> Result<Op, String> {
        let op: MemoryOp = serde_json::from_value(line.clone()).map_err(|e| e.to_string())?;
        Ok(op.into())
    }

    #[tokio::test]
    async fn a_write_decided_on_a_row_that_changed_before_it_applied_is_refused_and_decided_again() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(&dir.path().join("store.redb")).expect("a store");
        with_swarm(&store).await;
        let set = |v: i64| Write::Set {
            value: json!(v),
            ttl_ms: None,
        };
        write(&store, "s", "k", set(1), Some(0), 1 << 20)
            .await
            .expect("version 1");
        // Decided on version 1 (as a replica that had not caught up would), then the row
        // moves on to version 2 before the decision is applied.
        let read = store.get(SWARM_MEMORY, &row("s", "k")).await.expect("a read");
        let (late, _) = decide(&store, "s", "k", &set(3), Some(1), 1 << 20, read)
            .await
            .expect("decided");
        write(&store, "s", "k", set(2), Some(1), 1 << 20)
            .await
            .expect("version 2");
        let refused = store.write(late).await;
        assert!(matches!(refused, Err(StoreError::Stale(_))), "{refused:?}");
        let now = get(&store, "s", "k").await.expect("a read").expect("an entry");
        assert_eq!(
            (now.version, now.value.clone()),
            (2, json!(2)),
            "version 2 is not set twice"
        );
        // A write without a version is decided again on what was committed.
        let again = write(&store, "s", "k", set(4), None, 1 << 20).await.expect("set");
        assert_eq!(again.map(|e| e.version), Some(3));
    }

    #[test]
    fn a_memory_line_with_a_ttl_that_is_no_number_is_refused() {
        let line = json!({ "op": "set", "key": "k", "value": 1, "ttlMs": -5 });
        assert!(from_line(&line).is_err());
        let line = json!({ "op": "set", "key": "k", "value": 1, "ttlMs": 60000 });
        assert!(matches!(
            from_line(&line),
            Ok(Op::Write {
                write: Write::Set {
                    ttl_ms: Some(60000),
                    ..
                },
                ..
            })
        ));
    }
}

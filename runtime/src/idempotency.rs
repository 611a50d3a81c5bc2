//! Idempotency keys: a mutation sent twice with the same key gets the same answer, and its
//! effect happens once, for as long as the key is kept (the window).
//!
//! ```text
//!  claim(scope, key, request) ──▶ kept answer for this key? ──yes──▶ Replay(answer)
//!                 │ (per-key lock held)                 └─ other request ──▶ Mismatch
//!                 └──no──▶ Fresh(guard) ─▶ do the work ─▶ guard.record(batch, answer)
//!                                                         (committed with the work)
//! ```
//!
//! A concurrent duplicate on this node waits on the per-key lock and then finds the answer.
//! One on another node of the cluster holds its own lock, so the key is also claimed in the
//! log: the answer is recorded on condition that the key still holds what the claim read
//! ([`crate::store::Op::Require`]). Of two requests racing on two nodes, the state machine
//! applies the first and refuses the other's whole batch as stale on every member alike:
//! its effect does not happen, and a claim of the key made again finds the first answer.
//! Only answers of successful mutations are kept: a
//! request that failed may be retried with its key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{Batch, Store, StoreError, Table};

pub const IDEMPOTENCY: Table = Table::new("idempotency");

/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 128;

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    fingerprint: String,
    answer: Vec<u8>,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    #[error("idempotency key {0:?} was used for a different request")]
    Mismatch(String),
    #[error("an idempotency key must be 1-{MAX_KEY_LEN} characters")]
    BadKey,
    #[error(transparent)]
    Store(#[from] StoreError),
}

type KeyLock = tokio::sync::Mutex<()>;

/// The node's kept answers.
#[derive(Clone)]
pub struct Idempotency {
    store: Store,
    window: Duration,
    locks: Arc<Mutex<HashMap<String, Weak<KeyLock>>>>,
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency").field("window", &self.window).finish()
    }
}

/// What a claim found.
pub enum Claim<T> {
    /// The key was used before for the same request: its answer.
    Replay(T),
    /// First use: do the work, then record the answer with the guard.
    Fresh(Guard),
}

/// Held while a keyed mutation runs; duplicates wait for it.
pub struct Guard {
    key: String,
    fingerprint: String,
    expires_at: DateTime<Utc>,
    /// What the key held when it was claimed (an expired answer, or nothing): the answer is
    /// recorded only if it still does.
    prior: Option<Vec<u8>>,
    _lock: tokio::sync::OwnedMutexGuard<()>,
}

impl Guard {
    /// Adds the answer to the batch that carries the mutation's effect, so both are durable
    /// together, and makes the batch conditional on the key not having been claimed
    /// meanwhile by a request on another node (the batch then fails [`StoreError::Stale`]).
    pub fn record<T: Serialize>(&self, batch: &mut Batch, answer: &T) -> Result<(), StoreError> {
        batch.push(crate::store::Op::Require {
            table: IDEMPOTENCY,
            key: self.key.clone(),
            value: self.prior.clone(),
        });
        let entry = Entry {
            fingerprint: self.fingerprint.clone(),
            answer: crate::codec::encode(answer)?,
            expires_at: self.expires_at,
        };
        batch.push(crate::store::Op::Put {
            table: IDEMPOTENCY,
            key: self.key.clone(),
            value: crate::codec::encode(&entry)?,
        });
        Ok(())
    }

    /// Keeps the answer of a mutation whose effect was written elsewhere.
    pub async fn save<T: Serialize>(self, store: &Store, answer: &T) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        self.record(&mut batch, answer)?;
        store.write(batch).await.map(|_| ())
    }
}

impl Idempotency {
    pub fn new(store: Store, window: Duration) -> Self {
        Self {
            store,
            window,
            locks: Arc::default(),
        }
    }

    /// The answer kept under `key` within `scope`, whatever request it answered; `None` when
    /// none is kept (or it expired). For a caller that takes a reused key for the same
    /// request, as a webhook's redelivery after the hook's template changed.
    pub async fn kept<T: DeserializeOwned>(&self, scope: &str, key: &str) -> Result<Option<T>, StoreError> {
        let Some(bytes) = self.store.get(IDEMPOTENCY, &format!("{scope}/{key}")).await? else {
            return Ok(None);
        };
        let entry: Entry = crate::codec::decode(&bytes)?;
        if entry.expires_at <= crate::clock::now() {
            return Ok(None);
        }
        crate::codec::decode(&entry.answer).map(Some)
    }

    /// Claims `key` within `scope` (the mutation's name) for `request`.
    pub async fn claim<T: DeserializeOwned>(
        &self,
        scope: &str,
        key: &str,
        request: &impl Serialize,
    ) -> Result<Claim<T>, IdempotencyError> {
        if key.is_empty() || key.chars().count() > MAX_KEY_LEN {
            return Err(IdempotencyError::BadKey);
        }
        let full = format!("{scope}/{key}");
        let fingerprint = fingerprint(request)?;
        let lock = self.lock_for(&full).lock_owned().await;
        let prior = self.store.get(IDEMPOTENCY, &full).await?;
        if let Some(bytes) = &prior {
            let entry: Entry = crate::codec::decode(bytes)?;
            if entry.expires_at > crate::clock::now() {
                if entry.fingerprint != fingerprint {
                    return Err(IdempotencyError::Mismatch(key.to_owned()));
                }
                return Ok(Claim::Replay(crate::codec::decode(&entry.answer)?));
            }
        }
        let window = chrono::TimeDelta::from_std(self.window).unwrap_or(chrono::TimeDelta::MAX);
        Ok(Claim::Fresh(Guard {
            key: full,
            fingerprint,
            expires_at: crate::clock::now() + window,
            prior,
            _lock: lock,
        }))
    }

    fn lock_for(&self, key: &str) -> Arc<KeyLock> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lock) = locks.get(key).and_then(Weak::upgrade) {
            return lock;
        }
        locks.retain(|_, l| l.strong_count() > 0);
        let lock = Arc::new(KeyLock::new(()));
        locks.insert(key.to_owned(), Arc::downgrade(&lock));
        lock
    }

    /// Deletes the answers whose window has passed; returns how many.
    pub async fn purge_expired(&self) -> Result<usize, StoreError> {
        let now = crate::clock::now();
        let expired: Vec<String> = self
            .store
            .view(move |v| {
                let mut out = Vec::new();
                v.scan(IDEMPOTENCY, None, |k, bytes| {
                    if crate::codec::decode::<Entry>(bytes).map_or(true, |e| e.expires_at <= now) {
                        out.push(k.to_owned());
                    }
                    Ok(true)
                })?;
                Ok(out)
            })
            .await?;
        if expired.is_empty() {
            return Ok(0);
        }
        let mut batch = Batch::new();
        for key in &expired {
            batch = batch.delete(IDEMPOTENCY, key.clone());
        }
        self.store.write(batch).await?;
        Ok(expired.len())
    }
}

fn fingerprint(request: &impl Serialize) -> Result<String, StoreError> {
    let bytes = crate::codec::encode(request)?;
    Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn setup(window: Duration) -> (tempfile::TempDir, Store, Idempotency) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let idem = Idempotency::new(store.clone(), window);
        (dir, store, idem)
    }

    #[tokio::test]
    async fn the_same_key_and_request_replays_the_kept_answer() {
        let (_d, store, idem) = setup(Duration::from_secs(60)).await;
        let Claim::Fresh(guard) = idem.claim::<String>("submit", "k1", &"req").await.unwrap() else {
            panic!("first use must be fresh")
        };
        guard.save(&store, &"answer".to_string()).await.unwrap();
        match idem.claim::<String>("submit", "k1", &"req").await.unwrap() {
            Claim::Replay(a) => assert_eq!(a, "answer"),
            Claim::Fresh(_) => panic!("second use must replay"),
        }
        assert!(matches!(
            idem.claim::<String>("submit", "k1", &"other").await,
            Err(IdempotencyError::Mismatch(_))
        ));
        // Scopes are apart: the same key for another mutation is a first use.
        assert!(matches!(
            idem.claim::<String>("spawn", "k1", &"req").await,
            Ok(Claim::Fresh(_))
        ));
        assert!(matches!(
            idem.claim::<String>("spawn", "", &"req").await,
            Err(IdempotencyError::BadKey)
        ));
        // Counted in characters, as documented, not in bytes.
        assert!(matches!(
            idem.claim::<String>("spawn", &"é".repeat(128), &"req").await,
            Ok(Claim::Fresh(_))
        ));
        assert!(matches!(
            idem.claim::<String>("spawn", &"é".repeat(129), &"req").await,
            Err(IdempotencyError::BadKey)
        ));
    }

    #[tokio::test]
    async fn a_concurrent_duplicate_waits_for_the_first_and_gets_its_answer() {
        let (_d, store, idem) = setup(Duration::from_secs(60)).await;
        let Claim::Fresh(guard) = idem.claim::<u32>("s", "k", &1).await.unwrap() else {
            panic!()
        };
        let second = {
            let idem = idem.clone();
            tokio::spawn(async move { idem.claim::<u32>("s", "k", &1).await })
        };
        tokio::task::yield_now().await;
        assert!(!second.is_finished(), "the duplicate must wait for the first");
        guard.save(&store, &7u32).await.unwrap();
        assert!(matches!(second.await.unwrap().unwrap(), Claim::Replay(7)));
    }

    #[tokio::test]
    async fn of_two_claims_on_two_nodes_only_the_first_committed_takes_effect() {
        // Two nodes' Idempotency on one replicated store: each holds only its own key locks,
        // so both claims are fresh, as for two requests at the same instant on two nodes.
        let (_d, store, here) = setup(Duration::from_secs(60)).await;
        let there = Idempotency::new(store.clone(), Duration::from_secs(60));
        let Claim::Fresh(first) = here.claim::<String>("submit", "k", &"req").await.unwrap() else {
            panic!("fresh here")
        };
        let Claim::Fresh(second) = there.claim::<String>("submit", "k", &"req").await.unwrap() else {
            panic!("fresh there too")
        };
        let effect = |id: &str| Batch::new().put(Table::new("tasks"), id, b"queued".to_vec());
        let mut won = effect("task-1");
        first.record(&mut won, &"task-1".to_owned()).unwrap();
        store.write(won).await.unwrap();
        let mut lost = effect("task-2");
        second.record(&mut lost, &"task-2".to_owned()).unwrap();
        assert!(matches!(store.write(lost).await, Err(StoreError::Stale(_))));
        assert!(
            store.get(Table::new("tasks"), "task-2").await.unwrap().is_none(),
            "no effect"
        );
        drop(second);
        match there.claim::<String>("submit", "k", &"req").await.unwrap() {
            Claim::Replay(answer) => assert_eq!(answer, "task-1"),
            Claim::Fresh(_) => panic!("the claim made again must replay the first answer"),
        }
    }

    #[tokio::test]
    async fn answers_past_the_window_are_forgotten_and_purged() {
        let (_d, store, idem) = setup(Duration::from_millis(1)).await;
        let Claim::Fresh(guard) = idem.claim::<u32>("s", "k", &1).await.unwrap() else {
            panic!()
        };
        guard.save(&store, &7u32).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(matches!(
            idem.claim::<u32>("s", "k", &1).await.unwrap(),
            Claim::Fresh(_)
        ));
        assert_eq!(idem.purge_expired().await.unwrap(), 1);
        assert!(store.get(IDEMPOTENCY, "s/k").await.unwrap().is_none());
    }
}

//! The cluster's token key. A token Troupe mints carries a tag made with it: a node that
//! meets a token it does not know tells one the cluster may have minted a moment ago, worth
//! a linearizable read at the leader before it is refused, from one nobody minted, refused
//! at once. Unauthenticated traffic then costs the cluster nothing, whatever its shape.
//!
//! The key is replicated state (one row, written once, by whichever node needs it first,
//! on condition that no key exists yet), so every member holds the same key and it never
//! changes. Tokens minted before it existed stay valid: they are in the table, and a known
//! token needs no tag.

use std::sync::{Arc, OnceLock};

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::store::{Batch, Store, StoreError, Table};

pub(super) const TOKEN_KEY: Table = Table::new("token_key");
const ROW: &str = "key";
/// A token's secret: this many random bytes, then the tag.
const RANDOM: usize = 24;
const TAG: usize = 8;

/// The key once this node has read it (it never changes).
#[derive(Clone, Default)]
pub(super) struct Key(Arc<OnceLock<Vec<u8>>>);

impl Key {
    /// The key as this node's replica holds it; `None` until it is applied here.
    pub async fn known(&self, store: &Store) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(key) = self.0.get() {
            return Ok(Some(key.clone()));
        }
        let Some(key) = store.get(TOKEN_KEY, ROW).await? else {
            return Ok(None);
        };
        Ok(Some(self.0.get_or_init(|| key).clone()))
    }

    /// The key, written first when the cluster has none.
    pub async fn ensure(&self, store: &Store) -> Result<Vec<u8>, StoreError> {
        if let Some(key) = self.known(store).await? {
            return Ok(key);
        }
        let mut fresh = vec![0u8; 32];
        rand::rng().fill_bytes(&mut fresh);
        let first = Batch::new().require(TOKEN_KEY, ROW, None).put(TOKEN_KEY, ROW, fresh);
        match store.write(first).await {
            Ok(_) => {}
            // Another member wrote one first, or this node has not applied it yet.
            Err(StoreError::Stale(_)) => store.linearize().await?,
            Err(e) => return Err(e),
        }
        self.known(store)
            .await?
            .ok_or_else(|| StoreError::Unavailable("the cluster's token key is not applied here yet".into()))
    }
}

fn tag(key: &[u8], random: &[u8]) -> [u8; TAG] {
    let digest = Sha256::new()
        .chain_update(b"troupe token tag")
        .chain_update(key)
        .chain_update(random)
        .finalize();
    let mut tag = [0u8; TAG];
    tag.copy_from_slice(&digest[..TAG]);
    tag
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new token: `trp_` and 64 hex digits, as before, the last 16 of them its tag.
pub(super) fn mint(key: &[u8]) -> String {
    let mut random = [0u8; RANDOM];
    rand::rng().fill_bytes(&mut random);
    format!("trp_{}{}", hex(&random), hex(&tag(key, &random)))
}

/// Whether `token` was minted with `key`.
pub(super) fn vouched(key: &[u8], token: &str) -> bool {
    let Some(digits) = token.strip_prefix("trp_") else {
        return false;
    };
    if digits.len() != 2 * (RANDOM + TAG) || !digits.is_ascii() {
        return false;
    }
    let bytes: Option<Vec<u8>> = (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).ok())
        .collect();
    let Some(bytes) = bytes else {
        return false;
    };
    let (random, given) = bytes.split_at(RANDOM);
    tag(key, random) == given
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_is_vouched_for_by_its_key_alone() {
        let key = b"the cluster's key".to_vec();
        let token = mint(&key);
        assert!(super::super::looks_minted(&token), "{token}");
        assert!(vouched(&key, &token));
        assert!(!vouched(b"another cluster's key", &token));
        // The same shape, any other digits: a guess, not a token.
        let mut guessed = token.clone().into_bytes();
        let last = guessed.len() - 1;
        guessed[last] = if guessed[last] == b'0' { b'1' } else { b'0' };
        assert!(!vouched(&key, std::str::from_utf8(&guessed).unwrap()));
        assert!(!vouched(&key, "trp_short"));
        assert!(!vouched(&key, &format!("trp_{}", "é".repeat(32))));
    }
}

//! The cluster's message dead-letter queue, and replaying from it.

use super::mailbox::Mailboxes;
use super::{DeadMessage, Reply};
use crate::error::ApiError;
use crate::tables::MESSAGE_DEAD_LETTERS;

impl Mailboxes {
    /// The cluster's dead messages (every member's store holds them all), oldest first.
    pub async fn dead_letters(&self, first: usize) -> Result<Vec<DeadMessage>, ApiError> {
        let mut all = self
            .store()
            .view(move |v| {
                let mut out = Vec::new();
                v.scan(MESSAGE_DEAD_LETTERS, None, |_, bytes| {
                    out.push(troupe_runtime::codec::decode::<DeadMessage>(bytes)?);
                    Ok(out.len() < first)
                })?;
                Ok(out)
            })
            .await?;
        all.sort_by(|a, b| (a.at, &a.message.id).cmp(&(b.at, &b.message.id)));
        Ok(all)
    }

    /// The dead message `id` (every member's store holds every member's dead letters).
    pub async fn dead_letter(&self, id: &str) -> Result<DeadMessage, ApiError> {
        let bytes = self
            .store()
            .get(MESSAGE_DEAD_LETTERS, id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no dead message {id}")))?;
        Ok(troupe_runtime::codec::decode(&bytes)?)
    }

    /// Sends a dead message again. It stays in the queue until it is answered (the delivery
    /// that gets the answer takes it out), so a replay that fails loses nothing; a second replay
    /// of a message still being replayed is refused, so it is never delivered twice at once.
    pub async fn replay(&self, id: &str) -> Result<Reply, ApiError> {
        let dead = self.dead_letter(id).await?;
        let _claim = self.claim_replay(id)?;
        self.send(dead.message).await
    }
}

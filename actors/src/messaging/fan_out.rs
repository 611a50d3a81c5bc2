//! Publishing and broadcasting: one message queued for every agent of this node it is meant
//! for, side by side, so the store commits their mailbox entries as one group.

use serde::{Deserialize, Serialize};

use super::mailbox::Mailboxes;
use super::{Message, Publication, DEFAULT_TIMEOUT};
use crate::error::ApiError;

/// How a published or broadcast message fared on the agents it was meant for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOut {
    /// Queued in the agent's mailbox.
    pub queued: u32,
    /// Refused by a full mailbox (or not kept): put in the dead-letter queue instead.
    pub refused: u32,
}

impl std::ops::AddAssign for FanOut {
    fn add_assign(&mut self, other: Self) {
        self.queued += other.queued;
        self.refused += other.refused;
    }
}

impl Mailboxes {
    /// Queues a publication for each of this node's agents it is meant for, without waiting
    /// for replies (those that fail go to the dead-letter queue). One that a full mailbox
    /// refuses is dead-lettered at once and counted as refused, never as queued.
    pub async fn fan_out(&self, publication: &Publication) -> Result<FanOut, ApiError> {
        let Publication { payload, priority, .. } = publication;
        let priority = *priority;
        // Queued side by side, so the store commits their mailbox entries as one group.
        let queued = self
            .audience()
            .meant_for(publication)
            .into_iter()
            .filter(|id| self.holds(id))
            .map(|to| {
                let message = Message {
                    id: uuid::Uuid::now_v7().to_string(),
                    to,
                    from: None,
                    payload: payload.clone(),
                    priority,
                    timeout_ms: DEFAULT_TIMEOUT.as_millis() as u64,
                };
                async move {
                    match self.enqueue(message.clone()).await {
                        // Nobody waits for the reply: an unanswered one is dead-lettered by delivery.
                        Ok(_) => true,
                        Err(e) => {
                            self.bury(message, e.to_string()).await;
                            false
                        }
                    }
                }
            });
        let mut outcome = FanOut::default();
        for was_queued in futures::future::join_all(queued).await {
            if was_queued {
                outcome.queued += 1;
            } else {
                outcome.refused += 1;
            }
        }
        Ok(outcome)
    }

    /// The topic patterns the cluster's agents subscribe to, each with how many agents do,
    /// from this node's replica.
    pub async fn topics(&self) -> Result<Vec<(String, u32)>, ApiError> {
        Ok(self.audience().topics())
    }
}

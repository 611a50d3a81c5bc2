//! Reading the event log: pages after a cursor, of some kinds, about one entity, the
//! newest; each through an index when it can, and each waiting briefly for a cursor another
//! member handed out.

use std::time::Duration;

use tokio::sync::broadcast;

use super::{Store, StoreError, Window};
use crate::events::Event;

impl Store {
    /// Events with a sequence number above `after`, oldest first, at most `limit`. Fails with
    /// [`StoreError::Compacted`] when some of them were trimmed (a gap is never silent) and
    /// with [`StoreError::FutureCursor`] when `after` is past the newest event.
    pub async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.reach(after).await?;
        self.view(move |v| v.events_after(after, limit)).await
    }

    /// Waits, briefly, for this node to apply the event `seq` when it has not yet and other
    /// members exist: a cursor read on another member may be a little ahead of this one.
    /// Past [`CURSOR_CATCH_UP`], the read goes on and answers what it finds (a cursor past
    /// every member's log is then refused as before).
    async fn reach(&self, seq: u64) -> Result<(), StoreError> {
        if self.status().members.len() <= 1 {
            return Ok(());
        }
        self.reached(seq, CURSOR_CATCH_UP).await.map(drop)
    }

    /// Waits, for at most `within`, until this node has applied the event `seq` (made on
    /// any member); whether it has.
    pub async fn reached(&self, seq: u64, within: Duration) -> Result<bool, StoreError> {
        let mut live = self.live();
        if self.last_seq().await? >= seq {
            return Ok(true);
        }
        let reached = async {
            loop {
                match live.recv().await {
                    Ok(event) if event.seq >= seq => return,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if self.last_seq().await.is_ok_and(|last| last >= seq) {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        };
        let _ = tokio::time::timeout(within, reached).await;
        Ok(self.last_seq().await? >= seq)
    }

    /// Like [`Store::events_after`], only events of the given kinds, read through the kind
    /// index: the cost follows the events returned, not the size of the log.
    pub async fn events_of_kinds(
        &self,
        after: u64,
        kinds: Vec<String>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.reach(after).await?;
        self.view(move |v| v.events_of_kinds(after, &kinds, limit)).await
    }

    /// The newest `limit` events (only `kinds`, when given), oldest first.
    pub async fn last_events(&self, kinds: Option<Vec<String>>, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.view(move |v| v.last_events(kinds.as_deref(), limit)).await
    }

    /// At most `limit` events about one entity, `subject` (of `kinds` only, when given),
    /// read through the subject index, oldest first.
    pub async fn events_about(
        &self,
        subject: String,
        window: Window,
        kinds: Option<Vec<String>>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        if let Window::After(after) = window {
            self.reach(after).await?;
        }
        self.view(move |v| v.events_about(&subject, window, kinds.as_deref(), limit))
            .await
    }

    /// One page of a subscription's replay: the events after `after` (of `kinds` when
    /// given), and the newest seq of the same snapshot.
    pub async fn replay_page(
        &self,
        after: u64,
        kinds: Option<Vec<String>>,
        limit: usize,
    ) -> Result<(Vec<Event>, u64), StoreError> {
        self.reach(after).await?;
        self.view(move |v| {
            let page = match &kinds {
                Some(kinds) => v.events_of_kinds(after, kinds, limit)?,
                None => v.events_after(after, limit)?,
            };
            Ok((page, v.last_seq()?))
        })
        .await
    }

    /// The sequence number of the newest committed event (0 when there is none).
    pub async fn last_seq(&self) -> Result<u64, StoreError> {
        self.view(|v| v.last_seq()).await
    }
}

/// How long a read waits for this node to apply a cursor another member handed out.
const CURSOR_CATCH_UP: Duration = Duration::from_secs(3);

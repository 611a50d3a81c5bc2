//! The update subscriptions of one entity (`agentUpdates`, `taskUpdates`, `vmUpdates`,
//! `swarmUpdates`), written once: the entity now, then again after each change of it.
//!
//! ```text
//!  cursor ─▶ read (none: NOT_FOUND) ─▶ send ─▶ wait for a change ─▶ read ─┬─ changed: send
//!                                        ▲                                ├─ unchanged: wait
//!                                        └────────────────────────────────┘
//!  ends: after a last state (a finished task), when the entity is gone (or NOT_FOUND, per
//!  kind), or after an error (a read that could not be answered).
//! ```
//!
//! The cursor is taken before the first read, so no change falls between the two. A change
//! is one of the entity's events, which every member applies (see `changes_of`): no stream
//! polls, whichever node runs the entity.

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::StreamExt;
use troupe_actors::{Api, ApiError};

use crate::error::{coded, OrGql};

/// Reads an entity now: `None` once it is gone.
pub type Read<T> = fn(Api, String) -> BoxFuture<'static, Result<Option<T>, ApiError>>;

/// How one kind of entity is followed.
pub struct Follow<T, O> {
    /// Its name in "no <noun> <id>".
    pub noun: &'static str,
    pub read: Read<T>,
    /// Whether `now` differs from what was sent last in a way a subscriber cares about.
    pub changed: fn(&T, &T) -> bool,
    /// Whether nothing follows it (a terminal state).
    pub last: fn(&T) -> bool,
    /// Whether the entity going away is an error (NOT_FOUND) rather than the stream's end.
    pub gone_is_error: bool,
    /// What the subscriber gets.
    pub show: fn(T) -> O,
}

/// The stream of the entity `id`, as `how` says; NOT_FOUND if there is no such entity.
pub async fn follow<T, O>(
    api: &Api,
    id: &str,
    how: Follow<T, O>,
) -> async_graphql::Result<BoxStream<'static, async_graphql::Result<O>>>
where
    T: Clone + Send + 'static,
    O: Send + 'static,
{
    let after = api.last_seq().await.gql()?;
    let first = (how.read)(api.clone(), id.to_owned())
        .await
        .gql()?
        .ok_or_else(|| coded("NOT_FOUND", format!("no {} {id}", how.noun)))?;
    let changes = super::events::changes_of(api, id, after);
    let state = Following {
        api: api.clone(),
        id: id.to_owned(),
        how,
        sent: None,
        pending: Some(first),
        changes,
        over: false,
    };
    Ok(futures::stream::unfold(state, Following::next).boxed())
}

struct Following<T, O> {
    api: Api,
    id: String,
    how: Follow<T, O>,
    sent: Option<T>,
    pending: Option<T>,
    changes: BoxStream<'static, ()>,
    over: bool,
}

impl<T: Clone + Send + 'static, O: Send + 'static> Following<T, O> {
    async fn next(mut self) -> Option<(async_graphql::Result<O>, Self)> {
        if self.over || self.sent.as_ref().is_some_and(self.how.last) {
            return None;
        }
        loop {
            if let Some(now) = self.pending.take() {
                if self.sent.as_ref().is_none_or(|sent| (self.how.changed)(sent, &now)) {
                    self.sent = Some(now.clone());
                    return Some((Ok((self.how.show)(now)), self));
                }
            }
            self.changes.next().await?;
            match (self.how.read)(self.api.clone(), self.id.clone()).await {
                Ok(Some(now)) => self.pending = Some(now),
                Ok(None) if self.how.gone_is_error => {
                    self.over = true;
                    let gone = coded("NOT_FOUND", format!("{} {} is gone", self.how.noun, self.id));
                    return Some((Err(gone), self));
                }
                Ok(None) => return None,
                Err(e) => {
                    // The holder is unreachable: say so rather than end as if it finished.
                    self.over = true;
                    return Some((Err(crate::error::api(e)), self));
                }
            }
        }
    }
}

//! Subscriptions: replay from a cursor, then live.

use std::time::Duration;

use async_graphql::{Context, Subscription as GqlSubscription, ID};
use futures::{Stream, StreamExt};
use troupe_actors::task::TaskRecord;
use troupe_actors::Api;
use troupe_runtime::auth::Role;
use troupe_runtime::events::EventFilter;

use super::query::{cursor, kinds_filter};
use super::types::{Event, Task};
use crate::auth::RoleGuard;
use crate::error::{coded, OrGql};

/// How often `taskUpdates` polls a task that lives on another node.
const REMOTE_POLL: Duration = Duration::from_millis(250);

pub struct Subscription;

#[GqlSubscription]
impl Subscription {
    /// Every event after `after`, then each new one as it is committed. Without `after`,
    /// only new events.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<i64>,
        kinds: Option<Vec<String>>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Event>>> {
        let api = ctx.data::<Api>()?.clone();
        let after = match cursor(after)? {
            Some(a) => a,
            None => api
                .store()
                .last_seq()
                .await
                .map_err(|e| coded("INTERNAL", e.to_string()))?,
        };
        Ok(api
            .subscribe(after, kinds_filter(kinds))
            .map(|r| r.map(Event).map_err(|e| crate::error::api(e.into()))))
    }

    /// The task now, then at every change, ending after a terminal state.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn task_updates(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Task>>> {
        let api = ctx.data::<Api>()?.clone();
        // Take the cursor before reading the task, so no change falls between the two.
        let after = api
            .store()
            .last_seq()
            .await
            .map_err(|e| coded("INTERNAL", e.to_string()))?;
        let first = api
            .task(&id)
            .await
            .gql()?
            .ok_or_else(|| coded("NOT_FOUND", format!("no task {}", id.0)))?;
        // A task of this node changes through this node's events; a peer's task is polled.
        let local = api
            .store()
            .get(troupe_runtime::store::Table::Tasks, &id)
            .await
            .map_err(|e| crate::error::api(e.into()))?
            .is_some();
        let changes: futures::stream::BoxStream<'static, ()> = if local {
            let filter = EventFilter {
                kinds: None,
                subject: Some(id.0.clone()),
            };
            api.subscribe(after, filter).map(|_| ()).boxed()
        } else {
            futures::stream::unfold((), |_| async {
                tokio::time::sleep(REMOTE_POLL).await;
                Some(((), ()))
            })
            .boxed()
        };
        let state = Updates {
            api,
            id: id.0,
            last: None,
            pending: Some(first),
            changes,
        };
        Ok(futures::stream::unfold(state, Updates::next))
    }
}

struct Updates {
    api: Api,
    id: String,
    last: Option<TaskRecord>,
    pending: Option<TaskRecord>,
    changes: futures::stream::BoxStream<'static, ()>,
}

impl Updates {
    async fn next(mut self) -> Option<(async_graphql::Result<Task>, Self)> {
        if self.last.as_ref().is_some_and(|t| t.state.is_terminal()) {
            return None;
        }
        loop {
            if let Some(task) = self.pending.take() {
                if self.last.as_ref() != Some(&task) {
                    self.last = Some(task.clone());
                    return Some((Ok(Task(task)), self));
                }
            }
            self.changes.next().await?;
            match self.api.task(&self.id).await {
                Ok(Some(task)) => self.pending = Some(task),
                Ok(None) => return None,
                Err(e) => return Some((Err(crate::error::api(e)), self)),
            }
        }
    }
}

//! Events in GraphQL: the `Event` type, the `events` query and subscription. Cursors are
//! per node: `after` is a `seq` of this node's log.

use async_graphql::{Context, Json, Object, Subscription, ID};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use troupe_actors::names::{self, Named};
use troupe_actors::Api;
use troupe_runtime::auth::Role;
use troupe_runtime::events::{Event as RtEvent, EventFilter};
use troupe_runtime::store::Window;

use super::page::page_size;
use super::Int64;
use crate::auth::RoleGuard;
use crate::error::{coded, OrGql};

const DEFAULT_EVENTS: i32 = 100;
const MAX_EVENTS: i32 = 1000;

pub struct Event(pub std::sync::Arc<RtEvent>, tokio::sync::OnceCell<Option<Named>>);

impl From<std::sync::Arc<RtEvent>> for Event {
    fn from(e: std::sync::Arc<RtEvent>) -> Self {
        Event(e, tokio::sync::OnceCell::new())
    }
}

impl Event {
    /// Its subject's kind and name, read from the store once per event however many fields
    /// ask.
    async fn named(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<&Named>> {
        let store = ctx.data::<Api>()?.store();
        let named = self
            .1
            .get_or_init(|| troupe_actors::names::subject_of(store, &self.0))
            .await;
        Ok(named.as_ref())
    }
}

#[Object]
impl Event {
    /// Strictly increasing per node; pass the last one seen as `after` to resume.
    async fn seq(&self) -> Int64 {
        self.0.seq.into()
    }
    async fn kind(&self) -> &str {
        &self.0.kind
    }
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
    async fn subject(&self) -> Option<ID> {
        self.0.subject.clone().map(ID)
    }
    async fn data(&self) -> Option<Json<&serde_json::Value>> {
        (!self.0.data.is_null()).then_some(Json(&self.0.data))
    }
    /// The subject's name as people know it (an agent's, a swarm's, a host's, a VM's, a
    /// member's node name, a task's "capability · short id"; a host whose name another host
    /// has, "sim-1@b", with the node that made it); null when it has no subject or the
    /// subject is gone.
    async fn subject_name(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        Ok(self.named(ctx).await?.map(|n| n.name.clone()))
    }
    /// AGENT, TASK, SWARM, HOST, VM or MEMBER, with `subjectName`.
    async fn subject_kind(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<&'static str>> {
        Ok(self.named(ctx).await?.map(|n| n.kind))
    }
    /// The event as a sentence: "agent reviewer failed: exit 1".
    async fn text(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        let e = &self.0;
        let who = names::who(&e.kind, self.named(ctx).await?, e.subject.as_deref(), &e.data);
        Ok(names::sentence(&e.kind, who.as_deref(), &e.data))
    }
}

pub(crate) fn cursor(after: Option<Int64>) -> async_graphql::Result<Option<u64>> {
    after.map(|a| a.non_negative("after")).transpose()
}

fn filter(kinds: Option<Vec<String>>, subject: Option<ID>) -> EventFilter {
    EventFilter {
        kinds: kinds.map(|k| k.into_iter().collect()),
        subject: subject.map(|s| s.0),
    }
}

#[derive(Default)]
pub struct EventsQuery;

#[Object]
impl EventsQuery {
    /// Events with `seq` above `after` (default 0), oldest first, optionally only some kinds
    /// or only those about one entity, `subject` (its id; each read through an index: the
    /// cost follows what is returned, not the log's size). A cursor this node's log cannot
    /// continue from (older than the kept log, or past its last event) is INVALID_INPUT.
    /// With `last` instead of `after` and `first`: the newest `last` events (of `kinds`,
    /// about `subject`), still oldest first ("the last 3 TASK_FAILED", "the last 100 events
    /// of this agent").
    #[graphql(
        guard = "RoleGuard(Role::Viewer)",
        complexity = "super::page::cost(first.or(last), DEFAULT_EVENTS, MAX_EVENTS, child_complexity)"
    )]
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<Int64>,
        kinds: Option<Vec<String>>,
        subject: Option<ID>,
        first: Option<i32>,
        last: Option<i32>,
    ) -> async_graphql::Result<Vec<Event>> {
        let api = ctx.data::<Api>()?;
        let (window, limit) = match last {
            Some(_) if after.is_some() || first.is_some() => {
                return Err(coded("INVALID_INPUT", "last goes without after and first"))
            }
            Some(last) => (Window::Last, page_size(ctx, Some(last), DEFAULT_EVENTS, MAX_EVENTS)?),
            None => (
                Window::After(cursor(after)?.unwrap_or(0)),
                page_size(ctx, first, DEFAULT_EVENTS, MAX_EVENTS)?,
            ),
        };
        let subject = subject.map(|s| s.0);
        let events = api.events(window, kinds, subject, limit).await.gql()?;
        Ok(events
            .into_iter()
            .map(|e| Event::from(std::sync::Arc::new(e)))
            .collect())
    }
}

#[derive(Default)]
pub struct EventsSubscription;

#[Subscription]
impl EventsSubscription {
    /// Every event after `after`, then each new one as it is committed (only some kinds, or
    /// only those about one entity, `subject`, when given). Without `after`, only new events.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<Int64>,
        kinds: Option<Vec<String>>,
        subject: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Event>>> {
        let api = ctx.data::<Api>()?.clone();
        let after = match cursor(after)? {
            Some(a) => a,
            None => api.last_seq().await.gql()?,
        };
        Ok(api
            .subscribe(after, filter(kinds, subject))
            .map(|r| r.map(Event::from).map_err(|e| crate::error::api(e.into()))))
    }
}

/// A tick at every change of the entity `subject` after `after`: its events, which every
/// member applies, wherever the entity runs.
pub fn changes_of(api: &Api, subject: &str, after: u64) -> futures::stream::BoxStream<'static, ()> {
    let filter = EventFilter {
        kinds: None,
        subject: Some(subject.to_owned()),
    };
    api.subscribe(after, filter).map(|_| ()).boxed()
}

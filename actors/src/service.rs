//! The node's API: one service per domain ([`Agents`], [`Tasks`], [`Messages`], [`Hosts`],
//! [`Vms`], [`Swarms`], and the node itself), each remotable through its own service actor
//! and declared once with [`crate::cluster::remote::service!`], and [`Api`], the thin facade
//! the gateway holds. Code that acts on an agent or a task never cares which node holds it:
//! [`crate::cluster::Cluster::holder`] says, and the domain service takes the request there.
//! The domains' own operations live in their rooms (`agent/`, `scheduler/`, `messaging/`,
//! `host/`, `vm/`, `swarm/`); this module holds only their wire protocol and routing. The
//! services share a `Context` (identity, store, cluster, idempotency); each holds its own
//! domain's state, given by the node's bootstrap (see `node.rs`).

mod agents;
mod context;
mod endpoints;
pub mod experiments;
mod hosts;
mod listing;
mod messages;
pub mod node;
pub mod raft;
mod swarms;
mod tasks;
mod tokens;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::Stream;
use troupe_runtime::auth::{Check, Tokens};
use troupe_runtime::events::{self, Event, EventFilter};
use troupe_runtime::store::{Store, StoreError, Window};
use troupe_runtime::supervision::SupervisorInfo;

pub use crate::messaging::{
    check_topic, topic_matches, DeadMessage, FanOut, Mailboxes, Message, Reply, Sent,
    DEFAULT_TIMEOUT as MESSAGE_TIMEOUT,
};
pub use agents::{AgentAction, AgentLive, Agents, AgentsRequest, AgentsResponse};
pub(crate) use context::Context;
pub use endpoints::{Peers, ServicesChild, SERVICES_CHILD};
pub use hosts::{Hosts, HostsRequest, HostsResponse, Vms, VmsRequest, VmsResponse};
pub use listing::{Counted, Listing};
pub use messages::{Messages, MessagesRequest, MessagesResponse};
pub use swarms::Swarms;
pub use tasks::{TaskFilter, Tasks, TasksRequest, TasksResponse};

use crate::agent::Slots;
use crate::cluster::remote::Service;
use crate::cluster::{Cluster, Member};
use crate::error::ApiError;
use crate::messaging::courier::Desk;
use crate::scheduler::SchedulerMsg;
use context::ask;

/// The node's services, each holding its domain's own state beside the shared `Context`;
/// made by the node's bootstrap.
#[derive(Clone)]
pub struct Api {
    pub(crate) ctx: Arc<Context>,
    /// Where the node's own actors (scheduler, supervisors) are found, for readiness,
    /// draining and the supervision tree.
    pub(crate) slots: Slots,
    pub(crate) agents: Agents,
    pub(crate) tasks: Tasks,
    pub(crate) messages: Messages,
    pub(crate) hosts: Hosts,
    pub(crate) vms: Vms,
    pub(crate) swarms: Swarms,
    pub(crate) experiments: experiments::Experiments,
    /// Alert channels, rules and deliveries.
    pub(crate) alerting: crate::alerts::Alerting,
}

/// How long a read that names a commit index (`extensions.minCommitIndex`) waits for this
/// node to apply it: a follower is one round trip behind the leader, a lagging one catches
/// up in well under this.
pub const READ_AFTER_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// What a node that left the cluster says of its health.
const LEFT: &str = "this node left the cluster (leaveCluster, forgetMember): it takes no work and its token no longer \
                    works; stop its process";

impl Api {
    pub fn agents(&self) -> &Agents {
        &self.agents
    }

    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    pub fn messages(&self) -> &Messages {
        &self.messages
    }

    pub fn hosts(&self) -> &Hosts {
        &self.hosts
    }

    pub fn vms(&self) -> &Vms {
        &self.vms
    }

    pub fn swarms(&self) -> &Swarms {
        &self.swarms
    }

    pub fn alerting(&self) -> &crate::alerts::Alerting {
        &self.alerting
    }

    pub fn node_id(&self) -> &str {
        &self.ctx.node_id
    }

    pub fn node_name(&self) -> &str {
        &self.ctx.node_name
    }

    pub fn started_at(&self) -> DateTime<Utc> {
        self.ctx.started_at
    }

    pub fn store(&self) -> &Store {
        &self.ctx.store
    }

    pub fn cluster(&self) -> &Cluster {
        &self.ctx.cluster
    }

    pub fn members(&self) -> Vec<Member> {
        self.ctx.cluster.members()
    }

    /// The id a keyed mutation answered under `key` (`scope`: the mutation, as
    /// `submitTask`), whatever request it answered; `None` when none is kept.
    pub async fn answered_under(&self, scope: &str, key: &str) -> Result<Option<String>, ApiError> {
        Ok(self.ctx.idempotency.kept(scope, key).await?)
    }

    pub fn tokens(&self) -> &Tokens {
        &self.ctx.tokens
    }

    /// Checks a bearer token.
    pub async fn authenticate(&self, token: &str) -> Result<Check, ApiError> {
        Ok(self.ctx.tokens.check(token).await?)
    }

    /// Why the node cannot serve now, if it cannot: the store failed, a service is down, its
    /// work (scheduler, agents, host drivers) is not running, or it is shutting down
    /// (`/healthz`).
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut problems = self.problems(true);
        // Its work stopped for want of a lease (it listed the stopped parts alone, and an
        // operator whose node lost its majority read no cause): why, and why no lease.
        if let Some(waiting) = self
            .waiting_for_a_lease()
            .filter(|_| !problems.is_empty() && !self.has_left())
        {
            problems.push(waiting);
            if self.ctx.store.failure().is_none() {
                problems.extend(self.ctx.store.commit_problem().map(with_the_way_out));
            }
        }
        verdict(problems)
    }

    /// That this node's work waits for a lease, when it does.
    fn waiting_for_a_lease(&self) -> Option<String> {
        (!self.ctx.cluster.leases.running()).then(|| {
            "this node's work (its scheduler, agents and host drivers) waits for a lease from the cluster's leader"
                .into()
        })
    }

    /// Whether the node is alive (`/livez`, Kubernetes' liveness): [`Self::readiness`], but a
    /// node whose work waits for a lease (at its start without a majority, or cut off) is
    /// alive: restarting it would not give it one, and a cluster that lost its majority
    /// would be restarted in a loop.
    pub fn liveness(&self) -> Result<(), Vec<String>> {
        if !self.slots.root.is_up() || self.has_left() {
            // Alive while its tree is still starting (the gateway is its last child to start,
            // and the root runs a moment after it), as the start's own answers said until the
            // gateway took the address over (a root that gave up ends the process); and once
            // it left (its work stopped for good: its process is to be stopped, not
            // restarted, which would find it left and stop).
            return verdict(
                self.ctx
                    .store
                    .failure()
                    .map(|r| format!("the store has failed: {r}"))
                    .into_iter()
                    .collect(),
            );
        }
        verdict(self.problems(self.ctx.cluster.leases.running()))
    }

    fn problems(&self, work: bool) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(reason) = self.ctx.store.failure() {
            problems.push(format!("the store has failed: {reason}"));
        }
        if self.slots.root.get().is_none() {
            problems.push("the node is starting: its supervision tree is not up yet".into());
            return problems;
        }
        if self.has_left() {
            // Its work stopped for good: that is the one thing to say.
            problems.push(LEFT.into());
            return problems;
        }
        // The root holds the whole tree: until it is there, nothing can describe or reach it.
        if !self.slots.root.is_up() {
            problems.push("the node's supervision tree is not running".into());
        }
        if work {
            if !self.slots.scheduler.is_up() {
                problems.push("the scheduler is not running".into());
            }
            if !self.hosts.fleet.supervisor.is_up() {
                problems.push("the hosts supervisor is not running".into());
            }
            if !self.slots.agents.is_up() {
                problems.push("the agents supervisor is not running".into());
            }
        }
        if !crate::cluster::remote::is_connected(node::NodeService::ROLE, &self.ctx.node_name) {
            problems.push("the cluster service is not running".into());
        }
        if self.ctx.serving.is_draining() {
            problems.push("the node is shutting down".into());
        }
        problems
    }

    /// Readiness to take writes (`/readyz`): [`Self::readiness`], and this node can commit
    /// now (a leader is known; a leader hears from a majority). A cluster that lost its
    /// majority makes every member unready, not dead: `/livez` stays the liveness.
    pub fn write_readiness(&self) -> Result<(), Vec<String>> {
        if self.left() {
            return Err(vec![LEFT.into()]);
        }
        let mut problems = self.problems(true);
        problems.extend(self.waiting_for_a_lease());
        if self.ctx.store.failure().is_none() {
            problems.extend(self.ctx.store.commit_problem().map(with_the_way_out));
        }
        verdict(problems)
    }

    /// Whether this node is known to have left the cluster: what [`Self::left`] found, or
    /// the lease keeper (within a beat of the record's apply). No read: asked per request.
    pub fn has_left(&self) -> bool {
        self.ctx.store.has_left()
    }

    /// Whether this node's replica says it left the cluster. Once it does, the store refuses
    /// this node's writes at once (the lease keeper tells it too, within a beat).
    pub fn left(&self) -> bool {
        let me = &self.ctx.node_name;
        let left = self
            .ctx
            .store
            .view_now(|v| crate::cluster::lease::member_in(v, me))
            .ok()
            .flatten()
            .is_some_and(|r| r.state == crate::cluster::lease::MemberState::Left);
        if left {
            self.ctx.store.left_the_cluster();
        }
        left
    }

    /// The live supervision tree of this node, as its supervisors describe it now; or of the
    /// member `node`, as that node's last beat answer reported it (with the time of its
    /// sample), asking no peer.
    pub async fn supervision_tree(
        &self,
        node: Option<&str>,
    ) -> Result<(SupervisorInfo, Option<chrono::DateTime<chrono::Utc>>), ApiError> {
        match node {
            Some(n) if n != self.ctx.node_name => {
                if !self.ctx.store.status().members.iter().any(|m| m.name == n) {
                    return Err(ApiError::NotFound(format!("no member {n}")));
                }
                let (at, tree) = self.agents.observed.tree_of(n).ok_or_else(|| {
                    ApiError::Unavailable(format!("no heartbeat answer of {n} has reported its tree yet"))
                })?;
                Ok((tree, at))
            }
            _ => Ok((self.own_tree().await?, Some(chrono::Utc::now()))),
        }
    }

    /// This node's live supervision tree, as its supervisors describe it now.
    pub async fn own_tree(&self) -> Result<SupervisorInfo, ApiError> {
        self.node_service().tree().await
    }

    fn node_service(&self) -> crate::service::node::NodeService {
        crate::service::node::NodeService {
            serving: self.ctx.serving.clone(),
            cluster: self.ctx.cluster.clone(),
            store: self.ctx.store.clone(),
            voters: self.ctx.voters,
            root: self.slots.root.clone(),
            rooms: self.slots.rooms.clone(),
            experiments: self.experiments.clone(),
            tokens: std::sync::Arc::new(std::sync::OnceLock::from(self.ctx.tokens.clone())),
            hosts: std::sync::Arc::new(std::sync::OnceLock::from(self.hosts.fleet.clone())),
            agents: self.agents.observed.clone(),
        }
    }

    /// The cluster as this node's replicated log and heartbeats see it now.
    pub async fn cluster_state(&self) -> Result<crate::cluster::replicated::ClusterState, ApiError> {
        let mut state = crate::cluster::replicated::state(&self.ctx.cluster, &self.ctx.store).await?;
        let me = self.ctx.node_name.as_str();
        if let Some(member) = state.members.iter_mut().find(|m| m.name == me) {
            member.rooms = (*self.slots.rooms.get()).clone();
        }
        Ok(state)
    }

    /// Changes the cluster's membership (made by the leader, wherever it is asked), then
    /// answers the member as this node sees it after.
    pub async fn change_membership(
        &self,
        change: crate::service::node::MemberChange,
    ) -> Result<crate::cluster::replicated::LogMember, ApiError> {
        use crate::service::node::{MemberChange, NodeLocal};
        let node = match &change {
            MemberChange::Leave(n) | MemberChange::Forget(n) | MemberChange::Role(n, _) => n.clone(),
        };
        // A membership change is a write: without a majority neither leaving nor forgetting
        // can happen, and the way out is to recover from a survivor.
        let way_out = |problem: String| {
            ApiError::Unavailable(format!(
                "the cluster cannot change its membership now: {problem}. If the majority is \
                 gone for good (with two voters, either one's loss), stop this node and run \
                 `troupe recover --data-dir <its data dir>`: it starts again as a cluster of one \
                 that the others rejoin (docs/cluster.md, Recovering a cluster that lost its majority)"
            ))
        };
        if let Some(problem) = self.ctx.store.commit_problem() {
            return Err(way_out(problem));
        }
        // The role it has now: one that leaves is out of the log's membership after.
        let had = self
            .cluster_state()
            .await
            .ok()
            .and_then(|s| s.members.into_iter().find(|m| m.name == node))
            .map(|m| m.role);
        match self.node_service().change(change).await {
            // The majority went while the change waited for it (a leader notices after a
            // couple of seconds without answers): the same way out.
            Err(ApiError::Unavailable(why)) => {
                return Err(match self.ctx.store.commit_problem() {
                    Some(problem) => way_out(problem),
                    None => ApiError::Unavailable(why),
                })
            }
            other => other?,
        }
        // The change is applied here once this node has caught up with the leader.
        self.ctx.store.flush().await?;
        let state = self.cluster_state().await?;
        match state.members.into_iter().find(|m| m.name == node) {
            Some(member) => Ok(member),
            // Removed from the log's membership: what the store last recorded of it, with the
            // role it had there (not the learner it became on its way out).
            None => {
                let mut gone = crate::cluster::replicated::departed(&self.ctx.store, &node).await?;
                if let Some(role) = had {
                    gone.role = role;
                }
                Ok(gone)
            }
        }
    }

    /// Why what this node shows of its own work is not what runs, when its work waits for a
    /// lease (its cluster lost its majority, or it is cut off): its agents, tasks and hosts
    /// read as last committed (`RUNNING`) while none of them runs here. Asked per request:
    /// a lock and a flag, the reasons read only when there is one.
    pub fn work_stopped(&self) -> Option<String> {
        if self.ctx.cluster.leases.running() || !self.slots.root.is_up() || self.has_left() {
            return None;
        }
        let why = self
            .ctx
            .store
            .commit_problem()
            .map(|p| format!(" ({p})"))
            .unwrap_or_default();
        Some(format!(
            "this node's work (its scheduler, agents and host drivers) is stopped until it holds a lease \
             from the cluster's leader{why}: the agents, tasks and hosts it holds read here as last \
             committed, not as they run now"
        ))
    }

    /// The last log entry this node applied: a mutation answered here is in it.
    pub fn applied_index(&self) -> u64 {
        self.ctx.store.applied_index()
    }

    /// Waits at most [`READ_AFTER_WITHIN`] until this node has applied the log entry
    /// `index` (a client's write made through another node); UNAVAILABLE past it.
    pub async fn read_after(&self, index: u64) -> Result<(), ApiError> {
        if self.ctx.store.applied_at_least(index, READ_AFTER_WITHIN).await? {
            return Ok(());
        }
        Err(ApiError::Unavailable(format!(
            "this node has applied up to {} and not {index} within {READ_AFTER_WITHIN:?}: it is behind or cut off; ask another node",
            self.applied_index()
        )))
    }

    pub async fn last_seq(&self) -> Result<u64, ApiError> {
        Ok(self.ctx.store.last_seq().await?)
    }

    /// Up to `limit` events of the `window` (after a cursor, or the newest), oldest first;
    /// with `kinds`, only those kinds (read through the kind index); with `subject`, only the
    /// events about that entity (read through the subject index).
    pub async fn events(
        &self,
        window: Window,
        kinds: Option<Vec<String>>,
        subject: Option<String>,
        limit: usize,
    ) -> Result<Vec<Event>, ApiError> {
        let store = &self.ctx.store;
        Ok(match (window, subject, kinds) {
            (window, Some(subject), kinds) => store.events_about(subject, window, kinds, limit).await?,
            (Window::Last, None, kinds) => store.last_events(kinds, limit).await?,
            (Window::After(after), None, Some(kinds)) => store.events_of_kinds(after, kinds, limit).await?,
            (Window::After(after), None, None) => store.events_after(after, limit).await?,
        })
    }

    /// Events after `after` that pass the filter: the log, then live.
    pub fn subscribe(
        &self,
        after: u64,
        filter: EventFilter,
    ) -> impl Stream<Item = Result<Arc<Event>, StoreError>> + Send + 'static {
        events::subscribe(&self.ctx.store, after, filter)
    }

    /// Stops accepting work and starting tasks; returns how many tasks still run.
    pub async fn begin_drain(&self) -> usize {
        self.ctx.serving.stop();
        match self.scheduler() {
            Ok(s) => ask(&s, SchedulerMsg::Drain, "the scheduler").await.unwrap_or(0),
            Err(_) => 0,
        }
    }

    pub async fn running_tasks(&self) -> usize {
        match self.scheduler() {
            Ok(s) => ask(&s, SchedulerMsg::Running, "the scheduler").await.unwrap_or(0),
            Err(_) => 0,
        }
    }

    /// How many of the tasks running here work now: not those held for an operator's
    /// approval.
    pub async fn working_tasks(&self) -> usize {
        match self.scheduler() {
            Ok(s) => ask(&s, |r| SchedulerMsg::Working(None, r), "the scheduler")
                .await
                .unwrap_or(0),
            Err(_) => 0,
        }
    }

    /// Gives every running task back to the queue, durably, without charging an attempt.
    pub async fn requeue_running(&self) -> Result<(), ApiError> {
        let scheduler = self.scheduler()?;
        ask(&scheduler, SchedulerMsg::Requeue, "the scheduler").await?
    }

    fn scheduler(&self) -> Result<ractor::ActorRef<SchedulerMsg>, ApiError> {
        self.slots.scheduler.running("the scheduler")
    }
}

/// What agents send of their own accord, carried to the service that does it.
impl Desk for Api {
    async fn carry(&self, from: String, what: crate::agent::OutgoingKind) -> Result<serde_json::Value, ApiError> {
        use crate::agent::OutgoingKind;
        match what {
            OutgoingKind::Send {
                to,
                payload,
                priority,
                timeout_ms,
            } => self
                .messages
                .send_message(&to, Some(from), payload, priority, Duration::from_millis(timeout_ms))
                .await
                .map(|r| r.payload),
            OutgoingKind::Publish {
                topic,
                payload,
                priority,
            } => self
                .messages
                .publish(topic, payload, priority)
                .await
                .map(|(fan, _)| serde_json::json!({ "queued": fan.queued, "refused": fan.refused })),
            OutgoingKind::Memory(op) => self.swarms.agent_memory(&from, op).await.map_err(coded),
            OutgoingKind::Submit {
                capability,
                payload,
                key,
                timeout_ms,
            } => {
                let request = crate::task::SubmitTaskRequest::to_capability(capability, payload);
                let task = self.tasks.submit(request, Some(key)).await.map_err(coded)?;
                let ended = self
                    .tasks
                    .wait_end(&task.spec.id, Duration::from_millis(timeout_ms))
                    .await
                    .map_err(coded)?;
                match ended.status.state {
                    crate::task::TaskState::Succeeded => Ok(ended.status.result.unwrap_or(serde_json::Value::Null)),
                    state => Err(ApiError::Conflict(format!(
                        "task {} ended {}: {}",
                        ended.spec.id,
                        state.as_str(),
                        ended.status.error.as_deref().unwrap_or("no error given")
                    ))),
                }
            }
            OutgoingKind::TeamTask { mode, timeout_ms } => self
                .swarms
                .lead_task(&from, mode, Duration::from_millis(timeout_ms))
                .await
                .map_err(coded),
        }
    }
}

/// An error for an agent, its code first, so it can tell a lost compare-and-set (CONFLICT)
/// from the rest.
fn coded(e: ApiError) -> ApiError {
    ApiError::Unavailable(format!("{}: {e}", e.code()))
}

/// Why no write commits, with the way out when the majority will not come back: a probe's
/// reader (an operator, an orchestrator's events) learns it where it looks.
fn with_the_way_out(problem: String) -> String {
    format!(
        "{problem}; if most of the voters are gone for good, stop this node and make a cluster again from it \
         with `troupe recover --data-dir <its data dir>` (docs/cluster.md)"
    )
}

fn verdict(problems: Vec<String>) -> Result<(), Vec<String>> {
    match problems.is_empty() {
        true => Ok(()),
        false => Err(problems),
    }
}

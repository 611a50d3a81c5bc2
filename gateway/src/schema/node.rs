//! The node in GraphQL: `node` (identity, cluster members, last event) and `supervisionTree`
//! (the live tree, as its supervisors describe it).

use async_graphql::{Context, Enum, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use troupe_actors::cluster::lease::MemberState as FailoverState;
use troupe_actors::cluster::{Member, MemberStatus};
use troupe_actors::Api;
use troupe_runtime::auth::Role;
use troupe_runtime::store::raft::Role as LogRole;
use troupe_runtime::supervision::{ChildInfo, Intensity, Strategy as S, SupervisorInfo};

use super::Int64;
use crate::auth::RoleGuard;
use crate::error::OrGql;

#[derive(SimpleObject)]
pub struct NodeMember {
    pub name: String,
    pub address: String,
    /// UP when the member answered lately, DOWN when it was seen before and is silent.
    pub status: String,
}

impl From<Member> for NodeMember {
    fn from(m: Member) -> Self {
        Self {
            name: m.name,
            address: m.address,
            status: match m.status {
                MemberStatus::Up => "UP".into(),
                MemberStatus::Down => "DOWN".into(),
            },
        }
    }
}

#[derive(SimpleObject)]
pub struct Node {
    pub id: ID,
    pub name: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub members: Vec<NodeMember>,
    /// The newest event's `seq` on this node: list, then subscribe with `after: lastSeq`.
    pub last_seq: Int64,
}

/// Whether a member votes in the replicated log.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum MemberRole {
    /// It votes and counts towards the majority that commits a write.
    Voter,
    /// It receives and applies the log, but neither votes nor counts.
    Learner,
}

/// A member's state, as the leader decided it from the leases it granted (docs/cluster.md).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum MemberState {
    /// It holds its lease and runs its work.
    Up,
    /// The leader has not heard from it for a while (its work may still run), or heard from
    /// it again before its work runs again (it restarted, however quickly, before it was
    /// declared DOWN).
    Suspect,
    /// Its lease has lapsed: it stopped its work, which moved to the survivors. One that
    /// comes back stays DOWN until it has caught up with the leader's log and applied it
    /// (its `lag`, on the leader, says how far its log is), since it starts its work only
    /// then.
    Down,
    /// It left the cluster.
    Left,
}

/// One member of the cluster's replicated log.
#[derive(SimpleObject)]
pub struct ClusterMember {
    pub name: String,
    /// Its cluster address: as it last said, else as it recorded when it last started.
    pub address: String,
    pub role: MemberRole,
    /// As the leader last decided it (and committed); for a member it never decided upon
    /// (it joined, and was always up since), UP while the answering node hears from it and
    /// SUSPECT while it does not. While no leader can decide (none is known to the answering
    /// node, or it leads and no majority answers it), SUSPECT too for a member recorded UP
    /// that it does not hear from.
    pub state: MemberState,
    /// Log entries the leader holds that this member has not confirmed yet; null when the
    /// node answering does not lead (only the leader knows).
    pub lag: Option<Int64>,
    /// Log entries the answering node had applied when it last beat this member that the
    /// member had not applied when it answered (0 for the answering node itself); null when
    /// it did not answer that beat. A member back from DOWN is UP again only once this is
    /// at most 16 on the leader, as well as its `lag` at most 64.
    pub applied_lag: Option<Int64>,
    /// Whether its work runs (it holds a lease and has started it), as its answer to the
    /// answering node's last beat said (the answering node's own now); null when it did not
    /// answer that beat. A SUSPECT member is UP again only once it says so.
    pub working: Option<bool>,
    /// How many times a node of the member's name has started in this cluster (a count the
    /// log keeps, which a node joining afresh under a former member's name goes on with).
    pub incarnation: Int64,
    /// When the answering node last heard from it (now for the answering node itself);
    /// null when it has not since it started.
    pub last_heartbeat: Option<chrono::DateTime<chrono::Utc>>,
    /// What its agents can take of each capability they serve, as its last heartbeat said
    /// (at `lastHeartbeat`; this node's own as of the last 100 ms): what a submit on the
    /// answering node places capability tasks by.
    pub rooms: Vec<CapabilityRoom>,
}

/// What one member's open agents can take of one capability.
#[derive(SimpleObject)]
pub struct CapabilityRoom {
    pub capability: String,
    /// Open agents (not paused, unhealthy or stopping) that serve it.
    pub agents: i32,
    /// Their task slots not in use.
    pub free: i32,
}

/// The cluster as the answering node's replicated log sees it.
#[derive(SimpleObject)]
pub struct ClusterView {
    /// The member that leads now; null during an election or when this node is cut off.
    pub leader: Option<String>,
    /// The current Raft term (grows at each election).
    pub term: Int64,
    /// The last log entry this node applied; every applied entry was committed on a majority.
    pub commit_index: Int64,
    pub members: Vec<ClusterMember>,
}

impl From<troupe_actors::cluster::replicated::ClusterState> for ClusterView {
    fn from(s: troupe_actors::cluster::replicated::ClusterState) -> Self {
        Self {
            leader: s.leader,
            term: s.term.into(),
            commit_index: s.commit_index.into(),
            members: s.members.into_iter().map(ClusterMember::from).collect(),
        }
    }
}

impl From<troupe_actors::cluster::replicated::LogMember> for ClusterMember {
    fn from(m: troupe_actors::cluster::replicated::LogMember) -> Self {
        Self {
            name: m.name,
            address: m.address,
            role: match m.role {
                LogRole::Voter => MemberRole::Voter,
                LogRole::Learner => MemberRole::Learner,
            },
            state: match m.state {
                FailoverState::Up => MemberState::Up,
                FailoverState::Suspect => MemberState::Suspect,
                FailoverState::Down => MemberState::Down,
                FailoverState::Left => MemberState::Left,
            },
            last_heartbeat: m.last_heartbeat,
            lag: m.lag.map(Into::into),
            applied_lag: m.applied_lag.map(Into::into),
            working: m.working,
            incarnation: m.incarnation.into(),
            rooms: m
                .rooms
                .into_iter()
                .map(|(capability, room)| CapabilityRoom {
                    capability,
                    agents: room.agents as i32,
                    free: room.free as i32,
                })
                .collect(),
        }
    }
}

#[derive(Default)]
pub struct NodeMutation;

#[Object]
impl NodeMutation {
    /// Drains the member `node` and takes it out of the cluster: it stops its agents, swarms
    /// and host drivers, which then move to the members that are UP (`AGENT_MOVED`,
    /// `SWARM_MOVED`, `HOST_MOVED`), it is marked LEFT (`MEMBER_LEFT`) and removed from the
    /// replicated log (a learner takes a voter's place when one can). It must be reachable;
    /// a member that will not return is forgotten with `forgetMember`.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn leave_cluster(&self, ctx: &Context<'_>, node: String) -> async_graphql::Result<ClusterMember> {
        let change = troupe_actors::service::node::MemberChange::Leave(node);
        Ok(ctx.data::<Api>()?.change_membership(change).await.gql()?.into())
    }

    /// Forgets the member `node`, DOWN and not coming back: it is marked LEFT
    /// (`MEMBER_LEFT`) and removed from the replicated log. What it ran moved when it went
    /// down.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn forget_member(&self, ctx: &Context<'_>, node: String) -> async_graphql::Result<ClusterMember> {
        let change = troupe_actors::service::node::MemberChange::Forget(node);
        Ok(ctx.data::<Api>()?.change_membership(change).await.gql()?.into())
    }

    /// Makes the member `node` a voter (it counts towards the majority) or a learner (it
    /// receives the log only) (`MEMBER_ROLE_CHANGED`).
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn set_member_role(
        &self,
        ctx: &Context<'_>,
        node: String,
        role: MemberRole,
    ) -> async_graphql::Result<ClusterMember> {
        let role = match role {
            MemberRole::Voter => LogRole::Voter,
            MemberRole::Learner => LogRole::Learner,
        };
        let change = troupe_actors::service::node::MemberChange::Role(node, role);
        Ok(ctx.data::<Api>()?.change_membership(change).await.gql()?.into())
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Strategy {
    OneForOne,
    OneForAll,
    RestForOne,
}

impl From<S> for Strategy {
    fn from(s: S) -> Self {
        match s {
            S::OneForOne => Strategy::OneForOne,
            S::OneForAll => Strategy::OneForAll,
            S::RestForOne => Strategy::RestForOne,
        }
    }
}

/// A restart intensity: at most `maxRestarts` restarts within `windowMs`.
#[derive(SimpleObject)]
pub struct RestartIntensity {
    pub max_restarts: i32,
    pub window_ms: Int64,
}

fn intensity(i: Option<Intensity>) -> Option<RestartIntensity> {
    i.map(|i| RestartIntensity {
        max_restarts: i.max_restarts as i32,
        window_ms: (i.window.as_millis() as u64).into(),
    })
}

pub struct Supervisor(SupervisorInfo, Option<DateTime<Utc>>);

#[Object]
impl Supervisor {
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn strategy(&self) -> Strategy {
        self.0.strategy.into()
    }
    /// Past it the supervisor escalates; null when it never does (its children have their own).
    async fn intensity(&self) -> Option<RestartIntensity> {
        intensity(self.0.intensity)
    }
    async fn children(&self) -> Vec<SupervisedChild> {
        self.0
            .children
            .iter()
            .map(|c| SupervisedChild(c.clone(), self.1))
            .collect()
    }
    /// When the tree was seen as it is shown: now for this node's; for a peer's, when that
    /// node last sampled it (at most about a second before its last heartbeat answer).
    async fn observed_at(&self) -> Option<DateTime<Utc>> {
        self.1
    }
}

pub struct SupervisedChild(ChildInfo, Option<DateTime<Utc>>);

#[Object]
impl SupervisedChild {
    async fn id(&self) -> &str {
        &self.0.id
    }
    /// AGENT, SERVICE, SUPERVISOR ...
    async fn kind(&self) -> &str {
        &self.0.kind
    }
    /// What people call it: an agent's (or VM's) name from the replicated store; null for
    /// the others, whose id is their name.
    async fn name(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        if !matches!(self.0.kind.as_str(), "AGENT" | "VM") {
            return Ok(None);
        }
        let store = ctx.data::<Api>()?.store();
        Ok(troupe_actors::names::named(store, &self.0.id).await.map(|n| n.name))
    }
    /// STARTING, RUNNING, RESTARTING or STOPPING.
    async fn state(&self) -> &str {
        &self.0.state
    }
    async fn restarts(&self) -> i32 {
        self.0.restarts as i32
    }
    /// The supervisor that starts and restarts it.
    async fn owner(&self) -> &str {
        &self.0.owner
    }
    /// Its own restart intensity, when it has one (past it, it alone is FAILED).
    async fn intensity(&self) -> Option<RestartIntensity> {
        intensity(self.0.intensity)
    }
    /// Its subtree, when it is a supervisor.
    async fn supervisor(&self) -> Option<Supervisor> {
        self.0.supervisor.clone().map(|s| Supervisor(s, self.1))
    }
}

#[derive(Default)]
pub struct NodeQuery;

#[Object]
impl NodeQuery {
    /// This node's recent series, oldest first, one sample each `history_interval_ms` (10 s
    /// by default) over the last `minutes` (at most the hour or so it keeps): what the
    /// overview's charts draw when a page opens. Prometheus keeps the long term.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn history(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 60)] minutes: i32,
    ) -> async_graphql::Result<Vec<crate::history::Sample>> {
        let minutes =
            u32::try_from(minutes).map_err(|_| crate::error::coded("INVALID_INPUT", "minutes must not be negative"))?;
        Ok(ctx.data::<std::sync::Arc<crate::history::History>>()?.since(minutes))
    }

    /// This node and the cluster it belongs to.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn node(&self, ctx: &Context<'_>) -> async_graphql::Result<Node> {
        let api = ctx.data::<Api>()?;
        Ok(Node {
            id: ID(api.node_id().to_owned()),
            name: api.node_name().to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: api.started_at(),
            members: api.members().into_iter().map(NodeMember::from).collect(),
            last_seq: api.last_seq().await.gql()?.into(),
        })
    }

    /// The cluster's replicated log as this node sees it: leader, term, and every member
    /// with its role, state, lag and incarnation.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn cluster(&self, ctx: &Context<'_>) -> async_graphql::Result<ClusterView> {
        Ok(ctx.data::<Api>()?.cluster_state().await.gql()?.into())
    }

    /// The live supervision tree of this node, read from its supervisors now; or of the
    /// member `node`, as that node's last heartbeat answer reported it (sampled at most once
    /// a second; `observedAt` says when), asking no peer. NOT_FOUND for a name that is not a
    /// member; UNAVAILABLE before the member's first report.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn supervision_tree(&self, ctx: &Context<'_>, node: Option<String>) -> async_graphql::Result<Supervisor> {
        let (tree, at) = ctx.data::<Api>()?.supervision_tree(node.as_deref()).await.gql()?;
        Ok(Supervisor(tree, at))
    }
}

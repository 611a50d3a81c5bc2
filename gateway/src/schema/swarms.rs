//! Swarms in GraphQL: the `Swarm` type, `swarms` / `swarm` / `swarmTask`, `createSwarm`,
//! `scaleSwarm`, `setTopology`, `adoptAgent`, `releaseAgent`, `destroySwarm`,
//! `submitSwarmTask`, the memory mutations, and `swarmUpdates`.

use async_graphql::{Context, Enum, Json, Object, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde_json::Value;
use troupe_actors::swarm::memory::{Entry, Write};
use troupe_actors::swarm::{self as sw, SwarmView};
use troupe_actors::{Api, ApiError};
use troupe_runtime::auth::Role;

use super::agents::Agent;
use super::updates::Follow;
use super::Int64;
use crate::auth::RoleGuard;
use crate::error::{coded, OrGql};

mod inputs;

use inputs::{count, CreateSwarmInput, SubmitSwarmTaskInput};

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "troupe_actors::swarm::Topology")]
pub enum Topology {
    /// The coordinator decomposes each swarm task and gives each subtask to a member it
    /// picks.
    Hierarchical,
    /// Subtasks go to the swarm's shared queue; free members take them. Work flows while the
    /// coordinator restarts.
    Mesh,
    /// Hierarchical for work with dependencies, mesh for independent work under load.
    Adaptive,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "troupe_actors::swarm::MemberStrategy")]
pub enum MemberStrategy {
    /// A failed member is restarted alone.
    OneForOne,
    /// A failed member restarts every member.
    OneForAll,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "troupe_actors::swarm::SwarmHealth")]
pub enum SwarmStatus {
    Starting,
    /// Every member runs, and at least minAgents.
    Healthy,
    /// Some members run, not all (or fewer than minAgents).
    Degraded,
    /// It has members and none runs.
    Failed,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "troupe_actors::swarm::Aggregate")]
pub enum AggregateMode {
    /// The first answer.
    First,
    /// Every answer, by member (all must succeed).
    All,
    /// The answer more than half gave, with the dissent.
    Majority,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum SwarmTaskMode {
    /// One piece of work (`payload`, `capabilities`).
    Single,
    /// `steps` with dependencies (or, with none, a plan asked of a member with the
    /// capability `plan` for `input`).
    Plan,
    /// `payload` to `k` members, aggregated by `aggregate`.
    ScatterGather,
    /// `stages` in order, from `input`, each result the next one's payload.
    Pipeline,
    /// One `map` task per element of `items`, then `reduce` on `{"results": [...]}`.
    MapReduce,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "troupe_actors::swarm::SwarmTaskState")]
pub enum SwarmTaskState {
    Running,
    Succeeded,
    Failed,
}

/// One key of a swarm's memory.
#[derive(SimpleObject)]
pub struct MemoryEntry {
    pub key: String,
    pub value: Json<Value>,
    /// 1 when first set, one more at each set: what `expectVersion` compares with.
    pub version: Int64,
    pub expires_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl From<Entry> for MemoryEntry {
    fn from(e: Entry) -> Self {
        Self {
            key: e.key,
            value: Json(e.value),
            version: Int64(e.version as i64),
            expires_at: e.expires_at,
            updated_at: e.updated_at,
        }
    }
}

/// What the swarm's members are doing now.
#[derive(SimpleObject)]
pub struct SwarmQueue {
    /// Tasks running on its members.
    pub running: i32,
    /// Its members' task slots.
    pub slots: i32,
}

#[derive(SimpleObject)]
pub struct SwarmMetrics {
    /// How often its coordinator started (1 + restarts).
    pub coordinator_starts: i32,
    pub tasks_running: i32,
    pub tasks_succeeded: i32,
    pub tasks_failed: i32,
}

pub struct SwarmTask(sw::SwarmTask);

#[Object]
impl SwarmTask {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn swarm_id(&self) -> ID {
        ID(self.0.swarm.clone())
    }
    async fn mode(&self) -> &str {
        self.0.mode.name()
    }
    async fn state(&self) -> SwarmTaskState {
        self.0.state.into()
    }
    /// How its work was handed out (HIERARCHICAL or MESH), once it was.
    async fn topology(&self) -> Option<Topology> {
        self.0.topology.map(Into::into)
    }
    /// The tasks it made (`task(id)` shows each), in order.
    async fn subtasks(&self) -> Vec<ID> {
        self.0.subtasks.iter().cloned().map(ID).collect()
    }
    async fn result(&self) -> Option<Json<Value>> {
        self.0.result.clone().map(Json)
    }
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
}

pub struct Swarm(SwarmView);

#[Object]
impl Swarm {
    async fn id(&self) -> ID {
        ID(self.0.spec.id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.spec.name
    }
    async fn node(&self) -> &str {
        &self.0.spec.node
    }
    /// As asked (createSwarm, setTopology).
    async fn topology(&self) -> Topology {
        self.0.spec.topology.into()
    }
    /// How it hands out work now (for ADAPTIVE, what its rule last chose).
    async fn active_topology(&self) -> Topology {
        self.0.status.active.into()
    }
    /// From its members' states.
    async fn status(&self) -> SwarmStatus {
        self.0.status.health.into()
    }
    async fn status_reason(&self) -> &str {
        &self.0.status.reason
    }
    async fn status_since(&self) -> DateTime<Utc> {
        self.0.status.since
    }
    async fn strategy(&self) -> MemberStrategy {
        self.0.spec.strategy.into()
    }
    async fn size(&self) -> i32 {
        self.0.spec.size as i32
    }
    async fn min_agents(&self) -> i32 {
        self.0.spec.min_agents as i32
    }
    async fn max_agents(&self) -> i32 {
        self.0.spec.max_agents as i32
    }
    async fn memory_limit_bytes(&self) -> Int64 {
        Int64(self.0.spec.memory_limit_bytes as i64)
    }
    /// What its LLM members may spend together (tokens), if it says.
    async fn max_tokens(&self) -> Option<Int64> {
        self.0.spec.budget.and_then(|b| b.max_tokens).map(Int64::from)
    }
    /// What its LLM members may spend together (US dollars), if it says.
    async fn max_cost_usd(&self) -> Option<f64> {
        self.0.spec.budget.and_then(|b| b.max_cost_usd)
    }
    /// What its LLM members spent together, counted as each step was committed (a member
    /// that left still counts).
    async fn llm_spend(&self, ctx: &Context<'_>) -> async_graphql::Result<super::agents::LlmSpend> {
        super::agents::LlmSpend::of(ctx, &format!("swarm:{}", self.0.spec.id)).await
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.spec.created_at
    }
    /// For a sub-team: the swarm it belongs to.
    async fn parent(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Swarm>> {
        match &self.0.spec.lead {
            Some(lead) => Ok(Some(Swarm(ctx.data::<Api>()?.swarms().get(&lead.swarm).await.gql()?))),
            None => Ok(None),
        }
    }
    /// For a sub-team: the parent's member leading it.
    async fn leader(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Agent>> {
        match &self.0.spec.lead {
            Some(lead) => Ok(ctx
                .data::<Api>()?
                .agents()
                .get(&lead.agent)
                .await
                .gql()?
                .map(Agent::from)),
            None => Ok(None),
        }
    }
    /// Its sub-teams, each led by one of its members.
    async fn teams(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Swarm>> {
        let api = ctx.data::<Api>()?;
        let mut out = Vec::new();
        for id in &self.0.teams {
            out.push(Swarm(api.swarms().get(id).await.gql()?));
        }
        Ok(out)
    }
    /// Its members, in the order they joined.
    async fn members(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Agent>> {
        let api = ctx.data::<Api>()?;
        let mut out = Vec::new();
        for id in &self.0.members {
            if let Some(a) = api.agents().get(id).await.gql()? {
                out.push(Agent::from(a));
            }
        }
        Ok(out)
    }
    async fn queue(&self, ctx: &Context<'_>) -> async_graphql::Result<SwarmQueue> {
        let q = ctx.data::<Api>()?.swarms().queue(&self.0.spec.id).await.gql()?;
        Ok(SwarmQueue {
            running: q.0 as i32,
            slots: q.1 as i32,
        })
    }
    /// Its memory's live keys starting with `prefix`, in key order.
    async fn memory(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] prefix: String,
        #[graphql(default = 100)] first: i32,
    ) -> async_graphql::Result<Vec<MemoryEntry>> {
        let first = super::page::page_size(ctx, Some(first), 100, 1000)?;
        let entries = ctx
            .data::<Api>()?
            .swarms()
            .memory_list(&self.0.spec.id, &prefix, first)
            .await
            .gql()?;
        Ok(entries.into_iter().map(Into::into).collect())
    }
    /// Its tasks, newest first.
    async fn tasks(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
    ) -> async_graphql::Result<Vec<SwarmTask>> {
        let first = super::page::page_size(ctx, Some(first), 20, 500)?;
        let tasks = ctx.data::<Api>()?.swarms().tasks(&self.0.spec.id, first).await.gql()?;
        Ok(tasks.into_iter().map(SwarmTask).collect())
    }
    async fn metrics(&self, ctx: &Context<'_>) -> async_graphql::Result<SwarmMetrics> {
        let tasks = ctx
            .data::<Api>()?
            .swarms()
            .tasks(&self.0.spec.id, usize::MAX)
            .await
            .gql()?;
        let n = |s: sw::SwarmTaskState| tasks.iter().filter(|t| t.state == s).count() as i32;
        Ok(SwarmMetrics {
            coordinator_starts: self.0.status.coordinator_starts as i32,
            tasks_running: n(sw::SwarmTaskState::Running),
            tasks_succeeded: n(sw::SwarmTaskState::Succeeded),
            tasks_failed: n(sw::SwarmTaskState::Failed),
        })
    }
}

#[derive(Default)]
pub struct SwarmsQuery;

#[Object]
impl SwarmsQuery {
    /// The cluster's swarms, sub-teams included, in id order, from this node's replica.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn swarms(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Swarm>> {
        Ok(ctx
            .data::<Api>()?
            .swarms()
            .list()
            .await
            .gql()?
            .into_iter()
            .map(Swarm)
            .collect())
    }

    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn swarm(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Swarm>> {
        match ctx.data::<Api>()?.swarms().get(&id).await {
            Ok(v) => Ok(Some(Swarm(v))),
            Err(ApiError::NotFound(_)) => Ok(None),
            Err(e) => Err(e).gql(),
        }
    }

    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn swarm_task(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<SwarmTask>> {
        Ok(ctx.data::<Api>()?.swarms().task(&id).await.gql()?.map(SwarmTask))
    }
}

#[derive(Default)]
pub struct SwarmsMutation;

#[Object]
impl SwarmsMutation {
    /// Creates a swarm on this node and answers once its members from `templates` (and the
    /// adopted `members`) are started.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn create_swarm(&self, ctx: &Context<'_>, input: CreateSwarmInput) -> async_graphql::Result<Swarm> {
        let req = input.into_request().gql()?;
        Ok(Swarm(ctx.data::<Api>()?.swarms().create(req).await.gql()?))
    }

    /// Sets the swarm's size within minAgents..maxAgents; answers once it has it.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn scale_swarm(&self, ctx: &Context<'_>, id: ID, size: i32) -> async_graphql::Result<Swarm> {
        let size = count(size, "size").gql()?;
        Ok(Swarm(
            ctx.data::<Api>()?.swarms().scale(&id, size, "scaleSwarm").await.gql()?,
        ))
    }

    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn set_topology(&self, ctx: &Context<'_>, id: ID, topology: Topology) -> async_graphql::Result<Swarm> {
        Ok(Swarm(
            ctx.data::<Api>()?
                .swarms()
                .set_topology(&id, topology.into())
                .await
                .gql()?,
        ))
    }

    /// Makes an agent of the swarm's node a member (its size grows by one).
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn adopt_agent(&self, ctx: &Context<'_>, id: ID, agent_id: ID) -> async_graphql::Result<Swarm> {
        Ok(Swarm(ctx.data::<Api>()?.swarms().adopt(&id, &agent_id).await.gql()?))
    }

    /// Gives a member back to the node's agents supervisor (the swarm's size shrinks by one).
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn release_agent(&self, ctx: &Context<'_>, id: ID, agent_id: ID) -> async_graphql::Result<Swarm> {
        Ok(Swarm(ctx.data::<Api>()?.swarms().release(&id, &agent_id).await.gql()?))
    }

    /// Stops the swarm's coordinator and members (their processes end) and removes it, its
    /// members, memory and tasks.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn destroy_swarm(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Swarm> {
        Ok(Swarm(ctx.data::<Api>()?.swarms().destroy(&id).await.gql()?))
    }

    /// Gives the swarm a task; answered RUNNING at once, followed with `swarmTask(id)` or
    /// `swarmUpdates`.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn submit_swarm_task(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: SubmitSwarmTaskInput,
    ) -> async_graphql::Result<SwarmTask> {
        let mode = input.into_mode().gql()?;
        Ok(SwarmTask(
            ctx.data::<Api>()?.swarms().submit_task(&id, mode).await.gql()?,
        ))
    }

    /// Sets a key of the swarm's memory; with `expectVersion`, only if the key is at that
    /// version (0: only if it does not exist), else CONFLICT. With `ttlMs` the key expires
    /// then: at most ten years (315360000000), else INVALID_INPUT.
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn set_swarm_memory(
        &self,
        ctx: &Context<'_>,
        id: ID,
        key: String,
        value: Json<Value>,
        ttl_ms: Option<Int64>,
        expect_version: Option<Int64>,
    ) -> async_graphql::Result<MemoryEntry> {
        let ttl_ms = ttl_ms.map(|t| t.non_negative("ttlMs")).transpose()?;
        let expect = expect_version.map(|v| v.non_negative("expectVersion")).transpose()?;
        let write = Write::Set { value: value.0, ttl_ms };
        let entry = ctx
            .data::<Api>()?
            .swarms()
            .memory_write(&id, &key, write, expect)
            .await
            .gql()?
            .ok_or_else(|| coded("INTERNAL", "a set answered no entry"))?;
        Ok(entry.into())
    }

    /// Deletes a key of the swarm's memory (with `expectVersion`, only at that version).
    #[graphql(guard = "RoleGuard(Role::Operator)")]
    async fn delete_swarm_memory(
        &self,
        ctx: &Context<'_>,
        id: ID,
        key: String,
        expect_version: Option<Int64>,
    ) -> async_graphql::Result<bool> {
        let expect = expect_version.map(|v| v.non_negative("expectVersion")).transpose()?;
        ctx.data::<Api>()?
            .swarms()
            .memory_write(&id, &key, Write::Delete, expect)
            .await
            .gql()?;
        Ok(true)
    }
}

#[derive(Default)]
pub struct SwarmsSubscription;

#[Subscription]
impl SwarmsSubscription {
    /// The swarm now, then after each of its events (SWARM_*: health, size, topology,
    /// memory, tasks); ends when it is destroyed.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn swarm_updates(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Swarm>>> {
        let follow = Follow {
            noun: "swarm",
            read: |api, id| {
                Box::pin(async move {
                    match api.swarms().get(&id).await {
                        Ok(view) => Ok(Some(view)),
                        Err(ApiError::NotFound(_)) => Ok(None),
                        Err(e) => Err(e),
                    }
                })
            },
            // Every SWARM_* event is sent, whether or not the view shows it (memory).
            changed: |_, _| true,
            last: |_| false,
            gone_is_error: false,
            show: Swarm,
        };
        super::updates::follow(ctx.data::<Api>()?, &id, follow).await
    }
}

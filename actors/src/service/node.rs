//! The node service: what a peer asks a node about itself (the heartbeat's hello), and a new
//! node's request to be admitted to the replicated log.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::raft::Role;
use troupe_runtime::store::{Batch, Hits, NodeFault, Store, META};

use crate::cluster::lease::{member_key, MemberRecord, MemberState};
use crate::cluster::remote::{service, Located, Peer};
use crate::cluster::{Cluster, PeerInfo};
use crate::error::ApiError;
use crate::failover::BeatAck;
use crate::service::experiments::{Experiment, ExperimentInput};
use crate::slots::Slot;
use troupe_runtime::supervision::{SupervisorInfo, SupervisorMsg};

service! {
    service NodeService as "node" (NodeMsg, NodeRequest, NodeResponse, NodeLocal);
    /// Who this node is and where it listens.
    call Hello => hello() -> PeerInfo;
    /// A member's beat: who this node is, and a lease when it leads (see
    /// [`crate::failover`]).
    call Beat => beat(from: String) -> BeatAck;
    /// Admits the member `id` named `name` to the replicated log, when this node leads.
    call Admit => admit(id: u64, name: String) -> Admission, within ADMIT_CALL;
    /// This node stops its work for good (it is leaving); whether it stopped in time.
    call Release => release() -> bool, within MEMBERSHIP_CALL;
    /// A change of the cluster's membership, made by the leader (asked of the leader).
    call Change => change(change: MemberChange) -> (), within MEMBERSHIP_CALL;
    /// The kill switch, on this node: every armed fault reverted; how many.
    call Halt => halt() -> usize;
    /// Arms a fault of an experiment on this node as `id`, for at most `for_ms`.
    call Arm => arm(id: String, fault: NodeFault, for_ms: u64) -> ();
    /// Disarms `id`; how often it was met (nothing when it was not armed or had expired).
    call Disarm => disarm(id: String) -> Option<Hits>;
    /// Records that `injection` of `experiment` recovered, through this node's store: an
    /// answer says the store takes writes again, and when.
    call Writable => writable(experiment: String, injection: String) -> chrono::DateTime<chrono::Utc>;
    /// Starts an experiment whose faults select in this node's tree.
    call StartExperiment => start_experiment(input: Box<ExperimentInput>) -> Experiment, within EXPERIMENT_CALL;
    call StopExperiment => stop_experiment(id: String) -> Experiment;
    call RenewExperiment => renew_experiment(id: String) -> Experiment;
    /// Waits until this node has applied the revocation of a token (its event `seq`) and
    /// refuses the token; whether it has within [`REVOKED_WITHIN`].
    call Revoked => revoked(seq: u64) -> bool;
    /// Stops this node's experiments holding a host fault on `host`; their ids.
    call EndHostFaults => end_host_faults(host: String) -> Vec<String>;
}

// Membership counts a peer connected while its node service's group is: the same role.
const _: () = assert!(
    matches!(
        <NodeService as crate::cluster::remote::Service>::ROLE.as_bytes(),
        b"node"
    ) && matches!(crate::cluster::remote::MEMBER_ROLE.as_bytes(), b"node")
);

/// How long a member waits to apply a revocation made on another one (a healthy member
/// applies it within milliseconds; the call's own bound is longer).
pub(crate) const REVOKED_WITHIN: Duration = Duration::from_secs(3);

/// Starting an experiment asks the tree and may wait for a loop to be held.
const EXPERIMENT_CALL: Duration = Duration::from_secs(60);

/// A new member's catch-up is bounded by the log (a minute); the call a little longer.
const ADMIT_CALL: Duration = Duration::from_secs(90);
/// A leaving member's drain (its work stopping, then moving) takes as long as its agents'
/// stops; bounded.
const MEMBERSHIP_CALL: Duration = Duration::from_secs(150);

/// A change of the cluster's membership (see `crate::failover`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MemberChange {
    /// The member stops its work, which moves to the others, and leaves.
    Leave(String),
    /// The member is down for good: it is marked LEFT and removed.
    Forget(String),
    /// The member votes, or only learns.
    Role(String, Role),
}

/// How a node answered a request to admit a member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Admission {
    /// Admitted, as a voter or a learner.
    Admitted(Role),
    /// This node does not lead; the one that does, when it knows it.
    Leader(Option<String>),
}

#[derive(Clone)]
pub struct NodeService {
    /// Whether the node still takes new work (its beats offer no room once it drains).
    pub(crate) serving: crate::serving::Serving,
    pub(crate) cluster: Cluster,
    pub(crate) store: Store,
    /// How many members vote; members admitted beyond them are learners.
    pub(crate) voters: usize,
    /// The node's root supervisor, which describes the tree.
    pub(crate) root: Slot<SupervisorMsg>,
    /// What room this node's agents have, which its beats carry.
    pub(crate) rooms: crate::scheduler::Rooms,
    /// The node's fault experiments, for the kill switch asked by a peer.
    pub(crate) experiments: crate::service::experiments::Experiments,
    /// The node's tokens, once loaded (the link to the cluster starts before).
    pub(crate) tokens: std::sync::Arc<std::sync::OnceLock<troupe_runtime::auth::Tokens>>,
    /// The hosts this node drives, which its beats carry, once loaded.
    pub(crate) hosts: std::sync::Arc<std::sync::OnceLock<std::sync::Arc<crate::host::Fleet>>>,
    /// What this node's agents show of themselves, which its beats carry.
    pub(crate) agents: crate::agent::Observed,
}

impl Located for NodeService {
    fn cluster(&self) -> &Cluster {
        &self.cluster
    }
}

impl NodeLocal for NodeService {
    async fn revoked(&self, seq: u64) -> Result<bool, ApiError> {
        let tokens = self
            .tokens
            .get()
            .ok_or_else(|| ApiError::Unavailable("this node's tokens are not loaded yet".into()))?;
        Ok(tokens.caught_up(seq, REVOKED_WITHIN).await?)
    }

    async fn halt(&self) -> Result<usize, ApiError> {
        Ok(self.experiments.halt_here().await)
    }

    async fn arm(&self, id: String, fault: NodeFault, for_ms: u64) -> Result<(), ApiError> {
        self.experiments.arm_here(&id, fault, Duration::from_millis(for_ms))
    }

    async fn disarm(&self, id: String) -> Result<Option<Hits>, ApiError> {
        Ok(self.experiments.armed.disarm(&id))
    }

    async fn start_experiment(&self, input: Box<ExperimentInput>) -> Result<Experiment, ApiError> {
        self.experiments.api()?.start_experiment(*input).await
    }

    async fn stop_experiment(&self, id: String) -> Result<Experiment, ApiError> {
        self.experiments.api()?.stop_experiment(&id).await
    }

    async fn renew_experiment(&self, id: String) -> Result<Experiment, ApiError> {
        self.experiments.api()?.renew_experiment(&id).await
    }

    async fn end_host_faults(&self, host: String) -> Result<Vec<String>, ApiError> {
        self.experiments.api()?.end_host_faults_here(&host)
    }

    async fn writable(&self, experiment: String, injection: String) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
        self.experiments.writable_here(&experiment, &injection).await
    }

    async fn hello(&self) -> Result<PeerInfo, ApiError> {
        Ok(self.cluster.me())
    }

    async fn beat(&self, from: String) -> Result<BeatAck, ApiError> {
        let status = self.store.status();
        // A node under a member's name that is not that member (a fresh data dir started
        // under the name of one that stopped) renews nothing of it: the member stays judged
        // by its own silence, and `forgetMember` can remove it.
        if let (Some(said), Some(member)) = (
            crate::cluster::remote::caller_raft_id(),
            status.members.iter().find(|m| m.name == from),
        ) {
            if said != member.id {
                return Err(ApiError::Conflict(format!(
                    "a beat from a node named {from} with Raft id {said}: the member {from} is Raft id {}, \
                     so the sender is not that member and renews nothing of it",
                    member.id
                )));
            }
        }
        // The member that left, back from its data dir (forgotten while it was stopped, it
        // never applied the entry that says so): told, it stops. It ran on, cut off and
        // unready, its writes waiting for a leader that never takes them.
        if let Some(said) =
            crate::cluster::remote::caller_raft_id().filter(|id| !status.members.iter().any(|m| m.id == *id))
        {
            let left = self.store.view_now(|v| crate::cluster::lease::left_as(v, &from, said));
            if let Ok(Some(since)) = left {
                return Err(ApiError::Conflict(format!(
                    "{}: {from} (Raft id {said}) left it at {} (leaveCluster, or forgetMember while it was stopped)",
                    crate::cluster::lease::LEFT_BEAT,
                    since.format("%Y-%m-%d %H:%M:%S UTC")
                )));
            }
        }
        // A member of the cluster this one was recovered from, back with its old data dir: it
        // runs on, cut off, its writes refused, telling operators to recover the cluster.
        // Told, it stops and says how to come back.
        if let Some(said) = crate::cluster::remote::caller_raft_id().filter(|id| self.store.recovered_without(*id)) {
            return Err(ApiError::Conflict(format!(
                "{}: the cluster of {} was recovered without {from} (Raft id {said}) with `troupe recover`; \
                 {from} joins it afresh, with an empty data dir and --join {}",
                crate::cluster::lease::FORGOTTEN_BEAT,
                self.cluster.name(),
                self.cluster.me().cluster_address,
            )));
        }
        let leads = status.leader.as_deref() == Some(self.cluster.name().as_str());
        Ok(BeatAck {
            raft_id: self.store.raft_id(),
            info: self.cluster.me(),
            lease: self.cluster.leases.grant(&from, leads),
            applied: status.commit_index,
            running: self.cluster.leases.running(),
            boot: self.cluster.boot(),
            // Room only while this node's work runs and takes new tasks: a node that left,
            // waits for its lease or drains for its stop keeps answering beats, and its last
            // rooms would draw tasks its scheduler cannot take.
            rooms: match self.cluster.leases.running() && !self.serving.is_draining() {
                true => (*self.rooms.get()).clone(),
                false => Default::default(),
            },
            hosts: self.hosts.get().map(|f| f.views()).unwrap_or_default(),
            vms: self.hosts.get().map(|f| f.samples()).unwrap_or_default(),
            agents: self.agents.answer_for(&from),
        })
    }

    async fn release(&self) -> Result<bool, ApiError> {
        Ok(self.cluster.leases.release(Duration::from_secs(90)).await)
    }

    async fn change(&self, change: MemberChange) -> Result<(), ApiError> {
        let leader = self.store.leader();
        if leader.as_deref() != Some(self.cluster.name().as_str()) {
            // Asked of a follower: the leader makes it.
            let leader = leader.ok_or_else(|| ApiError::Unavailable("the cluster has no leader now".into()))?;
            return Peer(self, leader).change(change).await;
        }
        match change {
            MemberChange::Leave(node) => crate::failover::leave(self, &node).await,
            MemberChange::Forget(node) => crate::failover::forget(self, &node).await,
            MemberChange::Role(node, role) => {
                if !self.store.status().members.iter().any(|m| m.name == node) {
                    return Err(ApiError::NotFound(format!("{node} is not a member of the cluster")));
                }
                // openraft 0.9 keeps a leader that became a learner leading (for 12 s and
                // more in a trial), shown as the leader of a cluster it has no vote in.
                if role == Role::Learner && node == self.cluster.name() {
                    return Err(ApiError::Conflict(format!(
                        "{node} leads the cluster: make another member a learner, or stop {node} first \
                         (another member takes the lead) and then make it one"
                    )));
                }
                self.store.set_role(&node, role).await?;
                let event = NewEvent::new(
                    "MEMBER_ROLE_CHANGED",
                    Some(node.clone()),
                    serde_json::json!({ "node": node, "role": role_name(role) }),
                );
                self.store.write(Batch::new().event(event)).await?;
                Ok(())
            }
        }
    }

    async fn admit(&self, id: u64, name: String) -> Result<Admission, ApiError> {
        let leader = self.store.leader();
        if leader.as_deref() != Some(self.cluster.name().as_str()) {
            return Ok(Admission::Leader(leader));
        }
        self.not_a_live_members_name(id, &name).await?;
        let role = self.store.admit(id, &name, self.voters).await?;
        let event = NewEvent::new(
            "MEMBER_JOINED",
            Some(name.clone()),
            serde_json::json!({ "node": name, "role": role_name(role), "raftId": id }),
        );
        let mut batch = Batch::new().event(event);
        // A name that left (or was forgotten) comes back as a new member, a fresh data dir
        // (a replaced machine, a scaled-down pod started again): UP again, so that it gets a
        // lease; its work and its epoch start afresh.
        let key = member_key(&name);
        let stored = {
            let key = key.clone();
            self.store.view(move |v| v.get(META, &key)).await?
        };
        let record: Option<MemberRecord> = stored.as_deref().map(troupe_runtime::codec::decode).transpose()?;
        if record.is_some_and(|r| r.state == MemberState::Left) {
            let up = MemberRecord {
                state: MemberState::Up,
                since: troupe_runtime::clock::now(),
            };
            batch = batch
                .require(META, key.clone(), stored)
                .put(META, key, troupe_runtime::codec::encode(&up)?);
        }
        self.store.write(batch).await?;
        tracing::info!(node = %name, role = role_name(role), "admitted a member to the replicated log");
        Ok(Admission::Admitted(role))
    }
}

// What a joining node is told when its name is a live member's: it stops at once (see
// `NodeService::join`) rather than ask again until its join timeout. A node asks first,
// before it dials under the name (`crate::cluster::name_check`).
use crate::cluster::name_check::NAME_OF_A_LIVE_MEMBER;

impl NodeService {
    /// Refuses to admit a node (Raft id `id`) under the name of another member that is up:
    /// not DOWN, and granted a lease by this leader within
    /// [`crate::cluster::lease::SUSPECT_AFTER`]. Every session the newcomer opened displaced
    /// that member's (the cluster's links know a node by its name), whose beats then failed,
    /// and which was declared DOWN and lost its work while the newcomer asked again twice a
    /// second for two minutes. A member that is gone (silent, or DOWN) may be replaced: the
    /// newcomer waits until it is forgotten.
    async fn not_a_live_members_name(&self, id: u64, name: &str) -> Result<(), ApiError> {
        let Some(other) = self
            .store
            .status()
            .members
            .into_iter()
            .find(|m| m.name == name && m.id != id)
        else {
            return Ok(());
        };
        let named = name.to_owned();
        let record = self
            .store
            .view(move |v| crate::cluster::lease::member_in(v, &named))
            .await?;
        let up = matches!(
            record.map_or(MemberState::Up, |r| r.state),
            MemberState::Up | MemberState::Suspect
        );
        match up
            && self
                .cluster
                .leases
                .granted_within(name, crate::cluster::lease::SUSPECT_AFTER)
        {
            true => Err(ApiError::Conflict(crate::cluster::name_check::refusal(name, other.id))),
            false => Ok(()),
        }
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Voter => "VOTER",
        Role::Learner => "LEARNER",
    }
}

/// How often a joining node asks again while no peer can admit it.
const ASK_AGAIN: Duration = Duration::from_millis(500);

impl NodeService {
    /// This node's live supervision tree.
    pub(crate) async fn tree(&self) -> Result<SupervisorInfo, ApiError> {
        let root = self.root.running("the node's supervision tree")?;
        crate::call::ask(&root, SupervisorMsg::Describe, "the root supervisor").await
    }

    /// Asks the cluster's leader to admit this node to the log, through whichever peer is
    /// connected (a peer that does not lead names the one that does), until one admits it
    /// or `within` has passed.
    pub(crate) async fn join(
        &self,
        within: Duration,
        phase: &tokio::sync::watch::Sender<String>,
    ) -> Result<Role, ApiError> {
        let deadline = tokio::time::Instant::now() + within;
        let (id, name) = (self.store.raft_id(), self.cluster.name());
        let mut hint: Option<String> = None;
        let mut followed: Option<String> = None;
        let mut last = String::from("no peer is connected yet");
        loop {
            let mut ask: Vec<String> = hint.take().into_iter().collect();
            followed = ask.first().cloned().or(followed);
            for peer in self.cluster.peers() {
                if !ask.contains(&peer) {
                    ask.push(peer);
                }
            }
            if ask.is_empty() {
                if let Some(peer) = self.cluster.refused_within(Duration::from_secs(10)) {
                    last = format!(
                        "no peer is connected: the sessions with {peer} close before they are authenticated; \
                         the likely causes: another cluster's cookie (that node logs auth_fail), a member of this \
                         node's name already holding its session there (a node's name is its identity), or no \
                         cluster port of Troupe at that address"
                    );
                }
            }
            for peer in ask {
                phase.send_replace(format!("waiting to be admitted to the cluster's log (asking {peer})"));
                let admitter = Peer(self, peer.clone());
                let asked = admitter.admit(id, name.clone());
                tokio::pin!(asked);
                let mut held = tokio::time::interval(ASK_AGAIN);
                let answer = loop {
                    tokio::select! {
                        answer = &mut asked => break answer,
                        _ = held.tick() => {
                            let entries = self.store.status().last_log_index;
                            if entries > 0 {
                                phase.send_replace(format!(
                                    "being admitted to the cluster's log by {peer}: catching up, {entries} entries held"
                                ));
                            }
                        }
                    }
                };
                match answer {
                    Ok(Admission::Admitted(role)) => return Ok(role),
                    Ok(Admission::Leader(Some(leader))) if leader != peer => {
                        hint = Some(leader);
                        break;
                    }
                    Ok(Admission::Leader(_)) => last = format!("{peer} knows no leader"),
                    // Asking again would only displace that member again.
                    Err(ApiError::Conflict(why)) if why.contains(NAME_OF_A_LIVE_MEMBER) => {
                        return Err(ApiError::Conflict(format!("{peer} refused to admit this node: {why}")));
                    }
                    Err(e) => last = format!("{peer}: {e}"),
                }
            }
            if hint.is_some() && hint != followed {
                // A leader not asked yet: ask it now.
                continue;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::Unavailable(format!(
                    "no leader admitted this node within {within:?} ({last})"
                )));
            }
            tracing::info!(node = %name, why = %last, "waiting to be admitted to the cluster");
            phase.send_replace(format!("waiting to be admitted to the cluster's log ({last})"));
            tokio::time::sleep(ASK_AGAIN).await;
        }
    }
}

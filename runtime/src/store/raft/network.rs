//! How Raft's messages reach the other members. The store knows no cluster: the node hands
//! it a [`Transport`] (today over ractor_cluster) that carries encoded requests to a member
//! by name and brings back encoded answers; [`serve`] answers them on the receiving side.
//! Requests and answers are rmp-serde, with byte strings as msgpack bin.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{AnyError, BasicNode, LogId, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod chunk;
mod hold;

use super::log::Durable;
use super::snapshots::Seen;
use super::{Applied, NodeId, Proposal, Troupe};
use crate::codec;
use crate::store::{Store, StoreError};

/// Which Raft RPC a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RpcKind {
    Append,
    Vote,
    Snapshot,
    /// A follower's group of batches, for the leader to propose.
    Propose,
    /// A follower's linearizable read: the leader's commit index, confirmed by a quorum.
    ReadIndex,
    /// A leader that stopped names its successor (see `raft::elect`).
    Succeed,
    /// Would the member vote for the one asking (see `raft::prevote`)?
    PreVote,
}

/// How the leader answered a forwarded proposal.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Forwarded {
    /// Committed and applied on the leader as this entry.
    Applied(LogId<NodeId>, Applied),
    /// The member asked does not lead (the leader, when it knows one).
    NotLeader(Option<String>),
    /// The log refused it; nothing was written.
    Refused(String),
    /// The leader's log stopped (the node stops, or its log failed) before it knew how the
    /// proposal fared: it may be in the log, and the leader appends nothing more. `term` is
    /// the last term the leader knew, so the last in which it could have appended it.
    Stopped { term: u64, why: String },
    /// The member asked hears nothing from the one that sent it (a member of a cluster it
    /// was recovered from, see [`super::FORGOTTEN_IDS`]); nothing was written. The sender
    /// tries again with another leader, if one comes (the old members may be a majority of
    /// their own), and its caller is told these words if none does. Before, the refusal
    /// came as a failure to answer, and the caller was told the write "may still be
    /// applied". Last of the variants: an earlier release reads the others as it did.
    NotHeard(String),
}

impl Forwarded {
    /// The answer to a proposal; `term` is the leader's term once the proposal was through.
    fn of(outcome: Result<(LogId<NodeId>, Applied), StoreError>, term: u64) -> Self {
        match outcome {
            Ok((id, applied)) => Self::Applied(id, applied),
            Err(StoreError::NotLeader { leader }) => Self::NotLeader(leader),
            Err(StoreError::Failed(why)) => Self::Stopped { term, why },
            Err(e) => Self::Refused(e.to_string()),
        }
    }
}

/// Why a forwarded write did not happen.
#[derive(Debug)]
pub(crate) enum NotForwarded {
    /// Surely not written (the leader was not reached, or no longer leads): worth another
    /// try once the leader is known and reachable.
    Again(StoreError),
    /// Failed, or unknown whether it was written: the caller is told.
    Failed(StoreError),
    /// The request left and no answer came back (the link closed, the leader went silent):
    /// it may have been written, which this node learns when its entry applies here.
    Lost(StoreError),
    /// The leader's log stopped before it knew how the group fared, the last term it knew
    /// being `term`: it applies here if it was written, and it never will be once this node
    /// applied an entry of a later term (see `writer::flight`).
    Stopped { term: u64, error: StoreError },
}

/// Sends a group of batches to the leader named `leader` and waits until it is applied there.
pub(crate) async fn forward(
    slot: &TransportSlot,
    leader: &str,
    proposal: &Proposal,
    within: Duration,
) -> Result<(LogId<NodeId>, Applied), NotForwarded> {
    let not_sent = |why: String| {
        NotForwarded::Again(StoreError::Unavailable(format!(
            "the leader {leader} cannot be reached from this node: {why}"
        )))
    };
    let transport = slot
        .get()
        .ok_or_else(|| not_sent("the cluster link is not up yet".into()))?;
    let bytes = codec::encode(proposal).map_err(NotForwarded::Failed)?;
    let answer = match transport.send(leader, RpcKind::Propose, bytes, within).await {
        Ok(answer) => answer,
        Err(SendError::NotSent(why)) => return Err(not_sent(why)),
        Err(SendError::Lost(why)) => {
            return Err(NotForwarded::Lost(StoreError::Unavailable(format!(
                "the leader {leader} did not answer the write: {why}; it may still be applied"
            ))))
        }
    };
    match codec::decode(&answer).map_err(NotForwarded::Failed)? {
        Forwarded::Applied(id, applied) => Ok((id, applied)),
        Forwarded::NotLeader(leader) => Err(NotForwarded::Again(StoreError::NotLeader { leader })),
        Forwarded::Refused(why) => Err(NotForwarded::Failed(StoreError::Rejected(why))),
        Forwarded::NotHeard(why) => Err(NotForwarded::Again(StoreError::Rejected(why))),
        Forwarded::Stopped { term, why } => Err(NotForwarded::Stopped {
            term,
            error: StoreError::Unavailable(format!(
                "the leader {leader} stopped before it answered the write ({why}); it may still be applied"
            )),
        }),
    }
}

/// Why a request to another member got no answer.
#[derive(Debug, Clone)]
pub enum SendError {
    /// It never left this node (the member is not connected): nothing happened there.
    NotSent(String),
    /// It left and no answer came back in time: it may have been acted on.
    Lost(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotSent(why) | Self::Lost(why) => f.write_str(why),
        }
    }
}

/// Carries one encoded Raft request to the member named `to` and returns its encoded answer,
/// or why it could not (the member is not connected, it did not answer within `within`).
pub trait Transport: Send + Sync + 'static {
    fn send(
        &self,
        to: &str,
        kind: RpcKind,
        request: Vec<u8>,
        within: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, SendError>>;
}

/// Where the node puts its transport once its cluster is up; until then every other member
/// is unreachable (a one-node store never sends anything).
#[derive(Clone, Default)]
pub struct TransportSlot(Arc<RwLock<Option<Arc<dyn Transport>>>>);

impl std::fmt::Debug for TransportSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportSlot")
            .field("set", &self.get().is_some())
            .finish()
    }
}

impl TransportSlot {
    pub fn set(&self, transport: Arc<dyn Transport>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(transport);
    }

    pub(super) fn get(&self) -> Option<Arc<dyn Transport>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

pub(super) struct Network {
    slot: TransportSlot,
    durable: Durable,
    seen: Arc<Seen>,
    /// How long an append that only moves the commit index may be held (see [`hold`]).
    commit_hold: Duration,
}

impl Network {
    pub fn new(slot: TransportSlot, durable: Durable, seen: Arc<Seen>, commit_hold: Duration) -> Self {
        Self {
            slot,
            durable,
            seen,
            commit_hold,
        }
    }
}

impl RaftNetworkFactory<Troupe> for Network {
    type Network = Client;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Client {
        Client {
            slot: self.slot.clone(),
            target,
            name: node.addr.clone(),
            durable: self.durable.clone(),
            seen: self.seen.clone(),
            hold: Arc::new(hold::Hold::new(target, self.commit_hold)),
        }
    }
}

#[derive(Clone)]
pub(super) struct Client {
    slot: TransportSlot,
    target: NodeId,
    name: String,
    /// This node's log, durable up to what a request or an answer speaks for.
    durable: Durable,
    /// When each member last answered (what holds a snapshot back), and how far this
    /// node's log is purged (what stops a snapshot the log moved past).
    seen: Arc<Seen>,
    /// The append that only moves the commit index, held back (see [`hold`]).
    hold: Arc<hold::Hold>,
}

type Failed<E> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

/// How long a snapshot's chunk may take: [`super::SNAPSHOT_TIMEOUT`], but the last one, of a
/// snapshot of `bytes`, is answered once the member installed all of it, at
/// [`INSTALLED_PER_SECOND`] at least (at most [`super::SNAPSHOT_INSTALL_AT_MOST`]). With 10 s
/// for every chunk, a member installing a snapshot of a gigabyte (35-40 s, debug build) was
/// sent the last chunk again and again, installed the snapshot five times in 20 minutes and
/// never caught up.
pub(super) fn chunk_within(last: bool, bytes: u64) -> Duration {
    match last {
        false => super::SNAPSHOT_TIMEOUT,
        true => (super::SNAPSHOT_TIMEOUT * 3 + Duration::from_secs(bytes / INSTALLED_PER_SECOND))
            .min(super::SNAPSHOT_INSTALL_AT_MOST),
    }
}

/// The slowest install of a snapshot assumed, in bytes a second (rows decoded and written in
/// one transaction; a debug build did about 27 MB/s).
const INSTALLED_PER_SECOND: u64 = 4 << 20;

impl Client {
    async fn call<Q: Serialize, A: DeserializeOwned, E>(
        &self,
        kind: RpcKind,
        request: &Q,
        option: &RPCOption,
    ) -> Result<A, Failed<E>>
    where
        E: std::error::Error + DeserializeOwned,
    {
        self.call_within(kind, request, option.hard_ttl()).await
    }

    async fn call_within<Q: Serialize, A: DeserializeOwned, E>(
        &self,
        kind: RpcKind,
        request: &Q,
        within: Duration,
    ) -> Result<A, Failed<E>>
    where
        E: std::error::Error + DeserializeOwned,
    {
        let Some(transport) = self.slot.get() else {
            let why = format!("no cluster transport yet to reach {}", self.name);
            return Err(RPCError::Unreachable(Unreachable::from(AnyError::error(why))));
        };
        let mut bytes = codec::encode(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        // Whom it is for, after it (see `addressed`).
        let to = codec::encode(&self.target).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        bytes.extend(to);
        let answer = transport
            .send(&self.name, kind, bytes, within)
            .await
            .map_err(|why| RPCError::Unreachable(Unreachable::from(AnyError::error(why.to_string()))))?;
        self.seen.answered(self.target);
        let answer: Result<A, RaftError<NodeId, E>> =
            codec::decode(&answer).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// Sends `rpc` to the member and waits at most `within` for its answer.
    async fn send_append(
        &self,
        rpc: &AppendEntriesRequest<Troupe>,
        within: Duration,
    ) -> Result<AppendEntriesResponse<NodeId>, Failed<openraft::error::Infallible>> {
        let not_durable = |e: StoreError| RPCError::Unreachable(Unreachable::from(AnyError::error(e.to_string())));
        // A commit index tells the follower to apply: only what this node holds durably
        // (a majority of the leader alone commits what its writer may not have written yet).
        if let Some(commit) = rpc.leader_commit {
            self.durable.covering(commit.index).await.map_err(not_durable)?;
        }
        let claimed = claimed(rpc);
        let answer: AppendEntriesResponse<NodeId> = self.call_within(RpcKind::Append, rpc, within).await?;
        // Counted once this node holds as durably what the follower says it holds: an entry
        // then commits on a majority of durable copies, the leader's among them.
        if let Some(index) = matched(&answer, claimed) {
            self.durable.covering(index).await.map_err(not_durable)?;
        }
        Ok(answer)
    }
}

impl RaftNetwork<Troupe> for Client {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Troupe>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, Failed<openraft::error::Infallible>> {
        if let Some(fit) = entries_that_fit(&rpc.entries, APPEND_BYTES) {
            // openraft sends fewer entries at once for a while, and at once.
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(fit)));
        }
        let sent = tokio::time::Instant::now();
        match self.hold.consider(&rpc, option.hard_ttl(), sent) {
            hold::Verdict::Send => {}
            hold::Verdict::Held { timer } => {
                if timer {
                    let client = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(client.hold.hold()).await;
                        if let Some((rpc, within)) = client.hold.due() {
                            // Nothing went to the member meanwhile: the commit index goes
                            // alone. Its answer changes nothing the leader counts.
                            let _ = client.send_append(&rpc, within).await;
                        }
                    });
                }
                // The member's answer to the append before stands in (see `hold`).
                return Ok(AppendEntriesResponse::Success);
            }
        }
        let answer = self.send_append(&rpc, option.hard_ttl()).await;
        let holds = match &answer {
            Ok(AppendEntriesResponse::Success) => Some(rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id)),
            Ok(AppendEntriesResponse::PartialSuccess(m)) => Some(*m),
            _ => None,
        };
        self.hold.answered(&rpc, holds, sent);
        answer
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<Troupe>,
        // Its bound is the longest a chunk may take (the last one's install): see below.
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, Failed<InstallSnapshotError>> {
        let within = chunk_within(rpc.done, rpc.offset + rpc.data.len() as u64);
        let index = rpc.meta.last_log_id.map_or(0, |l| l.index);
        if self.seen.purged_past(index) {
            // openraft gives up on this snapshot after a few refusals and sends the newest
            // (also part of the way through: installed, it would only be followed by another).
            let why = format!(
                "the snapshot at {index} is older than the log this node kept after it: a newer one is sent instead"
            );
            return Err(RPCError::Network(NetworkError::new(&AnyError::error(why))));
        }
        // The member answers nothing else until it installed the snapshot: it is catching up
        // meanwhile, not gone (see `snapshots::ANSWERED_WITHIN`).
        let _installing = rpc.done.then(|| self.seen.installing(self.target));
        self.call_within(RpcKind::Snapshot, &chunk::ChunkRef::from(&rpc), within)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, Failed<openraft::error::Infallible>> {
        self.call(RpcKind::Vote, &rpc, &option).await
    }
}

/// The index up to which a member answering `Success` to `rpc` holds the log.
fn claimed(rpc: &AppendEntriesRequest<Troupe>) -> Option<u64> {
    rpc.entries
        .last()
        .map(|e| e.log_id.index)
        .or(rpc.prev_log_id.map(|p| p.index))
}

/// The index up to which `answer` says a member holds the log.
fn matched(answer: &AppendEntriesResponse<NodeId>, claimed: Option<u64>) -> Option<u64> {
    match answer {
        AppendEntriesResponse::Success => claimed,
        AppendEntriesResponse::PartialSuccess(m) => m.map(|m| m.index),
        AppendEntriesResponse::Conflict | AppendEntriesResponse::HigherVote(_) => None,
    }
}

/// Whether a follower's answer that it holds the log up to `matched` must wait until its
/// file holds those entries, the leader having sent `committed` as its commit index.
///
/// An answer counts towards a commit, so it speaks for durable entries; but entries up to
/// the leader's commit index are on a majority of durable copies already (the leader sends
/// a commit index only once its own file holds it, see `append_entries` above), and the
/// leader counts nothing more from this answer. Answering those at once lets a member far
/// behind write while the next append travels: openraft 0.9 keeps one append in
/// flight per follower, so an answer that waited for the fsync put the leader's read, the
/// transfer and the follower's write one after the other. The member still applies an entry
/// only once its file holds it (see `machine`), and a crash before then loses only entries
/// the majority keeps: the leader then finds the member's log behind what it answered for,
/// and sends it the entries again (openraft's `loosen-follower-log-revert`, without which
/// the leader's core panics on a follower's log going back).
///
/// Only for a member a full request ([`MAX_PAYLOAD_ENTRIES`]) or more behind the commit
/// index, though: the exception is for catching up, where it is measured to help (BENCHMARKS.md,
/// Sixteenth run). A member that keeps up with the log answers as it always did; its rates
/// showed no difference either way.
///
/// [`MAX_PAYLOAD_ENTRIES`]: super::MAX_PAYLOAD_ENTRIES
fn answer_waits(matched: u64, committed: Option<u64>) -> bool {
    committed.is_none_or(|committed| matched + super::MAX_PAYLOAD_ENTRIES > committed)
}

/// The bytes of entries one AppendEntries request carries at most, beyond its first entry
/// (which goes alone whatever its size: the writer keeps an entry under 12 MiB, see
/// `writer::GROUP_BYTES`). openraft counts a request's entries only ([`MAX_PAYLOAD_ENTRIES`]
/// of them); a follower that fell behind after big writes was sent requests of hundreds of
/// MB, which outlasted the heartbeat interval openraft gives each request and the frames of
/// the transport.
///
/// [`MAX_PAYLOAD_ENTRIES`]: super::MAX_PAYLOAD_ENTRIES
pub(super) const APPEND_BYTES: usize = 8 << 20;

/// `None` when `entries` fit in `limit` bytes (or are a single entry); else how many of the
/// first ones do, at least one.
pub(super) fn entries_that_fit(entries: &[openraft::Entry<Troupe>], limit: usize) -> Option<u64> {
    if entries.len() < 2 {
        return None;
    }
    let mut bytes = 0;
    for (i, entry) in entries.iter().enumerate() {
        bytes += entry_bytes(entry);
        if bytes > limit {
            return Some(i.max(1) as u64);
        }
    }
    None
}

/// About how many bytes an entry takes on the wire: its batches' bytes.
fn entry_bytes(entry: &openraft::Entry<Troupe>) -> usize {
    match &entry.payload {
        openraft::EntryPayload::Normal(proposal) => proposal.batches.iter().map(|b| b.wire_bytes()).sum(),
        openraft::EntryPayload::Blank | openraft::EntryPayload::Membership(_) => 0,
    }
}

/// Answers one encoded Raft request from another member with this node's Raft. A request
/// from a member of a cluster this one was recovered from is refused (see
/// [`super::FORGOTTEN_IDS`]).
pub async fn serve(store: &Store, kind: RpcKind, request: &[u8]) -> Result<Vec<u8>, StoreError> {
    let raft = store.raft();
    let heard = |from: Option<NodeId>| {
        match from.filter(|id| store.inner.forgotten.holds(*id)) {
        Some(id) => Err(StoreError::Rejected(format!(
            "raft member {id} belongs to a cluster this one was recovered from: it must join afresh, with an empty data dir"
        ))),
        None => Ok(()),
    }
    };
    if store.raft_stopped() && kind != RpcKind::Propose {
        // Stopping (see `Store::stop_raft`): its stopped core is not asked (openraft takes
        // that for a failure, and says so at ERROR).
        return Err(StoreError::Closed);
    }
    let mine = |to: Option<NodeId>| match to {
        Some(to) if to != store.raft_id() => Err(StoreError::Rejected(format!(
            "this node is Raft member {}, not member {to}: it started afresh under the name of a \
             member the cluster still counts; forget that member (forgetMember) before it joins",
            store.raft_id()
        ))),
        _ => Ok(()),
    };
    match kind {
        RpcKind::Append => {
            let (rpc, to) = addressed::<AppendEntriesRequest<Troupe>>(request)?;
            heard(rpc.vote.leader_id().voted_for())?;
            mine(to)?;
            let claimed = claimed(&rpc);
            let committed = rpc.leader_commit.map(|c| c.index);
            let answer = raft.append_entries(rpc).await;
            // The leader counts this answer towards a commit: it leaves once the entries it
            // speaks for are durable here (openraft took them once they were readable).
            // Unless they are well behind the commit index (a member catching up): a majority
            // holds them durably without this copy, so the answer leaves at once and the
            // leader's next append travels while the writer writes these (see `answer_waits`).
            if let Some(index) = answer.as_ref().ok().and_then(|a| matched(a, claimed)) {
                if answer_waits(index, committed) {
                    store.inner.log.covering(index).await?;
                }
            }
            codec::encode(&answer)
        }
        RpcKind::Vote => {
            let (rpc, to) = addressed::<VoteRequest<NodeId>>(request)?;
            heard(rpc.vote.leader_id().voted_for())?;
            mine(to)?;
            codec::encode(&raft.vote(rpc).await)
        }
        RpcKind::Snapshot => {
            let (rpc, to) = addressed::<chunk::Chunk>(request)?;
            let rpc: InstallSnapshotRequest<Troupe> = rpc.into();
            heard(rpc.vote.leader_id().voted_for())?;
            mine(to)?;
            codec::encode(&raft.install_snapshot(rpc).await)
        }
        RpcKind::Propose => {
            let proposal: Proposal = codec::decode(request)?;
            if let Err(StoreError::Rejected(why)) = heard(proposal.origin.map(|o| o.node)) {
                return codec::encode(&Forwarded::NotHeard(why));
            }
            if store.raft_stopped() {
                // Stopping (see `Store::stop_raft`): not taken, so the writer sends it again
                // to the next leader.
                return codec::encode(&Forwarded::NotLeader(None));
            }
            let outcome = propose(store, proposal).await;
            // Read once the proposal is through: no later term of this leader holds it.
            let term = raft.metrics().borrow().current_term;
            codec::encode(&Forwarded::of(outcome, term))
        }
        RpcKind::ReadIndex => super::read::serve_read_index(raft).await,
        RpcKind::Succeed => {
            let word: super::elect::Succession = codec::decode(request)?;
            heard(Some(word.leader))?;
            store.successor_named(word);
            codec::encode(&())
        }
        RpcKind::PreVote => {
            let ask: super::prevote::Ask = codec::decode(request)?;
            heard(Some(ask.candidate))?;
            codec::encode(&store.would_vote(&ask).await?)
        }
    }
}

/// A Raft request and the id of the member it is for, which this release's senders write
/// after it. A member started afresh with an empty data dir under a former member's name
/// has a new id: the leader still sends it the former member's messages, by name, and
/// openraft stops the leader's whole Raft core (a panic, "follower log reversion is not
/// allowed") when a follower's log goes back. Such a message is refused instead. A request
/// from an earlier release has no id after it, and an earlier release reads the request
/// alone (see [`codec::decode_then`]).
pub(super) fn addressed<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, Option<NodeId>), StoreError> {
    codec::decode_then(bytes)
}

/// On the leader: hands a follower's group to the Raft core after the one its writer sent
/// before it (see [`super::session::Arrivals`]), and waits until it is applied.
async fn propose(store: &Store, proposal: Proposal) -> Result<(LogId<NodeId>, Applied), StoreError> {
    let origin = proposal.origin;
    let arrivals = &store.inner.arrivals;
    if let Some(origin) = origin {
        arrivals.in_turn(origin).await;
    }
    let pending = store.raft().client_write_ff(proposal).await;
    if let Some(origin) = origin {
        arrivals.handed(origin);
    }
    let written = pending
        .map_err(|fatal| StoreError::Failed(format!("the replicated log stopped: {fatal}")))?
        .await
        .map_err(|_| StoreError::Failed("the replicated log stopped".into()))?
        .map_err(|e| super::refused(openraft::error::RaftError::APIError(e)))?;
    Ok((written.log_id, written.data))
}
